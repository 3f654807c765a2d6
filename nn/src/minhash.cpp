#include "kiln/data/minhash.h"

#define XXH_INLINE_ALL  // header-only: no library to link or ship
#include <xxhash.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>

#include "kiln/base/error.h"
#include "kiln/random.h"
#include "words.h"

namespace kiln::data {

namespace {

constexpr uint64_t kPrime = (uint64_t{1} << 61) - 1;  // Mersenne: x mod p by shifts and adds

uint64_t mod_prime(uint64_t x) {
  x = (x & kPrime) + (x >> 61);
  return x >= kPrime ? x - kPrime : x;
}

// a x + b mod p for a, x, b < p: the product fits 122 bits.
uint64_t affine_mod_prime(uint64_t a, uint64_t x, uint64_t b) {
  const unsigned __int128 v = static_cast<unsigned __int128>(a) * x + b;
  return mod_prime((static_cast<uint64_t>(v) & kPrime) + static_cast<uint64_t>(v >> 61));
}

// Simpson's rule on [lo, hi]: the integrands are smooth polynomials in s.
template <typename F>
double integrate(F f, double lo, double hi) {
  constexpr int kIntervals = 256;  // even
  const double h = (hi - lo) / kIntervals;
  double sum = f(lo) + f(hi);
  for (int i = 1; i < kIntervals; ++i) sum += (i % 2 ? 4 : 2) * f(lo + i * h);
  return sum * h / 3;
}

// Disjoint sets of documents whose root is the least member.
struct Clusters {
  explicit Clusters(size_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0u); }
  uint32_t find(uint32_t x) {
    while (parent[x] != x) x = parent[x] = parent[parent[x]];
    return x;
  }
  void join(uint32_t a, uint32_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  }
  std::vector<uint32_t> parent;
};

}  // namespace

std::vector<uint64_t> shingle_hashes(std::string_view text, int shingle_words) {
  KILN_CHECK(shingle_words > 0, "[shingle_hashes] shingle_words must be positive, got {}", shingle_words);
  const Words words = split_words(text);
  std::vector<uint64_t> hashes;
  if (words.size() == 0) return hashes;
  const size_t w = std::min<size_t>(static_cast<size_t>(shingle_words), words.size());
  hashes.reserve(words.size() - w + 1);
  for (size_t i = 0; i + w <= words.size(); ++i) {
    const std::string_view shingle = words.run(i, w);
    hashes.push_back(XXH3_64bits(shingle.data(), shingle.size()));
  }
  std::sort(hashes.begin(), hashes.end());
  hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
  return hashes;
}

double jaccard(std::span<const uint64_t> a, std::span<const uint64_t> b) {
  if (a.empty() && b.empty()) return 1.0;
  size_t common = 0;
  for (size_t i = 0, j = 0; i < a.size() && j < b.size();) {
    if (a[i] < b[j]) ++i;
    else if (b[j] < a[i]) ++j;
    else ++common, ++i, ++j;
  }
  return static_cast<double>(common) / static_cast<double>(a.size() + b.size() - common);
}

MinHasher::MinHasher(MinHashOptions options) : options_(options) {
  KILN_CHECK(options.permutations > 0, "[MinHasher] permutations must be positive, got {}", options.permutations);
  KILN_CHECK(options.shingle_words > 0, "[MinHasher] shingle_words must be positive, got {}", options.shingle_words);
  multipliers_.resize(static_cast<size_t>(options.permutations));
  offsets_.resize(multipliers_.size());
  // 64 bits from two draws of one Philox element.
  auto bits64 = [&](uint64_t stream, uint64_t i) {
    return uint64_t{philox::bits(options.seed, stream, i, 0)} << 32 | philox::bits(options.seed, stream, i, 1);
  };
  for (size_t i = 0; i < multipliers_.size(); ++i) {
    multipliers_[i] = bits64(1, i) % (kPrime - 1) + 1;
    offsets_[i] = bits64(2, i) % kPrime;
  }
}

std::vector<uint64_t> MinHasher::signature(std::span<const uint64_t> shingles) const {
  std::vector<uint64_t> reduced(shingles.size());
  std::transform(shingles.begin(), shingles.end(), reduced.begin(), mod_prime);
  std::vector<uint64_t> sig(multipliers_.size(), kPrime);
  for (size_t i = 0; i < sig.size(); ++i) {
    const uint64_t a = multipliers_[i], b = offsets_[i];
    uint64_t least = kPrime;
    for (const uint64_t x : reduced) least = std::min(least, affine_mod_prime(a, x, b));
    sig[i] = least;
  }
  return sig;
}

std::vector<uint64_t> MinHasher::signature(std::string_view text) const {
  return signature(shingle_hashes(text, options_.shingle_words));
}

double estimated_jaccard(std::span<const uint64_t> a, std::span<const uint64_t> b) {
  KILN_CHECK(a.size() == b.size() && !a.empty(), "[estimated_jaccard] signatures of {} and {} components", a.size(),
             b.size());
  size_t equal = 0;
  for (size_t i = 0; i < a.size(); ++i) equal += a[i] == b[i];
  return static_cast<double>(equal) / static_cast<double>(a.size());
}

double candidate_probability(double s, LshBands cut) {
  return 1.0 - std::pow(1.0 - std::pow(s, cut.rows), cut.bands);
}

LshBands lsh_bands(double threshold, int permutations, double false_positive_weight, double false_negative_weight) {
  KILN_CHECK(threshold > 0 && threshold < 1, "[lsh_bands] the threshold must be in (0, 1), got {}", threshold);
  KILN_CHECK(permutations > 0, "[lsh_bands] permutations must be positive, got {}", permutations);
  LshBands best;
  double least = INFINITY;
  for (int b = 1; b <= permutations; ++b)
    for (int r = 1; r <= permutations / b; ++r) {
      const LshBands cut{b, r};
      const double fp = integrate([&](double s) { return candidate_probability(s, cut); }, 0.0, threshold);
      const double fn = integrate([&](double s) { return 1.0 - candidate_probability(s, cut); }, threshold, 1.0);
      const double error = false_positive_weight * fp + false_negative_weight * fn;
      if (error < least) {
        least = error;
        best = cut;
      }
    }
  return best;
}

std::vector<uint64_t> band_keys(std::span<const uint64_t> signature, LshBands cut) {
  KILN_CHECK(cut.bands > 0 && cut.rows > 0 && static_cast<size_t>(cut.bands) * cut.rows <= signature.size(),
             "[band_keys] {} bands of {} rows do not fit a signature of {}", cut.bands, cut.rows, signature.size());
  std::vector<uint64_t> keys(static_cast<size_t>(cut.bands));
  for (size_t b = 0; b < keys.size(); ++b)
    keys[b] = XXH3_64bits_withSeed(signature.data() + b * cut.rows, cut.rows * sizeof(uint64_t), b);
  return keys;
}

std::vector<uint32_t> near_duplicate_clusters(const std::vector<std::vector<uint64_t>>& keys,
                                              const std::function<bool(uint32_t, uint32_t)>& similar,
                                              int comparisons_per_bucket) {
  KILN_CHECK(keys.size() < (uint64_t{1} << 32), "[near_duplicate_clusters] {} documents (at most 2^32 - 1)",
             keys.size());
  KILN_CHECK(comparisons_per_bucket > 0, "[near_duplicate_clusters] comparisons_per_bucket must be positive, got {}",
             comparisons_per_bucket);
  Clusters clusters(keys.size());
  const size_t bands = keys.empty() ? 0 : keys[0].size();
  for (size_t d = 0; d < keys.size(); ++d)
    KILN_CHECK(keys[d].size() == bands, "[near_duplicate_clusters] document {} has {} band keys, document 0 {}", d,
               keys[d].size(), bands);
  std::vector<std::pair<uint64_t, uint32_t>> bucketed(keys.size());
  for (size_t band = 0; band < bands; ++band) {
    for (uint32_t d = 0; d < bucketed.size(); ++d) bucketed[d] = {keys[d][band], d};
    std::sort(bucketed.begin(), bucketed.end());
    for (size_t first = 0, end; first < bucketed.size(); first = end) {
      for (end = first + 1; end < bucketed.size() && bucketed[end].first == bucketed[first].first;) ++end;
      for (size_t i = first + 1; i < end; ++i) {
        const uint32_t doc = bucketed[i].second;
        const size_t stop = std::min(i, first + static_cast<size_t>(comparisons_per_bucket));
        for (size_t j = first; j < stop; ++j) {
          const uint32_t earlier = bucketed[j].second;
          if (clusters.find(earlier) == clusters.find(doc)) break;
          if (similar(earlier, doc)) {
            clusters.join(earlier, doc);
            break;
          }
        }
      }
    }
  }
  std::vector<uint32_t> root(keys.size());
  for (uint32_t d = 0; d < root.size(); ++d) root[d] = clusters.find(d);
  return root;
}

NearDuplicates find_near_duplicates(std::span<const std::string> docs, const NearDuplicateOptions& options) {
  NearDuplicates found;
  found.cut = lsh_bands(options.threshold, options.minhash.permutations);
  const MinHasher hasher(options.minhash);
  std::vector<std::vector<uint64_t>> shingles(docs.size()), keys(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    shingles[d] = shingle_hashes(docs[d], options.minhash.shingle_words);
    keys[d] = band_keys(hasher.signature(shingles[d]), found.cut);
  }
  found.cluster = near_duplicate_clusters(
      keys,
      [&](uint32_t a, uint32_t b) {
        ++found.compared;
        return jaccard(shingles[a], shingles[b]) >= options.threshold;
      },
      options.comparisons_per_bucket);
  std::vector<int64_t> members(docs.size());
  for (uint32_t d = 0; d < found.cluster.size(); ++d) ++members[found.cluster[d]];
  found.duplicates = static_cast<int64_t>(docs.size()) - std::count_if(members.begin(), members.end(), [](int64_t m) { return m > 0; });
  found.clusters = std::count_if(members.begin(), members.end(), [](int64_t m) { return m > 1; });
  return found;
}

}  // namespace kiln::data
