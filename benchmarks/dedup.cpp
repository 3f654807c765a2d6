// Fuzzy deduplication throughput on one core: shingles and MinHash
// signatures, then LSH with every candidate verified by exact Jaccard
// similarity (kiln/data/minhash.h). Each file is one document.
// scripts/bench-dedup-python does the same work with datasketch on the same
// files in the same run and prints the ratio. A program, never a test.
//
//   bench_dedup [--threshold 0.8] [--permutations 128] [--json dedup.json] FILE...

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Fuzzy deduplication throughput (MinHash + LSH) on one core"};
  std::vector<std::string> files;
  double threshold = 0.8;
  int permutations = 128;
  std::string json_path;
  app.add_option("files", files, "documents, one per file")->required()->check(CLI::ExistingFile);
  app.add_option("--threshold", threshold, "Jaccard similarity of duplicates")->capture_default_str();
  app.add_option("--permutations", permutations, "signature length")->capture_default_str();
  app.add_option("--json", json_path, "also write the figures here");
  CLI11_PARSE(app, argc, argv);

  std::vector<std::string> docs;
  double bytes = 0;
  for (const auto& f : files) {
    docs.push_back(kiln::read_file(f));
    bytes += static_cast<double>(docs.back().size());
  }
  const kiln::data::MinHasher hasher({.permutations = permutations});
  const kiln::data::LshBands cut = kiln::data::lsh_bands(threshold, permutations);

  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::vector<uint64_t>> shingles(docs.size()), keys(docs.size());
  for (size_t d = 0; d < docs.size(); ++d) {
    shingles[d] = kiln::data::shingle_hashes(docs[d], hasher.options().shingle_words);
    keys[d] = kiln::data::band_keys(hasher.signature(shingles[d]), cut);
  }
  const double signing = seconds_since(t0);

  t0 = std::chrono::steady_clock::now();
  int64_t compared = 0;
  const auto cluster = kiln::data::near_duplicate_clusters(keys, [&](uint32_t a, uint32_t b) {
    ++compared;
    return kiln::data::jaccard(shingles[a], shingles[b]) >= threshold;
  });
  const double clustering = seconds_since(t0);
  int64_t duplicates = 0;
  for (uint32_t d = 0; d < cluster.size(); ++d) duplicates += cluster[d] != d;

  const double mb = bytes / 1e6;
  fmt::print("{} documents, {:.1f} MB; {} bands x {} rows\n", docs.size(), mb, cut.bands, cut.rows);
  fmt::print("signatures: {:.3f} s, {:.1f} MB/s\n", signing, mb / signing);
  fmt::print("clusters:   {:.3f} s ({} pairs verified), {} duplicates\n", clustering, compared, duplicates);
  fmt::print("total:      {:.1f} MB/s\n", mb / (signing + clustering));
  if (!json_path.empty()) {
    std::ofstream(json_path) << nlohmann::json{{"documents", docs.size()}, {"megabytes", mb},
                                               {"signature_seconds", signing}, {"cluster_seconds", clustering},
                                               {"duplicates", duplicates}, {"compared", compared}}
                                    .dump(2);
  }
  return 0;
}
