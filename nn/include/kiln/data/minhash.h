#pragma once
// Near-duplicate documents: MinHash signatures over word shingles, and
// locality-sensitive hashing to find the pairs worth comparing (GPT-3,
// appendix A: fuzzy deduplication with MinHashLSH). Candidates are verified
// by the exact Jaccard similarity of their shingle sets before a document is
// called a duplicate.
//
// A document's shingles are its runs of `shingle_words` consecutive words,
// after lower-casing ASCII and treating every byte that is not a letter,
// digit or non-ASCII as a space; each is hashed to 64 bits (XXH3). Component
// i of the signature is the least image of those hashes under a random affine
// map modulo the Mersenne prime 2^61 - 1: two documents agree in it with
// probability equal to the Jaccard similarity of their shingle sets. LSH cuts
// the signature into bands of rows; documents that agree on all rows of some
// band are candidates.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::data {

// The sorted, distinct hashes of a text's word shingles. A text with fewer
// words than a shingle has one shingle of all its words; one without words
// has none.
std::vector<uint64_t> shingle_hashes(std::string_view text, int shingle_words);

// |a ∩ b| / |a ∪ b| of two sorted sets of distinct values (1 when both are empty).
double jaccard(std::span<const uint64_t> a, std::span<const uint64_t> b);

// How signatures are made.
struct MinHashOptions {
  int permutations = 128;  // signature length
  int shingle_words = 5;   // words per shingle
  uint64_t seed = 1;  // draws the affine maps: signatures compare only under one seed
};

// Signatures of documents under one set of drawn affine maps.
class MinHasher {
 public:
  // Draws the affine maps from options.seed.
  explicit MinHasher(MinHashOptions options = {});

  // Of a set of shingle hashes (all components 2^61 - 1 when it is empty).
  std::vector<uint64_t> signature(std::span<const uint64_t> shingles) const;
  // Of a text: its shingle_hashes, then their signature.
  std::vector<uint64_t> signature(std::string_view text) const;

  // As constructed.
  const MinHashOptions& options() const { return options_; }

 private:
  MinHashOptions options_;
  std::vector<uint64_t> multipliers_, offsets_;
};

// The share of components in which two signatures agree: an unbiased
// estimate of their documents' Jaccard similarity.
double estimated_jaccard(std::span<const uint64_t> a, std::span<const uint64_t> b);

// How LSH cuts a signature: `bands` bands of `rows` components (bands x rows
// <= its length; the rest is unused).
struct LshBands {
  int bands = 0;  // bands per signature
  int rows = 0;   // components per band
};

// The probability that documents of Jaccard similarity s agree on some band:
// 1 - (1 - s^rows)^bands.
double candidate_probability(double s, LshBands cut);

// The cut for a similarity threshold: of all bands x rows <= permutations,
// the one that minimizes the weighted sum of the false-positive mass (the
// integral of candidate_probability below the threshold) and the
// false-negative mass (of its complement above it), as datasketch chooses.
LshBands lsh_bands(double threshold, int permutations, double false_positive_weight = 0.5,
                   double false_negative_weight = 0.5);

// One key per band: XXH3 of the band's rows, seeded by the band's index so
// that equal rows in different bands differ.
std::vector<uint64_t> band_keys(std::span<const uint64_t> signature, LshBands cut);

// Documents 0 .. n-1 given by their band keys (all cut alike), grouped into
// clusters of near-duplicates: two documents that share a band key join when
// `similar(a, b)` (a < b) confirms them. Each document compares with at most
// `comparisons_per_bucket` earlier documents of each bucket it is in, so that
// a band shared by thousands (boilerplate) stays linear. Returns each
// document's cluster as the least document in it: document i is a duplicate
// when the result's [i] != i (ordering documents by priority keeps the
// first source's copy).
std::vector<uint32_t> near_duplicate_clusters(const std::vector<std::vector<uint64_t>>& keys,
                                              const std::function<bool(uint32_t, uint32_t)>& similar,
                                              int comparisons_per_bucket = 8);

// How find_near_duplicates decides.
struct NearDuplicateOptions {
  double threshold = 0.8;           // the Jaccard similarity of shingle sets at which documents are duplicates
  MinHashOptions minhash;           // the signatures
  int comparisons_per_bucket = 8;  // as near_duplicate_clusters takes it
};

// What find_near_duplicates found.
struct NearDuplicates {
  std::vector<uint32_t> cluster;  // per document, the least document of its cluster
  LshBands cut;                   // lsh_bands(threshold, permutations)
  int64_t compared = 0;           // candidate pairs whose exact similarity was computed
  int64_t duplicates = 0;         // documents whose cluster starts at an earlier one
  int64_t clusters = 0;           // clusters of two documents or more
};

// The whole method on documents in memory, earlier documents first: shingles,
// signatures, band keys, candidates verified by exact Jaccard similarity.
NearDuplicates find_near_duplicates(std::span<const std::string> docs, const NearDuplicateOptions& options = {});

}  // namespace kiln::data
