// GPT-3's quality filter (kiln/data/quality.h): hashed n-gram features, a
// logistic-regression classifier that separates planted good and bad corpora
// on held-out documents, deterministic for its seed and saved exactly, and
// the Pareto keep rule against its closed form.

#include <cmath>
#include <filesystem>
#include <random>

#include "helpers.h"
#include "kiln/data/quality.h"
#include "kiln/serialize.h"

using namespace kiln::data;

namespace {

const std::vector<std::string> kGood{"the",    "kiln",  "fires",  "clay",   "slowly", "and",   "potters", "watch",
                                     "glaze",  "turns", "to",     "glass",  "in",     "heat",  "of",      "a",
                                     "long",   "night", "careful", "hands", "shape",  "every", "bowl",    "with"};
const std::vector<std::string> kBad{"click", "here", "free", "$$$", "win", "now", "!!!", "buy", "cheap", "xxx",
                                    "casino", "prize", "100%", "offer", "deal", "limited"};

// A document of `words` words, `good_share` of them drawn from the good vocabulary.
std::string document(size_t words, double good_share, std::mt19937_64& rng) {
  std::uniform_real_distribution<double> coin;
  std::string doc;
  for (size_t i = 0; i < words; ++i) {
    const auto& pool = coin(rng) < good_share ? kGood : kBad;
    doc += (i ? " " : "") + pool[rng() % pool.size()];
  }
  return doc;
}

// The probability that a random good document scores above a random bad one.
double auc(const std::vector<double>& good, const std::vector<double>& bad) {
  double wins = 0;
  for (double g : good)
    for (double b : bad) wins += g > b ? 1.0 : g == b ? 0.5 : 0.0;
  return wins / static_cast<double>(good.size() * bad.size());
}

}  // namespace

TEST_CASE("quality features: hashed 1- and 2-grams, log counts, unit length") {
  const auto f = quality_features("The kiln, the KILN; the kiln", 1 << 16, 2);
  double norm = 0;
  for (size_t i = 0; i < f.size(); ++i) {
    norm += static_cast<double>(f[i].second) * f[i].second;
    CHECK(f[i].first < (1u << 16));
    if (i) CHECK(f[i - 1].first < f[i].first);
  }
  CHECK(norm == Approx(1.0));
  // Words "the kiln the kiln the kiln": grams the (3), kiln (3), "the kiln" (3), "kiln the" (2).
  CHECK(f.size() == 4);
  std::vector<double> magnitudes;
  for (const auto& [bucket, v] : f) magnitudes.push_back(std::abs(v));
  std::sort(magnitudes.begin(), magnitudes.end());
  const double big = std::log1p(3.0), small = std::log1p(2.0), length = std::sqrt(3 * big * big + small * small);
  CHECK(magnitudes[0] == Approx(small / length));
  CHECK(magnitudes[3] == Approx(big / length));
  CHECK(quality_features("the kiln", 1 << 16, 1).size() == 2);
  CHECK(quality_features(" ... ", 1 << 16, 2).empty());
}

TEST_CASE("the quality classifier separates planted corpora on held-out documents, the same for a seed") {
  std::mt19937_64 rng(17);
  std::vector<std::string> reference, raw, good_test, bad_test;
  for (int i = 0; i < 200; ++i) {
    reference.push_back(document(60, 0.95, rng));
    raw.push_back(document(60, 0.35, rng));
  }
  for (int i = 0; i < 100; ++i) {
    good_test.push_back(document(60, 0.95, rng));
    bad_test.push_back(document(60, 0.35, rng));
  }
  const QualityOptions options{.buckets = 1 << 12, .seed = 3};
  const auto classifier = QualityClassifier::train(reference, raw, options);
  std::vector<double> good_scores, bad_scores;
  for (const auto& d : good_test) good_scores.push_back(classifier.score(d));
  for (const auto& d : bad_test) bad_scores.push_back(classifier.score(d));
  CHECK(auc(good_scores, bad_scores) > 0.98);
  double good_mean = 0, bad_mean = 0;
  for (double s : good_scores) good_mean += s / 100;
  for (double s : bad_scores) bad_mean += s / 100;
  CHECK(good_mean > 0.8);
  CHECK(bad_mean < 0.2);

  CHECK(QualityClassifier::train(reference, raw, options).weights() == classifier.weights());
  QualityOptions other = options;
  other.seed = 4;
  CHECK(QualityClassifier::train(reference, raw, other).weights() != classifier.weights());
  CHECK_THROWS_WITH(QualityClassifier::train(reference, {}, options),
                    Catch::Matchers::Contains("needs documents of both kinds: 200 reference, 0 raw"));
}

TEST_CASE("the quality classifier saves and loads exactly, and refuses damaged files") {
  std::mt19937_64 rng(5);
  std::vector<std::string> reference, raw;
  for (int i = 0; i < 20; ++i) {
    reference.push_back(document(30, 0.9, rng));
    raw.push_back(document(30, 0.3, rng));
  }
  const auto classifier = QualityClassifier::train(reference, raw, {.buckets = 1 << 10, .max_ngram = 3});
  const auto dir = std::filesystem::temp_directory_path() / "kiln_test_quality";
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "quality.safetensors").string();
  classifier.save(path);
  const auto loaded = QualityClassifier::load(path);
  CHECK(loaded.weights() == classifier.weights());
  CHECK(loaded.options().max_ngram == 3);
  CHECK(loaded.score(reference[0]) == classifier.score(reference[0]));

  const std::string bad = (dir / "bad.safetensors").string();
  kiln::save_safetensors(bad, {{"weight", kiln::tensor(std::vector<float>(8))}},
                         {{"format", "kiln quality classifier"}, {"buckets", "1024"}, {"max_ngram", "2"}});
  CHECK_THROWS_WITH(QualityClassifier::load(bad), Catch::Matchers::Contains("expected float32 [1025]"));
  kiln::save_safetensors(bad, {{"weight", kiln::tensor(std::vector<float>(8))}},
                         {{"format", "kiln quality classifier"}, {"buckets", "7x"}, {"max_ngram", "2"}});
  CHECK_THROWS_WITH(QualityClassifier::load(bad), Catch::Matchers::Contains("buckets is \"7x\", not a positive integer"));
  kiln::save_safetensors(bad, {{"weight", kiln::tensor(std::vector<float>(8))}}, {{"format", "pt"}});
  CHECK_THROWS_WITH(QualityClassifier::load(bad), Catch::Matchers::Contains("holds \"pt\", not a kiln quality classifier"));
  std::filesystem::remove_all(dir);
}

TEST_CASE("the Pareto rule keeps a document with probability (2 - score)^-alpha") {
  const int n = 20000;
  for (double alpha : {9.0, 2.0})
    for (double score : {0.0, 0.3, 0.7, 0.95}) {
      int kept = 0;
      for (int d = 0; d < n; ++d) kept += keep_by_quality(score, alpha, 42, static_cast<uint64_t>(d));
      const double p = std::pow(2.0 - score, -alpha);
      CHECK(std::abs(kept - n * p) <= 4.5 * std::sqrt(n * p * (1 - p)) + 1);
    }
  int kept = 0;
  for (int d = 0; d < 1000; ++d) kept += keep_by_quality(1.0, 9.0, 42, static_cast<uint64_t>(d));
  CHECK(kept == 1000);
  CHECK(keep_by_quality(0.5, 9.0, 1, 7) == keep_by_quality(0.5, 9.0, 1, 7));
  CHECK_THROWS_WITH(keep_by_quality(0.5, 0.0, 1, 7), Catch::Matchers::Contains("alpha must be positive"));
}
