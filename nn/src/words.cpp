#include "words.h"

namespace kiln::data {

namespace {

bool word_byte(unsigned char c) {
  return c >= 0x80 || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

}  // namespace

Words split_words(std::string_view text) {
  Words words;
  words.text.reserve(text.size());
  bool in_word = false;
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (!word_byte(c)) {
      in_word = false;
      continue;
    }
    if (!in_word) {
      if (!words.text.empty()) words.text.push_back(' ');
      words.start.push_back(words.text.size());
      in_word = true;
    }
    words.text.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
  }
  return words;
}

}  // namespace kiln::data
