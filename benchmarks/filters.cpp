// Document filtering throughput on one core: Gopher's rules
// (kiln/data/text_filters.h) on every document, and the quality classifier's
// score (kiln/data/quality.h) on every document, timed apart. The classifier
// is first trained on --reference against the documents themselves. Each
// file is one document. scripts/bench-filters-python does the same work with
// datatrove's Gopher filters and scikit-learn's hashed logistic regression on
// the same files in the same run and prints the ratios. A program, never a test.
//
//   bench_filters --reference /usr/share/common-licenses [--json filters.json] FILE...

#include <CLI/CLI.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>

#include <kiln/kiln.h>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<std::string> read_all(const std::vector<std::string>& files) {
  std::vector<std::string> docs;
  for (const auto& f : files) docs.push_back(kiln::read_file(f));
  return docs;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Document filtering throughput (Gopher's rules, the quality classifier) on one core"};
  std::vector<std::string> files, reference;
  std::string json_path;
  app.add_option("files", files, "documents, one per file")->required()->check(CLI::ExistingFile);
  app.add_option("--reference", reference, "the classifier's high-quality files")->required()
      ->check(CLI::ExistingFile);
  app.add_option("--json", json_path, "also write the figures here");
  CLI11_PARSE(app, argc, argv);

  const std::vector<std::string> docs = read_all(files);
  double bytes = 0;
  for (const auto& d : docs) bytes += static_cast<double>(d.size());

  auto t0 = std::chrono::steady_clock::now();
  int64_t passed = 0;
  for (const auto& d : docs) passed += !kiln::data::broken_text_rule(d).has_value();
  const double rules = seconds_since(t0);

  const auto classifier = kiln::data::QualityClassifier::train(read_all(reference), docs);
  t0 = std::chrono::steady_clock::now();
  double mean_score = 0;
  for (const auto& d : docs) mean_score += classifier.score(d);
  const double scoring = seconds_since(t0);
  mean_score /= static_cast<double>(docs.size());

  const double mb = bytes / 1e6;
  fmt::print("{} documents, {:.1f} MB\n", docs.size(), mb);
  fmt::print("Gopher rules: {:.3f} s, {:.1f} MB/s, {} pass\n", rules, mb / rules, passed);
  fmt::print("classifier:   {:.3f} s, {:.1f} MB/s, mean score {:.3f}\n", scoring, mb / scoring, mean_score);
  if (!json_path.empty()) {
    std::ofstream(json_path) << nlohmann::json{{"documents", docs.size()}, {"megabytes", mb},
                                               {"rules_seconds", rules}, {"passed", passed},
                                               {"score_seconds", scoring}, {"mean_score", mean_score}}
                                    .dump(2);
  }
  return 0;
}
