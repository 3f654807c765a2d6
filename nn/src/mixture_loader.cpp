#include "kiln/data/mixture_loader.h"

#include <nlohmann/json.hpp>
#include <algorithm>
#include <cmath>
#include <numeric>

#include "kiln/base/philox.h"
#include "kiln/data/shuffle.h"
#include "kiln/ops.h"
#include "kiln/serialize.h"
#include "loader_options.h"

namespace kiln::data {

namespace {

// Draws of the source choice and of the window orders never meet the other loaders'.
constexpr uint64_t kSourceStream = 0x6d69787475726531ull;

}  // namespace

std::vector<MixtureSource> read_mixture(const std::string& dir,
                                        const std::vector<std::pair<std::string, double>>& overrides) {
  const std::string path = dir + "/mixture.json";
  std::vector<MixtureSource> sources;
  try {
    const nlohmann::json j = nlohmann::json::parse(read_file(path));
    for (const nlohmann::json& s : j.at("sources"))
      sources.push_back({s.at("name").get<std::string>(), dir + "/" + s.at("train").get<std::string>(),
                         s.at("weight").get<double>()});
  } catch (const nlohmann::json::exception& e) {
    KILN_FAIL("[read_mixture] {} is not a mixture (sources of name, train and weight): {}", path, e.what());
  }
  for (const auto& [name, weight] : overrides) {
    auto it = std::find_if(sources.begin(), sources.end(), [&](const MixtureSource& s) { return s.name == name; });
    KILN_CHECK(it != sources.end(), "[read_mixture] a weight for {}, which {} does not name", name, path);
    it->weight = weight;
  }
  return sources;
}

MixtureLoader::MixtureLoader(std::vector<MixtureSource> sources, const DataLoaderOptions& options)
    : sources_(std::move(sources)), options_(options) {
  KILN_CHECK(!sources_.empty(), "[MixtureLoader] no sources given");
  check_loader_options(options, "MixtureLoader");
  double total = 0;
  for (const MixtureSource& s : sources_) {
    KILN_CHECK(s.weight > 0 && std::isfinite(s.weight), "[MixtureLoader] source {} has weight {}: weights must be > 0",
               s.name, s.weight);
    total += s.weight;
  }
  for (MixtureSource& s : sources_) {
    s.weight /= total;
    cumulative_.push_back((cumulative_.empty() ? 0 : cumulative_.back()) + s.weight);
    files_.emplace_back(s.file);
    if (options.vocab_size > 0) files_.back().check_vocabulary(options.vocab_size);
    KILN_CHECK(files_.back().size() > options.seq_len, "[MixtureLoader] source {} ({}) holds {} tokens: too few for "
               "one row of {} (+1)", s.name, s.file, files_.back().size(), options.seq_len);
  }
  cumulative_.back() = 1;
  drawn_.assign(sources_.size(), 0);
  order_epoch_.assign(sources_.size(), -1);
  order_.resize(sources_.size());
}

std::vector<int64_t> MixtureLoader::windows() const {
  std::vector<int64_t> n;
  for (const TokenFile& f : files_) n.push_back((f.size() - 1) / options_.seq_len);
  return n;
}

size_t MixtureLoader::source_of(int64_t row) const {
  const double u = philox::uniform_of(philox::bits(options_.seed ^ kSourceStream, 0, static_cast<uint64_t>(row)));
  return static_cast<size_t>(std::upper_bound(cumulative_.begin(), cumulative_.end() - 1, u) - cumulative_.begin());
}

int64_t MixtureLoader::window_start(size_t s, int64_t k) {
  const int64_t n = (files_[s].size() - 1) / options_.seq_len, epoch = k / n;
  if (order_epoch_[s] != epoch) {
    order_[s] = shuffled_order(n, options_.seed ^ kSourceStream, (static_cast<uint64_t>(epoch) << 20) ^ (s + 1));
    order_epoch_[s] = epoch;
  }
  return order_[s][static_cast<size_t>(k % n)] * options_.seq_len;
}

std::pair<Tensor, Tensor> MixtureLoader::next() {
  const int64_t B = options_.batch_size, T = options_.seq_len, rows = B * options_.world_size;
  Tensor x = empty({B, T}, kInt64), y = empty({B, T}, kInt64);
  int64_t* xp = x.data_ptr<int64_t>();
  int64_t* yp = y.data_ptr<int64_t>();
  const int64_t first = batch_ * rows, mine = options_.rank * B;
  for (int64_t r = 0; r < rows; ++r) {
    const size_t s = source_of(first + r);
    const int64_t k = drawn_[s]++;
    if (r < mine || r >= mine + B) continue;
    const TokenFile& file = files_[s];
    const int64_t start = window_start(s, k), i = r - mine;
    for (int64_t t = 0; t < T; ++t) {
      xp[i * T + t] = file[start + t];
      yp[i * T + t] = file[start + t + 1];
    }
  }
  ++batch_;
  return {x.to(options_.device), y.to(options_.device)};
}

void MixtureLoader::seek(const LoaderPosition& pos) {
  KILN_CHECK(pos.epoch == 0 && pos.shard == 0 && pos.batch >= 0,
             "[MixtureLoader] position (epoch {}, shard {}, batch {}) is not a mixture's (batches read, epoch and "
             "shard 0): was the checkpoint trained without the mixture?", pos.epoch, pos.shard, pos.batch);
  std::fill(drawn_.begin(), drawn_.end(), 0);
  const int64_t rows = pos.batch * options_.batch_size * options_.world_size;
  for (int64_t g = 0; g < rows; ++g) ++drawn_[source_of(g)];
  batch_ = pos.batch;
}

std::vector<int64_t> MixtureLoader::tokens_seen() const {
  std::vector<int64_t> tokens;
  for (int64_t rows : drawn_) tokens.push_back(rows * options_.seq_len);
  return tokens;
}

}  // namespace kiln::data
