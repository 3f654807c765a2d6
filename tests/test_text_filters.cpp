// Gopher's document rules (kiln/data/text_filters.h): each document below
// breaks exactly the rule it is built for, and a plain paragraph breaks none.

#include "helpers.h"
#include "kiln/data/text_filters.h"

using namespace kiln::data;

namespace {

// `n` ordinary words ("kiln0 fires1 ..."), mean length about 6, all alphabetic.
std::string words(int n, const std::string& separator = " ") {
  static const char* pool[] = {"kiln", "fires", "clay", "slowly", "potters", "glaze", "turns", "glass"};
  std::string out;
  for (int i = 0; i < n; ++i) out += (i ? separator : "") + std::string(pool[i % 8]);
  return out;
}

// `n` lines of ten ordinary words, each line distinct.
std::string lines(int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += words(10) + " line" + std::to_string(i) + "\n";
  return out;
}

std::optional<TextRule> broken(const std::string& doc, const TextFilterOptions& options = {}) {
  return broken_text_rule(doc, options);
}

}  // namespace

TEST_CASE("Gopher's rules: a plain paragraph passes, and each rule catches its own breach") {
  CHECK(broken(words(60)) == std::nullopt);
  CHECK(broken(lines(6)) == std::nullopt);

  CHECK(broken(words(49)) == TextRule::too_few_words);
  CHECK(broken(words(50)) == std::nullopt);
  CHECK(broken(words(60), {.max_words = 59}) == TextRule::too_many_words);
  CHECK(broken("", {.min_words = 0}) == std::nullopt);

  std::string short_words;
  for (int i = 0; i < 60; ++i) short_words += "ab ";
  CHECK(broken(short_words) == TextRule::mean_word_length);
  CHECK(broken(words(60) + " " + std::string(400, 'x')) == TextRule::mean_word_length);

  // 8 symbols ("#" 7, "..." 1) over 61 words > 0.1; then 4 over 60 are not.
  CHECK(broken(words(60) + " ###...#" + "###") == TextRule::symbols);
  CHECK(broken(words(57) + " # ... \u2026" + "#") == std::nullopt);

  std::string numbers = words(60);
  for (int i = 0; i < 30; ++i) numbers += " kiln" + std::to_string(1000000 + i);
  CHECK(broken(numbers) == std::nullopt);  // digits are Gopher's rule off
  CHECK(broken(numbers, {.max_digit_ratio = 0.3}) == TextRule::digits);

  std::string dashes = words(60);
  for (int i = 0; i < 20; ++i) dashes += " --";
  CHECK(broken(dashes) == TextRule::non_alphabetic);  // 60 of 80 words hold letters

  // 4 of 10 lines repeat an earlier one.
  CHECK(broken(lines(6) + lines(4)) == TextRule::duplicate_lines);
  // 2 of 10 lines repeat, but they are long: over 20% of the line bytes.
  const std::string long_line = words(60) + "\n";
  CHECK(broken(lines(7) + long_line + long_line + long_line) == TextRule::duplicate_line_bytes);
  CHECK(broken(lines(7) + "\n\n\n" + long_line) == std::nullopt);  // blank lines are not lines

  for (int r = 0; r < kTextRules; ++r) CHECK(std::string(text_rule_name(static_cast<TextRule>(r))) != "unknown");
  CHECK(std::string(text_rule_name(TextRule::duplicate_line_bytes)) == "duplicate_line_bytes");
}
