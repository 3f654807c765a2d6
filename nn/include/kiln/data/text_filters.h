#pragma once
// The simple document filters curated corpora run beside a quality
// classifier: Gopher's rules (Rae et al. 2021, appendix A.1.1, as datatrove's
// GopherQualityFilter and GopherRepetitionFilter apply them). Each names the
// first rule a document breaks, so that a run can report how many documents
// every rule removed. The defaults are Gopher's.
//
// Words are whitespace-separated runs; a word is alphabetic when it holds a
// letter (ASCII or any non-ASCII byte); lines are split at '\n', blank lines
// ignored.

#include <cstdint>
#include <optional>
#include <string_view>

namespace kiln::data {

// The thresholds; a rule is off when its bound lets everything through.
struct TextFilterOptions {
  int64_t min_words = 50;              // words per document, at least
  int64_t max_words = 100000;          // and at most
  double min_mean_word_length = 3;     // bytes per word, at least
  double max_mean_word_length = 10;    // and at most
  double max_symbol_word_ratio = 0.1;  // ("#" and "..." / "…" occurrences) per word
  double max_digit_ratio = 1.0;         // digits / non-whitespace bytes (off in Gopher; C4-style pages set 0.3)
  double min_alphabetic_words = 0.8;    // share of words holding a letter
  double max_duplicate_lines = 0.3;     // share of lines that repeat an earlier line
  double max_duplicate_line_bytes = 0.2;  // share of line bytes in those repeats
};

// The rules, in the order they are checked.
enum class TextRule {
  too_few_words,
  too_many_words,
  mean_word_length,
  symbols,
  digits,
  non_alphabetic,
  duplicate_lines,
  duplicate_line_bytes,
};
inline constexpr int kTextRules = 8;  // how many rules there are

// The rule's name, for reports ("too_few_words", ...).
const char* text_rule_name(TextRule rule);

// The first rule the document breaks, or none.
std::optional<TextRule> broken_text_rule(std::string_view document, const TextFilterOptions& options = {});

}  // namespace kiln::data
