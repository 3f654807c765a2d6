// Untrusted bytes: damaged or hostile safetensors files, configs, token files
// and checkpoint directories are refused with a clear kiln::Error, never a
// crash, a hang or a silent acceptance.

#include <cstring>
#include <filesystem>

#include "helpers.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {

// A directory of its own per test case, removed afterwards.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / ("kiln_untrusted_" + name)) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& file) const { return (path / file).string(); }
};

// A safetensors file: the header's length, the header, then data.
std::string safetensors(const std::string& header, const std::string& data) {
  std::string bytes(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  return bytes + header + data;
}

}  // namespace

TEST_CASE("safetensors: the reader is as strict as the format's reference loader") {
  TempDir dir("safetensors");
  const std::string path = dir / "t.safetensors";
  auto refused = [&](const std::string& header, const std::string& data) {
    write_file_atomic(path, safetensors(header, data));
    try {
      load_safetensors(path);
    } catch (const Error& e) {
      CHECK_THAT(e.what(), Catch::Contains(path));
      return std::string(e.what());
    }
    FAIL("accepted: " << header);
    return std::string();
  };
  const std::string sixteen(16, '\1');
  // The baseline is accepted.
  write_file_atomic(path, safetensors(R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", sixteen));
  CHECK(load_safetensors(path).tensors.at("a").sizes() == Shape{2, 2});

  // A shape whose product wraps around an int64 (2^62 x 4 x 4 bytes = 16 mod 2^64).
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,16]}})", sixteen),
             Catch::Contains("more bytes than any file holds"));
  // Numbers that are not non-negative integers.
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[4.7],"data_offsets":[0,16]}})", sixteen),
             Catch::Contains("shape 4.7"));
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[1e30,16]}})", sixteen),
             Catch::Contains("data_offsets 1e+30"));
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[-4],"data_offsets":[0,16]}})", sixteen),
             Catch::Contains("shape -4"));
  CHECK_THAT(refused(R"({"a":{"dtype":7,"shape":[4],"data_offsets":[0,16]}})", sixteen),
             Catch::Contains("has dtype 7"));
  CHECK_THAT(refused(R"({"a":{"shape":[4],"data_offsets":[0,16]}})", sixteen), Catch::Contains("has no dtype"));
  CHECK_THAT(refused(R"({"a":[1,2]})", sixteen), Catch::Contains("has no dtype"));
  // The same name twice (JSON would keep the last).
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                     R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", sixteen),
             Catch::Contains("names 'a' twice"));
  // Gaps, overlaps and bytes no tensor claims.
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", sixteen),
             Catch::Contains("a gap between tensors"));
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
                     R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", sixteen),
             Catch::Contains("tensors overlap"));
  CHECK_THAT(refused(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", sixteen),
             Catch::Contains("trailing bytes"));
  // Metadata is a map of strings, and nothing nests.
  CHECK_THAT(refused(R"({"__metadata__":{"step":12}})", ""), Catch::Contains("metadata 'step' is not a string"));
  CHECK_THAT(refused(R"({"__metadata__":[1]})", ""), Catch::Contains("not a map of strings"));
  const std::string deep = R"({"__metadata__":{"x":)" + std::string(200000, '[') + std::string(200000, ']') + "}}";
  CHECK_THAT(refused(deep, ""), Catch::Contains("nests deeper"));
  // A header past the format's 100 MB is refused before it is read.
  std::string huge(8, '\0');
  const uint64_t n = 100'000'001;
  std::memcpy(huge.data(), &n, 8);
  write_file_atomic(path, huge + "{}");
  CHECK_THROWS_WITH(load_safetensors(path), Catch::Contains("the format allows 100000000"));
}

TEST_CASE("shapes: element counts and byte sizes past 64 bits are refused") {
  CHECK_THROWS_WITH(shape_numel({int64_t{1} << 62, 4}), Catch::Contains("more elements than an int64 counts"));
  CHECK_THROWS_WITH(shape_numel({3, -1}), Catch::Contains("negative size"));
  CHECK_THROWS_WITH(empty({int64_t{1} << 61, 2}, kFloat64), Catch::Contains("more bytes than a size_t counts"));
  CHECK_THROWS_WITH(empty({int64_t{1} << 61}, kFloat32), Catch::Contains("out of host memory"));
}

TEST_CASE("configs: integers are integers, sizes are sane, and a model too large is refused before allocation") {
  const std::string gpt2 = R"({"model_type":"gpt2","vocab_size":100,"n_positions":16,"n_layer":2,"n_head":2,"n_embd":8})";
  CHECK(nn::hf::spec_from_config(gpt2).n_layer == 2);
  auto with = [&](const std::string& key, const std::string& value) {
    std::string json = gpt2;
    const size_t at = json.find("\"" + key + "\":") + key.size() + 3;
    return json.replace(at, json.find_first_of(",}", at) - at, value);
  };
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("n_layer", "1.5")), Catch::Contains("n_layer is 1.5: expected an integer"));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("n_layer", "1e300")), Catch::Contains("n_layer is 1e+300"));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("n_embd", "\"8\"")), Catch::Contains("n_embd is \"8\""));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("vocab_size", "18446744073709551615")),
                    Catch::Contains("expected an integer"));
  // Sizes past any model's, and parameter counts past any machine's, are refused by the spec's check.
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("n_layer", "1000000000000")), Catch::Contains("no model is that large"));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(with("n_embd", "4294967296")), Catch::Contains("no model is that wide"));
  CHECK_THROWS_WITH(nn::hf::spec_from_config(R"({"model_type":"gpt2","vocab_size":100,"n_positions":16,)"
                                             R"("n_layer":2000000000,"n_head":2,"n_embd":65536})"),
                    Catch::Contains("more than any machine holds"));
  // 5 10^12 parameters (20 TB) fit an int64 but no machine: refused before the first layer is allocated.
  const nn::ModelSpec big = nn::hf::spec_from_config(
      R"({"model_type":"gpt2","vocab_size":100,"n_positions":16,"n_layer":100,"n_head":2,"n_embd":65536})");
  Generator gen(1);
  CHECK_THROWS_WITH(nn::TransformerLM(big, gen), Catch::Contains("this machine has"));
  // kiln's own config format reads its integers the same way.
  std::string own = nn::spec_to_json(nn::hf::spec_from_config(gpt2));
  own.replace(own.find("\"n_layer\": 2"), 12, "\"n_layer\": 2.5");
  CHECK_THROWS_WITH(nn::spec_from_json(own), Catch::Contains("n_layer is 2.5"));
}

TEST_CASE("token files: ids outside the vocabulary are refused when the data opens") {
  TempDir dir("tokens");
  data::write_tokens(dir / "train.bin", {1, 2, 3, 99, 4, 5, 6, 7, 8, 9});
  const data::DataLoaderOptions options{.batch_size = 2, .seq_len = 2, .vocab_size = 99};
  CHECK_THROWS_WITH(data::DataLoader({dir / "train.bin"}, options),
                    Catch::Contains("token 3 is 99, outside the vocabulary of 99"));
  data::DataLoader loader({dir / "train.bin"}, {.batch_size = 2, .seq_len = 2, .vocab_size = 100});
  CHECK(loader.batches_per_epoch() == 2);
  // A batch whose token count wraps around an int64 (once a division by zero).
  CHECK_THROWS_WITH(data::DataLoader({dir / "train.bin"}, {.batch_size = int64_t{1} << 62, .seq_len = 4}),
                    Catch::Contains("more than an int64 counts"));
}

TEST_CASE("sampling refuses logits that are NaN, +inf or all -inf") {
  Generator gen(3);
  const double nan = std::nan(""), inf = INFINITY;
  for (const nn::SamplingOptions& o : {nn::SamplingOptions{.temperature = 0}, nn::SamplingOptions{.temperature = 1},
                                       nn::SamplingOptions{.temperature = 0.8, .top_k = 2},
                                       nn::SamplingOptions{.temperature = 1, .top_p = 0.5}}) {
    CHECK_THROWS_WITH(nn::sample_token(tensor({0.5, nan, 1.0}), o, gen), Catch::Contains("logit 1 of 3 is nan"));
    CHECK_THROWS_WITH(nn::sample_token(tensor({inf, 0.0, 1.0}), o, gen), Catch::Contains("logit 0 of 3 is inf"));
    CHECK_THROWS_WITH(nn::sample_token(tensor({-inf, -inf}), o, gen), Catch::Contains("every one of the 2 logits"));
    // -inf masks a token out and is never drawn.
    for (int i = 0; i < 20; ++i) CHECK(nn::sample_token(tensor({-inf, 0.0, -inf}), o, gen) == 1);
  }
}
