#include "kiln/data/quality.h"

#define XXH_INLINE_ALL  // header-only: no library to link or ship
#include <xxhash.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <numeric>

#include "kiln/base/error.h"
#include "kiln/ops.h"
#include "kiln/random.h"
#include "kiln/serialize.h"
#include "words.h"

namespace kiln::data {

namespace {

constexpr const char* kFormat = "kiln quality classifier";

void check_options(const QualityOptions& o, const char* op) {
  KILN_CHECK(o.buckets > 0 && o.max_ngram > 0, "[{}] buckets ({}) and max_ngram ({}) must be positive", op, o.buckets,
             o.max_ngram);
}

double sigmoid(double z) { return z >= 0 ? 1 / (1 + std::exp(-z)) : std::exp(z) / (1 + std::exp(z)); }

// The bias (last weight) plus the features' weighted sum: training keeps double weights, a classifier float.
template <typename W>
double logit(const std::vector<std::pair<uint32_t, float>>& x, const std::vector<W>& w) {
  double z = static_cast<double>(w.back());
  for (const auto& [j, v] : x) z += static_cast<double>(w[j]) * v;
  return z;
}

}  // namespace

std::vector<std::pair<uint32_t, float>> quality_features(std::string_view document, int buckets, int max_ngram) {
  const Words words = split_words(document);
  std::vector<std::pair<uint32_t, float>> signs;  // one per n-gram: its bucket and hashed sign
  for (size_t n = 1; n <= static_cast<size_t>(max_ngram); ++n)
    for (size_t i = 0; i + n <= words.size(); ++i) {
      const std::string_view gram = words.run(i, n);
      const uint64_t h = XXH3_64bits(gram.data(), gram.size());
      signs.emplace_back(static_cast<uint32_t>(h % static_cast<uint64_t>(buckets)), h >> 63 ? -1.f : 1.f);
    }
  std::sort(signs.begin(), signs.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<std::pair<uint32_t, float>> features;
  for (size_t i = 0; i < signs.size();) {
    float count = 0;
    const uint32_t bucket = signs[i].first;
    for (; i < signs.size() && signs[i].first == bucket; ++i) count += signs[i].second;
    if (count != 0) features.emplace_back(bucket, std::copysign(std::log1p(std::abs(count)), count));
  }
  double norm = 0;
  for (const auto& f : features) norm += static_cast<double>(f.second) * f.second;
  if (norm > 0)
    for (auto& f : features) f.second = static_cast<float>(f.second / std::sqrt(norm));
  return features;
}

QualityClassifier QualityClassifier::train(std::span<const std::string> reference, std::span<const std::string> raw,
                                           const QualityOptions& options) {
  check_options(options, "QualityClassifier::train");
  KILN_CHECK(!reference.empty() && !raw.empty(),
             "[QualityClassifier::train] needs documents of both kinds: {} reference, {} raw", reference.size(),
             raw.size());
  KILN_CHECK(options.epochs > 0 && options.learning_rate > 0 && options.l2 >= 0,
             "[QualityClassifier::train] epochs ({}) and learning_rate ({}) must be positive, l2 ({}) not negative",
             options.epochs, options.learning_rate, options.l2);
  struct Example {
    std::vector<std::pair<uint32_t, float>> x;
    double label, weight;
  };
  std::vector<Example> examples;
  const double n = static_cast<double>(reference.size() + raw.size());
  for (const auto& d : reference)
    examples.push_back({quality_features(d, options.buckets, options.max_ngram), 1.0, n / (2.0 * reference.size())});
  for (const auto& d : raw)
    examples.push_back({quality_features(d, options.buckets, options.max_ngram), 0.0, n / (2.0 * raw.size())});

  std::vector<double> w(static_cast<size_t>(options.buckets) + 1, 0.0);
  std::vector<size_t> order(examples.size());
  std::iota(order.begin(), order.end(), 0);
  int64_t step = 0;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    // A seeded Fisher-Yates shuffle from Philox bits, afresh each epoch.
    for (size_t i = order.size(); i-- > 1;)
      std::swap(order[i], order[philox::bits(options.seed, static_cast<uint64_t>(epoch), i) % (i + 1)]);
    for (const size_t e : order) {
      const Example& ex = examples[e];
      const double lr = options.learning_rate / (1.0 + static_cast<double>(step++) / n);
      const double g = (sigmoid(logit(ex.x, w)) - ex.label) * ex.weight;
      for (const auto& [j, v] : ex.x) w[j] -= lr * (g * v + options.l2 * w[j]);
      w.back() -= lr * g;
    }
  }
  return QualityClassifier(options, std::vector<float>(w.begin(), w.end()));
}

double QualityClassifier::score(std::string_view document) const {
  return sigmoid(logit(quality_features(document, options_.buckets, options_.max_ngram), weights_));
}

void QualityClassifier::save(const std::string& path) const {
  save_safetensors(path, {{"weight", tensor(weights_)}},
                   {{"format", kFormat},
                    {"buckets", std::to_string(options_.buckets)},
                    {"max_ngram", std::to_string(options_.max_ngram)}});
}

QualityClassifier QualityClassifier::load(const std::string& path) {
  TensorFile file = load_safetensors(path);
  auto meta = [&](const char* key) -> const std::string& {
    auto it = file.metadata.find(key);
    KILN_CHECK(it != file.metadata.end(), "[QualityClassifier::load] {} has no \"{}\" in its metadata", path, key);
    return it->second;
  };
  KILN_CHECK(meta("format") == kFormat, "[QualityClassifier::load] {} holds \"{}\", not a {}", path, meta("format"),
             kFormat);
  auto integer = [&](const char* key) {
    const std::string& text = meta(key);
    int value = 0;
    const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
    KILN_CHECK(error == std::errc() && end == text.data() + text.size() && value > 0,
               "[QualityClassifier::load] {}: {} is \"{}\", not a positive integer", path, key, text);
    return value;
  };
  QualityOptions options;
  options.buckets = integer("buckets");
  options.max_ngram = integer("max_ngram");
  auto it = file.tensors.find("weight");
  KILN_CHECK(it != file.tensors.end(), "[QualityClassifier::load] {} has no tensor \"weight\"", path);
  const Tensor& t = it->second;
  KILN_CHECK(t.dtype() == kFloat32 && t.dim() == 1 && t.numel() == int64_t{options.buckets} + 1,
             "[QualityClassifier::load] {}: weight is {} [{}], expected float32 [{}]", path, t.dtype(),
             fmt::join(t.sizes(), ", "), int64_t{options.buckets} + 1);
  const float* data = t.data_ptr<float>();
  std::vector<float> weights(data, data + t.numel());
  KILN_CHECK(std::all_of(weights.begin(), weights.end(), [](float v) { return std::isfinite(v); }),
             "[QualityClassifier::load] {}: the weights hold NaN or infinity", path);
  return QualityClassifier(options, std::move(weights));
}

bool keep_by_quality(double score, double alpha, uint64_t seed, uint64_t document) {
  KILN_CHECK(alpha > 0, "[keep_by_quality] alpha must be positive, got {}", alpha);
  // 53 uniform bits from two draws; u in [0, 1).
  const uint64_t bits =
      (uint64_t{philox::bits(seed, 0, document, 0)} << 21) ^ (philox::bits(seed, 0, document, 1) >> 11);
  const double u = static_cast<double>(bits & ((uint64_t{1} << 53) - 1)) * 0x1p-53;
  const double pareto = std::pow(1.0 - u, -1.0 / alpha) - 1.0;
  return pareto > 1.0 - score;
}

}  // namespace kiln::data
