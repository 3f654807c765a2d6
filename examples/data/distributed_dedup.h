#pragma once
// Deduplication across ranks, for corpora no one process holds: each rank
// sends every (band, key) of its documents to the rank that owns that bucket
// (an all-to-all shuffle, as MinHash LSH at scale does it), each owner
// verifies its buckets, and every rank receives all verified pairs and joins
// them into the same clusters. Band 0 is the exact band (a hash of the text,
// verified by comparing the texts); bands 1.. are MinHash LSH bands, verified
// by the exact Jaccard similarity of the documents' shingles. The result does
// not depend on the number of ranks: a bucket's verdicts depend on its
// members alone.

#include <algorithm>
#include <map>
#include <numeric>
#include <unordered_map>

#include "curate_store.h"

namespace curate {

// One band key of one document, on its way to the bucket's owner.
struct BucketEntry {
  uint64_t band, key, doc, offset;  // offset: of the document's record in its F.docs
};

// Two documents found alike; `later` is dropped in favour of `earlier` (a smaller key).
struct VerifiedPair {
  uint64_t earlier, later;
  bool exact;  // the texts are equal
};

// How buckets are verified.
struct BucketRules {
  double threshold = 0.8;      // Jaccard similarity of shingle sets that makes near-duplicates
  int shingle_words = 5;       // as the signatures took them
  int comparisons_per_bucket = 8;  // earlier members each member is compared with, at most
};

namespace detail {

inline std::vector<int64_t> as_rows(const std::vector<BucketEntry>& entries) {
  std::vector<int64_t> rows(entries.size() * 4);
  std::memcpy(rows.data(), entries.data(), rows.size() * sizeof(int64_t));
  return rows;
}

// Sends each rank its entries (grouped by owner, `counts` per owner) and returns what this rank owns.
inline std::vector<BucketEntry> shuffle(kiln::dist::ProcessGroup& group, const std::vector<BucketEntry>& grouped,
                                        const std::vector<int64_t>& counts) {
  const int ranks = group.size();
  kiln::Tensor send_counts = kiln::tensor(counts), receive_counts = kiln::empty({ranks}, kiln::kInt64);
  group.all_to_all(receive_counts, send_counts);
  const int64_t* received = receive_counts.data_ptr<int64_t>();
  const std::vector<int64_t> out_splits(received, received + ranks);
  const int64_t total = std::accumulate(out_splits.begin(), out_splits.end(), int64_t{0});
  kiln::Tensor in = kiln::tensor(as_rows(grouped)).reshape({static_cast<int64_t>(grouped.size()), 4});
  kiln::Tensor out = kiln::empty({total, 4}, kiln::kInt64);
  group.all_to_all(out, in, out_splits, counts);
  std::vector<BucketEntry> mine(static_cast<size_t>(total));
  std::memcpy(mine.data(), out.data_ptr<int64_t>(), mine.size() * sizeof(BucketEntry));
  return mine;
}

// Every rank's pairs, on every rank, in rank order.
inline std::vector<VerifiedPair> gather(kiln::dist::ProcessGroup& group, const std::vector<VerifiedPair>& mine) {
  const int ranks = group.size();
  kiln::Tensor count = kiln::tensor(std::vector<int64_t>{static_cast<int64_t>(mine.size())});
  kiln::Tensor counts = kiln::empty({ranks}, kiln::kInt64);
  group.all_gather(counts, count);
  const int64_t* n = counts.data_ptr<int64_t>();
  const int64_t most = *std::max_element(n, n + ranks);
  std::vector<int64_t> rows(static_cast<size_t>(most) * 3, -1);
  for (size_t i = 0; i < mine.size(); ++i) {
    rows[3 * i] = static_cast<int64_t>(mine[i].earlier);
    rows[3 * i + 1] = static_cast<int64_t>(mine[i].later);
    rows[3 * i + 2] = mine[i].exact;
  }
  kiln::Tensor all = kiln::empty({ranks * most * 3}, kiln::kInt64);
  group.all_gather(all, kiln::tensor(rows));
  const int64_t* a = all.data_ptr<int64_t>();
  std::vector<VerifiedPair> pairs;
  for (int r = 0; r < ranks; ++r)
    for (int64_t i = 0; i < n[r]; ++i) {
      const int64_t* row = a + (r * most + i) * 3;
      pairs.push_back({static_cast<uint64_t>(row[0]), static_cast<uint64_t>(row[1]), row[2] != 0});
    }
  return pairs;
}

}  // namespace detail

// Pairs sorted, each once (a pair can share several buckets).
inline std::vector<VerifiedPair> distinct(std::vector<VerifiedPair> pairs) {
  const auto key = [](const VerifiedPair& p) { return std::tuple(p.earlier, p.later, p.exact); };
  std::sort(pairs.begin(), pairs.end(), [&](const VerifiedPair& a, const VerifiedPair& b) { return key(a) < key(b); });
  pairs.erase(std::unique(pairs.begin(), pairs.end(),
                          [&](const VerifiedPair& a, const VerifiedPair& b) { return key(a) == key(b); }),
              pairs.end());
  return pairs;
}

// The verified pairs of every bucket of every rank's entries, on every rank,
// each once. `compared` counts the pairs this rank verified (a pair in
// buckets of two owners is verified by both).
inline std::vector<VerifiedPair> verified_pairs(kiln::dist::ProcessGroup& group, std::vector<BucketEntry> entries,
                                                const std::string& work, const BucketRules& rules,
                                                int64_t& compared) {
  // To the owners: a bucket belongs to rank hash(band, key) mod ranks.
  const auto owner = [&](const BucketEntry& e) {
    return static_cast<int>((e.key ^ (e.band * 0x9E3779B97F4A7C15ull)) % static_cast<uint64_t>(group.size()));
  };
  std::stable_sort(entries.begin(), entries.end(),
                   [&](const BucketEntry& a, const BucketEntry& b) { return owner(a) < owner(b); });
  std::vector<int64_t> counts(static_cast<size_t>(group.size()));
  for (const BucketEntry& e : entries) ++counts[static_cast<size_t>(owner(e))];
  std::vector<BucketEntry> mine = detail::shuffle(group, entries, counts);
  entries = {};

  // Buckets in key order; members in priority order.
  std::sort(mine.begin(), mine.end(), [](const BucketEntry& a, const BucketEntry& b) {
    return std::tie(a.band, a.key, a.doc) < std::tie(b.band, b.key, b.doc);
  });
  std::vector<std::pair<size_t, size_t>> buckets;  // [first, end) of buckets with two members or more
  std::map<uint64_t, uint64_t> needed;             // document -> offset, of those in such buckets
  for (size_t first = 0, end; first < mine.size(); first = end) {
    for (end = first + 1; end < mine.size() && mine[end].band == mine[first].band && mine[end].key == mine[first].key;)
      ++end;
    if (end - first < 2) continue;
    buckets.emplace_back(first, end);
    for (size_t i = first; i < end; ++i) needed.emplace(mine[i].doc, mine[i].offset);
  }

  // The candidates' texts and shingles, read once in key order.
  struct Candidate {
    std::string text;
    std::vector<uint64_t> shingles;
  };
  std::unordered_map<uint64_t, Candidate> docs;
  DocReader reader(work);
  for (const auto& [doc, offset] : needed) {
    std::string text = reader.read(file_of(doc), offset);
    std::vector<uint64_t> shingles = kiln::data::shingle_hashes(text, rules.shingle_words);
    docs.emplace(doc, Candidate{std::move(text), std::move(shingles)});
  }

  std::map<std::tuple<uint64_t, uint64_t, bool>, bool> verdicts;  // (earlier, later, exact band) -> alike
  const auto alike = [&](uint64_t a, uint64_t b, bool exact) {
    auto [it, fresh] = verdicts.try_emplace({a, b, exact}, false);
    if (fresh) {
      ++compared;
      const Candidate &x = docs.at(a), &y = docs.at(b);
      it->second = exact ? x.text == y.text : kiln::data::jaccard(x.shingles, y.shingles) >= rules.threshold;
    }
    return it->second;
  };
  std::vector<VerifiedPair> found;
  for (const auto& [first, end] : buckets) {
    const bool exact = mine[first].band == 0;
    for (size_t i = first + 1; i < end; ++i) {
      const size_t stop = std::min(i, first + static_cast<size_t>(rules.comparisons_per_bucket));
      for (size_t j = first; j < stop; ++j)
        if (alike(mine[j].doc, mine[i].doc, exact)) {
          found.push_back({mine[j].doc, mine[i].doc, exact});
          break;
        }
    }
  }
  return distinct(detail::gather(group, distinct(std::move(found))));
}

// Clusters of the verified pairs: per document in a pair, the least document
// of its cluster (itself when it stays).
inline std::map<uint64_t, uint64_t> cluster_roots(const std::vector<VerifiedPair>& pairs) {
  std::map<uint64_t, uint64_t> parent;
  const auto find = [&](uint64_t d) {
    auto it = parent.try_emplace(d, d).first;
    while (it->second != it->first) {
      auto up = parent.find(it->second);
      it->second = up->second;  // halve the path
      it = up;
    }
    return it->first;
  };
  for (const VerifiedPair& p : pairs) {
    const uint64_t a = find(p.earlier), b = find(p.later);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);
  }
  std::map<uint64_t, uint64_t> roots;
  for (const auto& entry : parent) roots[entry.first] = find(entry.first);
  return roots;
}

}  // namespace curate
