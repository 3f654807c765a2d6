#pragma once
// The words of a text as the deduplication and quality features see them:
// runs of letters, digits and non-ASCII bytes, ASCII lower-cased, joined by
// single spaces, so that any run of consecutive words is one substring.

#include <string>
#include <string_view>
#include <vector>

namespace kiln::data {

struct Words {
  std::string text;           // the words joined by single spaces
  std::vector<size_t> start;  // where each word starts in text

  size_t size() const { return start.size(); }
  // Words [first, first + n) as one substring.
  std::string_view run(size_t first, size_t n) const {
    const size_t end = first + n < start.size() ? start[first + n] - 1 : text.size();
    return std::string_view(text).substr(start[first], end - start[first]);
  }
};

Words split_words(std::string_view text);

}  // namespace kiln::data
