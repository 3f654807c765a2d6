#include "kiln/data/text_filters.h"

#include <string>
#include <unordered_set>

namespace kiln::data {

namespace {

bool space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool letter(unsigned char c) { return c >= 0x80 || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

size_t occurrences(std::string_view text, std::string_view what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string_view::npos; at = text.find(what, at + what.size())) ++n;
  return n;
}

}  // namespace

const char* text_rule_name(TextRule rule) {
  switch (rule) {
    case TextRule::too_few_words: return "too_few_words";
    case TextRule::too_many_words: return "too_many_words";
    case TextRule::mean_word_length: return "mean_word_length";
    case TextRule::symbols: return "symbols";
    case TextRule::digits: return "digits";
    case TextRule::non_alphabetic: return "non_alphabetic";
    case TextRule::duplicate_lines: return "duplicate_lines";
    case TextRule::duplicate_line_bytes: return "duplicate_line_bytes";
  }
  return "unknown";
}

std::optional<TextRule> broken_text_rule(std::string_view document, const TextFilterOptions& options) {
  int64_t words = 0, alphabetic = 0, word_bytes = 0, digits = 0, visible = 0;
  bool in_word = false, has_letter = false;
  for (const char ch : document) {
    const auto c = static_cast<unsigned char>(ch);
    if (space(c)) {
      if (in_word) alphabetic += has_letter;
      in_word = false;
      continue;
    }
    if (!in_word) ++words, has_letter = false;
    in_word = true;
    has_letter |= letter(c);
    ++word_bytes;
    ++visible;
    digits += c >= '0' && c <= '9';
  }
  if (in_word) alphabetic += has_letter;

  if (words < options.min_words) return TextRule::too_few_words;
  if (words > options.max_words) return TextRule::too_many_words;
  if (words == 0) return std::nullopt;  // an empty document let through by min_words 0
  const double mean_length = static_cast<double>(word_bytes) / static_cast<double>(words);
  if (mean_length < options.min_mean_word_length || mean_length > options.max_mean_word_length)
    return TextRule::mean_word_length;
  const size_t symbols = occurrences(document, "#") + occurrences(document, "...") + occurrences(document, "\u2026");
  if (static_cast<double>(symbols) > options.max_symbol_word_ratio * static_cast<double>(words)) return TextRule::symbols;
  if (static_cast<double>(digits) > options.max_digit_ratio * static_cast<double>(visible)) return TextRule::digits;
  if (static_cast<double>(alphabetic) < options.min_alphabetic_words * static_cast<double>(words))
    return TextRule::non_alphabetic;

  std::unordered_set<std::string_view> seen;
  int64_t lines = 0, repeated = 0, line_bytes = 0, repeated_bytes = 0;
  for (size_t start = 0; start <= document.size();) {
    size_t end = document.find('\n', start);
    if (end == std::string_view::npos) end = document.size();
    const std::string_view line = document.substr(start, end - start);
    start = end + 1;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
    ++lines;
    line_bytes += static_cast<int64_t>(line.size());
    if (!seen.insert(line).second) ++repeated, repeated_bytes += static_cast<int64_t>(line.size());
  }
  if (static_cast<double>(repeated) > options.max_duplicate_lines * static_cast<double>(lines))
    return TextRule::duplicate_lines;
  if (static_cast<double>(repeated_bytes) > options.max_duplicate_line_bytes * static_cast<double>(line_bytes))
    return TextRule::duplicate_line_bytes;
  return std::nullopt;
}

}  // namespace kiln::data
