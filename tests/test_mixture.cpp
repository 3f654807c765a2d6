// The mixture loader (kiln/data/mixture_loader.h): rows come from each source
// in proportion to its weight, a small source is repassed in fresh orders,
// ranks split exactly the rows one process would read, and a resumed loader
// reads what the uninterrupted one does.

#include <filesystem>
#include <map>
#include <set>

#include "helpers.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

const fs::path kDir = fs::temp_directory_path() / "kiln_test_mixture";
constexpr int64_t kT = 4;

// Source s holds tokens s * 1000 + i, so a row names its source and window.
std::string source_file(int s, int64_t tokens) {
  fs::create_directories(kDir);
  std::vector<uint32_t> t(static_cast<size_t>(tokens));
  for (int64_t i = 0; i < tokens; ++i) t[static_cast<size_t>(i)] = static_cast<uint32_t>(s * 1000 + i);
  const std::string path = (kDir / fmt::format("s{}.bin", s)).string();
  data::write_tokens(path, t);
  return path;
}

std::vector<data::MixtureSource> three_sources() {
  return {{"big", source_file(0, 801), 5}, {"mid", source_file(1, 401), 3}, {"small", source_file(2, 21), 2}};
}

// (source, window) of each row of a batch, checking y is x shifted.
std::vector<std::pair<int, int64_t>> rows_of(const std::pair<Tensor, Tensor>& batch) {
  const auto x = kt::values(batch.first), y = kt::values(batch.second);
  std::vector<std::pair<int, int64_t>> rows;
  for (size_t r = 0; r < x.size() / kT; ++r) {
    const auto first = static_cast<int64_t>(x[r * kT]);
    for (size_t t = 0; t < kT; ++t) {
      REQUIRE(x[r * kT + t] == first + static_cast<int64_t>(t));
      REQUIRE(y[r * kT + t] == first + static_cast<int64_t>(t) + 1);
    }
    REQUIRE((first % 1000) % kT == 0);
    rows.emplace_back(static_cast<int>(first / 1000), (first % 1000) / kT);
  }
  return rows;
}

}  // namespace

TEST_CASE("a mixture draws rows from each source in proportion to its weight, repassing small ones") {
  data::MixtureLoader loader(three_sources(), {.batch_size = 16, .seq_len = kT, .seed = 3});
  CHECK(loader.windows() == std::vector<int64_t>{200, 100, 5});
  CHECK(loader.sources()[0].weight == Approx(0.5));
  std::vector<int64_t> rows(3);
  std::vector<int64_t> small_windows;
  const int64_t batches = 500;
  for (int64_t b = 0; b < batches; ++b)
    for (auto [s, w] : rows_of(loader.next())) {
      ++rows[static_cast<size_t>(s)];
      if (s == 2) small_windows.push_back(w);
    }
  const double n = 16.0 * batches;
  const std::vector<double> weights{0.5, 0.3, 0.2};
  for (size_t s = 0; s < 3; ++s) {
    const double sigma = std::sqrt(n * weights[s] * (1 - weights[s]));
    CHECK(std::abs(static_cast<double>(rows[s]) - n * weights[s]) < 4 * sigma);
    CHECK(loader.tokens_seen()[s] == rows[s] * kT);
  }
  // The small source's 5 windows, every pass a permutation, and not all passes alike.
  std::set<std::vector<int64_t>> orders;
  for (size_t pass = 0; (pass + 1) * 5 <= small_windows.size(); ++pass) {
    std::vector<int64_t> order(small_windows.begin() + 5 * pass, small_windows.begin() + 5 * (pass + 1));
    std::vector<int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    REQUIRE(sorted == std::vector<int64_t>{0, 1, 2, 3, 4});
    orders.insert(order);
  }
  CHECK(orders.size() > 10);
}

TEST_CASE("ranks of a mixture read exactly one process's rows, split by rank") {
  data::MixtureLoader one(three_sources(), {.batch_size = 8, .seq_len = kT, .seed = 5});
  data::MixtureLoader r0(three_sources(), {.batch_size = 4, .seq_len = kT, .rank = 0, .world_size = 2, .seed = 5});
  data::MixtureLoader r1(three_sources(), {.batch_size = 4, .seq_len = kT, .rank = 1, .world_size = 2, .seed = 5});
  for (int b = 0; b < 60; ++b) {
    auto both = rows_of(r0.next());
    const auto second = rows_of(r1.next());
    both.insert(both.end(), second.begin(), second.end());
    REQUIRE(both == rows_of(one.next()));
  }
  CHECK(r0.tokens_seen() == one.tokens_seen());
  CHECK(r1.tokens_seen() == one.tokens_seen());
}

TEST_CASE("a mixture resumed from its position reads on as the uninterrupted one") {
  data::MixtureLoader run(three_sources(), {.batch_size = 6, .seq_len = kT, .seed = 9});
  for (int b = 0; b < 37; ++b) run.next();
  data::MixtureLoader resumed(three_sources(), {.batch_size = 6, .seq_len = kT, .seed = 9});
  resumed.seek(run.position());
  CHECK(resumed.tokens_seen() == run.tokens_seen());
  for (int b = 0; b < 40; ++b) REQUIRE(rows_of(resumed.next()) == rows_of(run.next()));
  CHECK_THROWS_WITH(resumed.seek({1, 0, 0}), Catch::Contains("is not a mixture's"));
}

TEST_CASE("mixture.json names the sources; weights can be overridden; bad ones raise") {
  const std::string big = source_file(0, 801), small = source_file(2, 21);
  write_file_atomic((kDir / "mixture.json").string(),
                    R"({"tokenizer": "tokenizer.model", "sources": [{"name": "big", "train": "s0.bin", "weight": 0.9},
                        {"name": "small", "train": "s2.bin", "weight": 0.1}]})");
  const auto sources = data::read_mixture(kDir.string(), {{"small", 0.3}});
  REQUIRE(sources.size() == 2);
  CHECK(sources[0].file == big);
  CHECK(sources[0].weight == 0.9);
  CHECK(sources[1].weight == 0.3);
  CHECK_THROWS_WITH(data::read_mixture(kDir.string(), {{"web", 1}}), Catch::Contains("a weight for web"));
  CHECK_THROWS_WITH(data::MixtureLoader({{"small", small, 1}}, {.batch_size = 1, .seq_len = 21}),
                    Catch::Contains("too few for one row of 21 (+1)"));
  CHECK_THROWS_WITH(data::MixtureLoader({{"big", big, 0}}, {.batch_size = 1, .seq_len = 4}),
                    Catch::Contains("weights must be > 0"));
  write_file_atomic((kDir / "mixture.json").string(), R"({"sources": [{"name": "big"}]})");
  CHECK_THROWS_WITH(data::read_mixture(kDir.string()), Catch::Contains("is not a mixture"));
}
