#pragma once
// Quality filtering as GPT-3 did it (appendix A): a logistic-regression
// classifier on hashed word n-gram features, trained to tell a high-quality
// reference corpus (label 1) from raw text (label 0), scores every raw
// document; a document stays when a Pareto(alpha) draw exceeds 1 - score
// (numpy's pareto, alpha 9 in GPT-3), so that mostly high scores survive and
// some low-scoring text still does.
//
// Features: the words as shingle_hashes sees them (lower-cased ASCII,
// letters, digits and non-ASCII bytes), their 1- to max_ngram-grams hashed
// (XXH3) into `buckets` buckets with a hashed sign, log(1 + count), the
// vector scaled to unit length.

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kiln::data {

// How the classifier is trained.
struct QualityOptions {
  int buckets = 1 << 18;        // hashed feature dimensions
  int max_ngram = 2;            // unigrams and bigrams
  int epochs = 5;               // passes of stochastic gradient descent
  double learning_rate = 0.5;   // at the first step; decays as 1 / (1 + step / examples)
  double l2 = 1e-6;             // weight decay per example
  uint64_t seed = 1;            // draws the order of the examples
};

// A trained classifier: P(reference | document).
class QualityClassifier {
 public:
  // Fits weights to the two corpora, each example weighted so that both
  // classes count alike. The same corpora and options give the same weights.
  static QualityClassifier train(std::span<const std::string> reference, std::span<const std::string> raw,
                                 const QualityOptions& options = {});

  // The probability that the document reads like the reference corpus.
  double score(std::string_view document) const;

  // Saved as safetensors: the weights and bias, the feature settings as metadata.
  void save(const std::string& path) const;
  static QualityClassifier load(const std::string& path);

  // The feature settings and weights (buckets + 1: the bias last).
  const QualityOptions& options() const { return options_; }
  const std::vector<float>& weights() const { return weights_; }

 private:
  QualityClassifier(QualityOptions options, std::vector<float> weights)
      : options_(options), weights_(std::move(weights)) {}
  QualityOptions options_;
  std::vector<float> weights_;
};

// The document's hashed features: sorted (bucket, value) pairs of unit norm.
std::vector<std::pair<uint32_t, float>> quality_features(std::string_view document, int buckets, int max_ngram);

// GPT-3's rule: keep when pareto(alpha) > 1 - score, the Pareto draw (numpy's
// Lomax form, (1 - u)^(-1 / alpha) - 1) taken from Philox at (seed, document).
// The chance of keeping is (2 - score)^-alpha.
bool keep_by_quality(double score, double alpha, uint64_t seed, uint64_t document);

}  // namespace kiln::data
