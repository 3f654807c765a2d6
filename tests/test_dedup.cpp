// Fuzzy deduplication (kiln/data/minhash.h): shingles, the MinHash estimate
// against exact Jaccard similarity, LSH's cut against datasketch's choice and
// its candidate rate against the formula, and the recall of planted
// near-duplicates.

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cmath>
#include <random>
#include <set>

#include "helpers.h"
#include "kiln/data/minhash.h"

using namespace kiln::data;

namespace {

uint64_t xxh3(const std::string& s) { return XXH3_64bits(s.data(), s.size()); }

// Two sets of `size` distinct values sharing `common` of them: Jaccard common / (2 size - common).
std::pair<std::vector<uint64_t>, std::vector<uint64_t>> overlapping_sets(size_t size, size_t common, std::mt19937_64& rng) {
  std::set<uint64_t> drawn;
  while (drawn.size() < 2 * size - common) drawn.insert(rng());
  std::vector<uint64_t> all(drawn.begin(), drawn.end());
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<uint64_t> a(all.begin(), all.begin() + static_cast<ptrdiff_t>(size));
  std::vector<uint64_t> b(all.begin(), all.begin() + static_cast<ptrdiff_t>(common));
  b.insert(b.end(), all.begin() + static_cast<ptrdiff_t>(size), all.end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return {a, b};
}

std::string random_document(size_t words, std::mt19937_64& rng) {
  std::string doc;
  for (size_t i = 0; i < words; ++i) doc += (i ? " w" : "w") + std::to_string(rng() % 5000);
  return doc;
}

// The document with `edits` of its words replaced by fresh ones.
std::string edited(const std::string& doc, size_t edits, std::mt19937_64& rng) {
  std::vector<std::string> words;
  for (size_t start = 0; start < doc.size();) {
    const size_t end = std::min(doc.find(' ', start), doc.size());
    words.push_back(doc.substr(start, end - start));
    start = end + 1;
  }
  for (size_t e = 0; e < edits; ++e) words[rng() % words.size()] = fmt::format("x{}", rng());
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

}  // namespace

TEST_CASE("shingles are word runs, lower-cased, punctuation ignored") {
  std::vector<uint64_t> expected{xxh3("the cat sat"), xxh3("cat sat on"), xxh3("sat on the"), xxh3("on the mat")};
  std::sort(expected.begin(), expected.end());
  CHECK(shingle_hashes("The cat sat on the mat", 3) == expected);
  CHECK(shingle_hashes("THE  cat,\n\tsat!", 2) == shingle_hashes("the cat sat", 2));
  CHECK(shingle_hashes("a b a b a b", 2) == shingle_hashes("b a b", 2));  // distinct: "a b", "b a"
  CHECK(shingle_hashes("two words", 5) == std::vector<uint64_t>{xxh3("two words")});
  CHECK(shingle_hashes(" ... !", 5).empty());
  CHECK(shingle_hashes("Čaj über naïve", 1).size() == 3);  // bytes past ASCII are word bytes
  CHECK_THROWS_WITH(shingle_hashes("x", 0), Catch::Matchers::Contains("shingle_words must be positive"));
}

TEST_CASE("exact Jaccard similarity matches sets") {
  std::mt19937_64 rng(3);
  for (size_t common : {0, 1, 50, 99, 100}) {
    auto [a, b] = overlapping_sets(100, common, rng);
    std::set<uint64_t> uni(a.begin(), a.end());
    uni.insert(b.begin(), b.end());
    CHECK(jaccard(a, b) == Approx(static_cast<double>(a.size() + b.size() - uni.size()) / uni.size()));
  }
  CHECK(jaccard({}, {}) == 1.0);
  const std::vector<uint64_t> one{7};
  CHECK(jaccard(one, {}) == 0.0);
}

TEST_CASE("MinHash estimates Jaccard similarity without bias, within its binomial spread") {
  const MinHasher hasher({.permutations = 256, .seed = 11});
  std::mt19937_64 rng(5);
  for (double target : {0.1, 0.3, 0.5, 0.7, 0.9}) {
    // common / (2 * 400 - common) = target
    const auto common = static_cast<size_t>(std::lround(800 * target / (1 + target)));
    double sum_error = 0;
    const int pairs = 40;
    for (int p = 0; p < pairs; ++p) {
      auto [a, b] = overlapping_sets(400, common, rng);
      const double exact = jaccard(a, b), estimate = estimated_jaccard(hasher.signature(a), hasher.signature(b));
      const double sigma = std::sqrt(exact * (1 - exact) / 256);
      CHECK(std::abs(estimate - exact) < 4.5 * sigma);
      sum_error += estimate - exact;
    }
    CHECK(std::abs(sum_error / pairs) < 4 * std::sqrt(target * (1 - target) / 256 / pairs));
  }
  // Identical sets agree everywhere; seeds draw different maps.
  const auto [a, b] = overlapping_sets(50, 0, rng);
  CHECK(hasher.signature(a) == hasher.signature(std::vector<uint64_t>(a)));
  CHECK(hasher.signature(a) != MinHasher({.permutations = 256, .seed = 12}).signature(a));
  CHECK(estimated_jaccard(hasher.signature(a), hasher.signature(b)) < 0.05);
  CHECK(hasher.signature(std::span<const uint64_t>{}) == std::vector<uint64_t>(256, (uint64_t{1} << 61) - 1));
  CHECK(hasher.signature("Some text, some words here") == hasher.signature(shingle_hashes("some text some words here", 5)));
}

TEST_CASE("LSH cuts signatures as datasketch does, and pairs become candidates as often as the formula says") {
  // datasketch.lsh._optimal_param(threshold, num_perm, 0.5, 0.5), datasketch 1.6.
  CHECK(lsh_bands(0.5, 128).bands == 25);
  CHECK(lsh_bands(0.5, 128).rows == 5);
  CHECK(lsh_bands(0.7, 128).bands == 14);
  CHECK(lsh_bands(0.7, 128).rows == 9);
  CHECK(lsh_bands(0.8, 128).bands == 9);
  CHECK(lsh_bands(0.8, 128).rows == 13);
  CHECK(lsh_bands(0.9, 128).bands == 5);
  CHECK(lsh_bands(0.9, 128).rows == 25);
  CHECK(lsh_bands(0.8, 256).bands == 17);
  CHECK(lsh_bands(0.8, 256).rows == 15);
  CHECK(lsh_bands(0.75, 112).bands == 11);
  CHECK(lsh_bands(0.75, 112).rows == 10);
  CHECK(lsh_bands(0.8, 64).bands == 5);
  CHECK(lsh_bands(0.8, 64).rows == 11);
  CHECK_THROWS_WITH(lsh_bands(1.0, 128), Catch::Matchers::Contains("threshold must be in (0, 1)"));

  const LshBands cut = lsh_bands(0.7, 128);
  CHECK(candidate_probability(0.7, cut) == Approx(1 - std::pow(1 - std::pow(0.7, 9), 14)));
  const MinHasher hasher({.permutations = 128, .seed = 2});
  std::mt19937_64 rng(9);
  for (double s : {0.4, 0.6, 0.7, 0.8, 0.9}) {
    const auto common = static_cast<size_t>(std::lround(200 * s / (1 + s)));
    const int pairs = 400;
    int candidates = 0;
    double expected = 0;
    for (int p = 0; p < pairs; ++p) {
      auto [a, b] = overlapping_sets(100, common, rng);
      const auto ka = band_keys(hasher.signature(a), cut), kb = band_keys(hasher.signature(b), cut);
      bool shared = false;
      for (size_t i = 0; i < ka.size(); ++i) shared |= ka[i] == kb[i];
      candidates += shared;
      expected += candidate_probability(jaccard(a, b), cut);
    }
    const double p = expected / pairs;
    CHECK(std::abs(candidates - expected) <= 4.5 * std::sqrt(pairs * p * (1 - p)) + 1);
  }
  // Equal rows in different bands give different keys.
  const std::vector<uint64_t> flat(128, 42);
  const auto keys = band_keys(flat, cut);
  CHECK(std::set<uint64_t>(keys.begin(), keys.end()).size() == keys.size());
  CHECK_THROWS_WITH(band_keys(std::vector<uint64_t>(100), cut), Catch::Matchers::Contains("do not fit a signature of 100"));
}

TEST_CASE("near-duplicate clusters: planted edited copies found, verified, and kept once") {
  constexpr double kThreshold = 0.7;
  const MinHasher hasher({.permutations = 128, .shingle_words = 5, .seed = 4});
  const LshBands cut = lsh_bands(kThreshold, 128);
  std::mt19937_64 rng(21);
  // 150 originals of 200 words; each of the first 100 gets one copy with 0 to 12 word edits.
  std::vector<std::string> docs;
  for (int i = 0; i < 150; ++i) docs.push_back(random_document(200, rng));
  std::vector<std::pair<uint32_t, uint32_t>> planted;  // (original, copy)
  for (uint32_t i = 0; i < 100; ++i) {
    docs.push_back(edited(docs[i], i % 13, rng));
    planted.emplace_back(i, static_cast<uint32_t>(docs.size() - 1));
  }
  std::vector<std::vector<uint64_t>> shingles, keys;
  for (const auto& d : docs) {
    shingles.push_back(shingle_hashes(d, 5));
    keys.push_back(band_keys(hasher.signature(shingles.back()), cut));
  }
  int compared = 0;
  const auto root = near_duplicate_clusters(keys, [&](uint32_t a, uint32_t b) {
    ++compared;
    CHECK(a < b);
    return jaccard(shingles[a], shingles[b]) >= kThreshold;
  });
  REQUIRE(root.size() == docs.size());
  int above = 0, found = 0;
  for (const auto& [original, copy] : planted) {
    const double s = jaccard(shingles[original], shingles[copy]);
    if (s < kThreshold + 0.1) continue;
    ++above;
    found += root[copy] == original;
  }
  CHECK(above >= 40);
  CHECK(found >= above - 1);  // candidate_probability(0.8) = 0.99 at this cut
  // Verified: every duplicate is similar enough to its cluster's first document; unrelated originals stay apart.
  int duplicates = 0;
  for (uint32_t d = 0; d < root.size(); ++d) {
    CHECK(root[d] <= d);
    if (root[d] == d) continue;
    ++duplicates;
    CHECK(jaccard(shingles[root[d]], shingles[d]) >= kThreshold - 0.2);
    CHECK(d >= 150);  // only copies are duplicates
  }
  CHECK(duplicates >= found);
  CHECK(compared < 400);  // LSH compared a few pairs, not all 31,125
}

TEST_CASE("near-duplicate clusters: chains join through verified pairs, buckets compare a bounded number") {
  // Documents 0-1-2 share band 0 (0 and 2 are not similar, 1 is similar to both); 3 shares band 1 with 2.
  const std::vector<std::vector<uint64_t>> keys{{5, 1}, {5, 2}, {5, 3}, {6, 3}, {7, 4}};
  const std::set<std::pair<uint32_t, uint32_t>> similar{{0, 1}, {1, 2}, {2, 3}};
  auto is_similar = [&](uint32_t a, uint32_t b) { return similar.count({a, b}) > 0; };
  CHECK(near_duplicate_clusters(keys, is_similar) == std::vector<uint32_t>{0, 0, 0, 0, 4});

  // 1000 documents in one bucket, none similar: each compares with at most 8 earlier ones.
  std::vector<std::vector<uint64_t>> crowd(1000, std::vector<uint64_t>{9});
  int calls = 0;
  const auto alone = near_duplicate_clusters(crowd, [&](uint32_t, uint32_t) { return ++calls, false; });
  CHECK(calls == 8 * (1000 - 8) + 28);  // 0 + 1 + ... + 7 for the first eight
  CHECK(alone[999] == 999);
  // All similar: one comparison each, all in document 0's cluster.
  calls = 0;
  const auto together = near_duplicate_clusters(crowd, [&](uint32_t, uint32_t) { return ++calls, true; });
  CHECK(calls == 999);
  CHECK(std::all_of(together.begin(), together.end(), [](uint32_t r) { return r == 0; }));
  CHECK_THROWS_WITH(near_duplicate_clusters({{1, 2}, {3}}, is_similar),
                    Catch::Matchers::Contains("document 1 has 1 band keys, document 0 2"));
}
