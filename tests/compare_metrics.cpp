// compare_metrics A.jsonl B.jsonl FIRST_STEP TOLERANCE [KEYS]: the metrics of
// two runs agree from FIRST_STEP on: the same steps, and each of KEYS (comma-
// separated; by default train_loss,grad_norm,val_loss) within TOLERANCE
// relative to the larger of its value and 1. Exit status 0 when they do.

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace {
std::map<int64_t, nlohmann::json> read(const char* path) {
  std::map<int64_t, nlohmann::json> steps;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) {
      auto j = nlohmann::json::parse(line);
      steps[j.at("step").get<int64_t>()] = j;
    }
  return steps;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 5 && argc != 6) {
    std::fprintf(stderr, "usage: compare_metrics A.jsonl B.jsonl FIRST_STEP TOLERANCE [KEYS]\n");
    return 2;
  }
  std::vector<std::string> keys;
  std::stringstream list(argc == 6 ? argv[5] : "train_loss,grad_norm,val_loss");
  for (std::string key; std::getline(list, key, ',');) keys.push_back(key);
  auto a = read(argv[1]), b = read(argv[2]);
  const int64_t first = std::stoll(argv[3]);
  const double tol = std::stod(argv[4]);
  int compared = 0, bad = 0;
  for (auto& [step, ja] : a) {
    if (step < first) continue;
    auto it = b.find(step);
    if (it == b.end()) {
      std::fprintf(stderr, "step %ld: missing from %s\n", static_cast<long>(step), argv[2]);
      ++bad;
      continue;
    }
    for (const std::string& key : keys) {
      if (ja.contains(key) != it->second.contains(key)) ++bad;
      if (!ja.contains(key) || !it->second.contains(key)) continue;
      double x = ja[key].get<double>(), y = it->second[key].get<double>();
      ++compared;
      if (std::abs(x - y) > tol * std::max(std::abs(y), 1.0)) {
        std::fprintf(stderr, "step %ld: %s %.10g vs %.10g\n", static_cast<long>(step), key.c_str(), x, y);
        ++bad;
      }
    }
  }
  std::printf("%d values compared, %d differ\n", compared, bad);
  return bad == 0 && compared > 0 ? 0 : 1;
}
