#pragma once
// What curate's filter stage counted in one input file (its F.json), summed
// per source and over the run for the report.

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace curate {

inline constexpr int kScoreBins = 20;  // of the quality score's histogram, over [0, 1]

// Documents and bytes through the filter stage.
struct FilterCounts {
  int64_t documents = 0, bytes = 0;  // read
  int64_t too_long = 0;              // past --max-document-mb, read through unheld
  int64_t empty = 0;                 // nothing left after cleaning
  std::array<int64_t, kiln::data::kTextRules> rules{};  // dropped by each Gopher rule
  int64_t low_quality = 0;           // dropped by the classifier's Pareto rule
  int64_t kept = 0, kept_bytes = 0;  // on to deduplication
  std::array<int64_t, kScoreBins> scores{}, kept_scores{};  // the classifier's scores: all scored, and kept

  static int bin(double score) { return std::min(kScoreBins - 1, static_cast<int>(score * kScoreBins)); }

  FilterCounts& operator+=(const FilterCounts& o) {
    documents += o.documents, bytes += o.bytes, too_long += o.too_long, empty += o.empty, low_quality += o.low_quality;
    kept += o.kept, kept_bytes += o.kept_bytes;
    for (size_t i = 0; i < rules.size(); ++i) rules[i] += o.rules[i];
    for (size_t i = 0; i < scores.size(); ++i) scores[i] += o.scores[i], kept_scores[i] += o.kept_scores[i];
    return *this;
  }
};

inline void to_json(nlohmann::json& j, const FilterCounts& c) {
  j = {{"documents", c.documents}, {"bytes", c.bytes}, {"too_long", c.too_long}, {"empty", c.empty},
       {"rules", c.rules},         {"low_quality", c.low_quality}, {"kept", c.kept},
       {"kept_bytes", c.kept_bytes}, {"scores", c.scores},    {"kept_scores", c.kept_scores}};
}

inline void from_json(const nlohmann::json& j, FilterCounts& c) {
  j.at("documents").get_to(c.documents);
  j.at("bytes").get_to(c.bytes);
  j.at("too_long").get_to(c.too_long);
  j.at("empty").get_to(c.empty);
  j.at("rules").get_to(c.rules);
  j.at("low_quality").get_to(c.low_quality);
  j.at("kept").get_to(c.kept);
  j.at("kept_bytes").get_to(c.kept_bytes);
  j.at("scores").get_to(c.scores);
  j.at("kept_scores").get_to(c.kept_scores);
}

}  // namespace curate
