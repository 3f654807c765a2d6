// Token files, the data loader and the tokenizer.

#include <filesystem>
#include <fstream>
#include <set>

#include "helpers.h"

using namespace kiln;
namespace fs = std::filesystem;

namespace {
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) : path(fs::temp_directory_path() / name) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string operator/(const std::string& f) const { return (path / f).string(); }
};

std::vector<uint32_t> iota_tokens(size_t n, uint32_t mod) {
  std::vector<uint32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = static_cast<uint32_t>(i % mod);
  return t;
}
}  // namespace

TEST_CASE("token files round trip in llm.c's layout") {
  TempDir dir("kiln_test_tokens");
  std::vector<uint32_t> small = iota_tokens(1000, 50257), wide = {1, 70000, 3, 123456789};
  data::write_tokens(dir / "a.bin", small);
  data::write_tokens(dir / "b.bin", wide);
  CHECK(fs::file_size(dir / "a.bin") == 1024 + 2 * 1000);  // uint16
  CHECK(fs::file_size(dir / "b.bin") == 1024 + 4 * 4);     // uint32
  data::TokenFile a(dir / "a.bin"), b(dir / "b.bin");
  REQUIRE(a.size() == 1000);
  for (int64_t i = 0; i < a.size(); ++i) REQUIRE(a[i] == small[i]);
  CHECK(b[1] == 70000);
  CHECK(b[3] == 123456789);
  // the header is llm.c's
  std::ifstream in(dir / "a.bin", std::ios::binary);
  int32_t header[3];
  in.read(reinterpret_cast<char*>(header), sizeof(header));
  CHECK(header[0] == 20240520);
  CHECK(header[1] == 1);
  CHECK(header[2] == 1000);
}

TEST_CASE("a token writer streams pieces into the file write_tokens writes, published only on commit") {
  TempDir dir("kiln_test_token_writer");
  const std::vector<uint32_t> tokens = iota_tokens(3000000, 50257);  // past the writer's 1 MiB buffer
  data::write_tokens(dir / "whole.bin", tokens);
  {
    data::TokenWriter writer(dir / "pieces.bin", 50257);
    for (size_t i = 0; i < tokens.size(); i += 700000)
      writer.append(std::span(tokens).subspan(i, std::min<size_t>(700000, tokens.size() - i)));
    CHECK(!fs::exists(dir / "pieces.bin"));
    writer.commit();
  }
  CHECK(read_file(dir / "pieces.bin") == read_file(dir / "whole.bin"));
  {
    data::TokenWriter wide(dir / "wide.bin", 70001);
    wide.append(std::vector<uint32_t>{70000, 5});
    CHECK_THROWS_WITH(wide.append(std::vector<uint32_t>{70001}),
                      Catch::Contains("token 70001 is not below the vocabulary size 70001"));
    wide.commit();
  }
  const data::TokenFile wide(dir / "wide.bin");
  CHECK(wide.size() == 2);
  CHECK(wide[0] == 70000);
  {
    data::TokenWriter abandoned(dir / "abandoned.bin", 10);
    abandoned.append(std::vector<uint32_t>{1, 2});
  }
  CHECK(!fs::exists(dir / "abandoned.bin"));
  CHECK(!fs::exists(dir / "abandoned.bin.tmp"));
}

TEST_CASE("missing, empty, truncated and foreign token files raise clearly") {
  TempDir dir("kiln_test_tokens_bad");
  CHECK_THROWS_WITH(data::TokenFile(dir / "none.bin"), Catch::Contains("cannot open"));
  std::ofstream(dir / "empty.bin").close();
  CHECK_THROWS_WITH(data::TokenFile(dir / "empty.bin"), Catch::Contains("too short for the 1024-byte header"));
  data::write_tokens(dir / "t.bin", iota_tokens(100, 7));
  fs::resize_file(dir / "t.bin", 1024 + 150);
  CHECK_THROWS_WITH(data::TokenFile(dir / "t.bin"), Catch::Contains("announces 100 tokens"));
  write_file_atomic(dir / "x.bin", std::string(2048, 'x'));
  CHECK_THROWS_WITH(data::TokenFile(dir / "x.bin"), Catch::Contains("is not a token file"));
  data::write_tokens(dir / "zero.bin", {});
  CHECK_THROWS_WITH(data::TokenFile(dir / "zero.bin"), Catch::Contains("holds no tokens"));
  data::write_tokens(dir / "short.bin", iota_tokens(10, 5));
  CHECK_THROWS_WITH(data::DataLoader({dir / "short.bin"}, {.batch_size = 2, .seq_len = 8}),
                    Catch::Contains("too few for one batch of 2 x 8"));
}

TEST_CASE("the data loader cuts (B, T) windows with shifted targets") {
  TempDir dir("kiln_test_loader");
  data::write_tokens(dir / "t.bin", iota_tokens(1000, 60000));
  data::DataLoader loader({dir / "t.bin"}, {.batch_size = 2, .seq_len = 5});
  CHECK(loader.batches_per_epoch() == 99);  // (1000 - 1) / 10
  auto [x, y] = loader.next();
  CHECK(x.sizes() == Shape{2, 5});
  CHECK(kt::values(x) == std::vector<double>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  CHECK(kt::values(y) == std::vector<double>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  CHECK(kt::values(loader.next().first)[0] == 10);
  // wraps into the next epoch after the last full window
  loader.seek({0, 0, 98});
  loader.next();
  CHECK(loader.position() == data::LoaderPosition{1, 0, 0});
  CHECK_THROWS_WITH(loader.seek({0, 0, 99}), Catch::Contains("outside the data"));
}

TEST_CASE("ranks read disjoint windows; shuffling is deterministic and resumable") {
  TempDir dir("kiln_test_loader_ranks");
  data::write_tokens(dir / "a.bin", iota_tokens(4001, 60000));
  data::write_tokens(dir / "b.bin", iota_tokens(2001, 60000));
  std::vector<std::string> files = {dir / "a.bin", dir / "b.bin"};
  std::set<std::pair<int64_t, double>> seen;  // (shard, first token) of every window read
  for (int rank = 0; rank < 3; ++rank) {
    data::DataLoader l(files, {.batch_size = 4, .seq_len = 25, .rank = rank, .world_size = 3, .shuffle = true, .seed = 9});
    CHECK(l.batches_per_epoch() == 40 / 3 + 20 / 3);
    for (int64_t i = 0; i < l.batches_per_epoch(); ++i) {
      int64_t shard = l.position().shard;
      CHECK(seen.insert({shard, kt::values(l.next().first)[0]}).second);
    }
  }
  data::DataLoaderOptions o{.batch_size = 4, .seq_len = 25, .shuffle = true, .seed = 9};
  data::DataLoader a(files, o), b(files, o);
  std::vector<double> order_a, order_b;
  for (int i = 0; i < 100; ++i) order_a.push_back(kt::values(a.next().first)[0]);
  for (int i = 0; i < 100; ++i) order_b.push_back(kt::values(b.next().first)[0]);
  CHECK(order_a == order_b);
  // shuffled: not file order, and a new permutation each epoch
  CHECK(order_a[0] != 0);
  CHECK(std::vector<double>(order_a.begin(), order_a.begin() + 40) !=
        std::vector<double>(order_a.begin() + 60, order_a.begin() + 100));
  // resume: a fresh loader seeked to a saved position continues identically
  data::DataLoader c(files, o);
  for (int i = 0; i < 37; ++i) c.next();
  data::LoaderPosition saved = c.position();
  data::DataLoader d(files, o);
  d.seek(saved);
  for (int i = 0; i < 30; ++i) CHECK(kt::values(c.next().first) == kt::values(d.next().first));
  data::DataLoader other_seed(files, {.batch_size = 4, .seq_len = 25, .shuffle = true, .seed = 10});
  std::vector<double> order_c;
  for (int i = 0; i < 40; ++i) order_c.push_back(kt::values(other_seed.next().first)[0]);
  CHECK(order_c != std::vector<double>(order_a.begin(), order_a.begin() + 40));
}

TEST_CASE("a trained tokenizer round-trips text with newlines") {
  TempDir dir("kiln_test_tokenizer");
  std::vector<std::string> docs;
  const char* words[] = {"kiln", "fires", "clay", "into", "stone", "and", "glass", "at", "night", "slowly"};
  for (int i = 0; i < 400; ++i) {
    std::string d;
    for (int j = 0; j < 12; ++j) d += std::string(words[(i * 7 + j * 3) % 10]) + (j % 5 == 4 ? "\n" : " ");
    docs.push_back(d + std::to_string(i));
  }
  data::Tokenizer::train(docs, dir / "tok", {.vocab_size = 400});
  data::Tokenizer tok(dir / "tok.model");
  CHECK(tok.vocab_size() == 400);
  std::string text = "kiln fires clay\ninto stone, at night 42";
  auto ids = tok.encode(text);
  CHECK(ids.size() < text.size());
  CHECK(tok.decode(ids) == text);
  CHECK(tok.eos_id() == 2);
  CHECK_THROWS_WITH(tok.decode({100000}), Catch::Contains("outside the vocabulary of 400"));
  CHECK_THROWS_WITH(data::Tokenizer(dir / "missing.model"), Catch::Contains("cannot load"));
}

TEST_CASE("a trained tokenizer reserves kiln's special symbols, each one id in text and in ids") {
  TempDir dir("kiln_test_tokenizer_special");
  std::vector<std::string> docs;
  for (int i = 0; i < 300; ++i) docs.push_back(fmt::format("the kiln {} fires clay into stone at night", i));
  data::Tokenizer::train(docs, dir / "tok", {.vocab_size = 400, .sentinels = 4});
  data::Tokenizer tok(dir / "tok.model");
  std::set<uint32_t> ids;
  for (data::Special s : {data::Special::Pad, data::Special::System, data::Special::User, data::Special::Assistant,
                          data::Special::EndOfTurn, data::Special::Cls, data::Special::Sep, data::Special::Mask,
                          data::Special::SMask, data::Special::GMask, data::Special::StartOfPiece,
                          data::Special::EndOfPiece}) {
    const std::string piece(data::special_piece(s));
    INFO(piece);
    const uint32_t id = tok.special_id(s);
    CHECK(tok.encode(piece) == std::vector<uint32_t>{id});
    CHECK(tok.decode({id}) == piece);
    // Inside text as well: never split, never merged with its neighbours.
    auto in_text = tok.encode("clay " + piece + " stone");
    CHECK(std::count(in_text.begin(), in_text.end(), id) == 1);
    CHECK(tok.decode(in_text) == "clay " + piece + " stone");
    ids.insert(id);
  }
  CHECK(ids.size() == 12);
  CHECK(tok.sentinels() == 4);
  CHECK(tok.encode("<extra_id_3>") == std::vector<uint32_t>{tok.sentinel_id(3)});
  CHECK_THROWS_WITH(tok.sentinel_id(4), Catch::Contains("has no '<extra_id_4>': it holds 4 sentinels"));
  CHECK(!tok.piece_id("<|nonexistent|>"));

  data::Tokenizer::train(docs, dir / "plain", {.vocab_size = 400, .special_symbols = false});
  data::Tokenizer plain(dir / "plain.model");
  CHECK_THROWS_WITH(plain.special_id(data::Special::User), Catch::Contains("has no '<|user|>'"));
  CHECK(plain.sentinels() == 0);
}

TEST_CASE("the example loader pads each batch to its longest example and keeps groups together") {
  std::vector<data::ChatExample> examples;
  for (int64_t i = 0; i < 8; ++i) {
    data::ChatExample e;
    for (int64_t t = 0; t <= i % 3; ++t) {
      e.inputs.push_back(10 * i + t);
      e.targets.push_back(t == 0 ? -100 : 10 * i + t + 1);
    }
    examples.push_back(e);
  }
  data::ExampleLoader plain(examples, {.batch_size = 1, .shuffle = false, .pad_id = 7, .group = 2});
  CHECK(plain.batches_per_epoch() == 4);
  auto [x, y, lengths, attention] = plain.next();  // examples 0 (one token) and 1 (two)
  CHECK(kt::values(x) == std::vector<double>{0, 7, 10, 11});
  CHECK(kt::values(y) == std::vector<double>{-100, -100, -100, 12});
  CHECK(kt::values(lengths) == std::vector<double>{1, 2});
  CHECK(plain.trained_tokens() == 7);  // every token but each example's first

  // Shuffled, on two ranks: every group once per epoch, a group's examples together and in order.
  std::multiset<double> seen;
  for (int rank : {0, 1}) {
    data::ExampleLoader loader(examples, {.batch_size = 1, .rank = rank, .world_size = 2, .seed = 3, .group = 2});
    for (int64_t b = 0; b < loader.batches_per_epoch(); ++b) {
      std::vector<double> first = kt::values(loader.next().inputs.narrow(1, 0, 1).reshape({-1}));
      CHECK(first[1] == first[0] + 10);  // the group's second example follows its first
      seen.insert(first[0]);
    }
  }
  CHECK(seen == std::multiset<double>{0, 20, 40, 60});
  // Resuming from a saved position reads the batches the run would have read.
  data::ExampleLoader run(examples, {.batch_size = 1, .seed = 5, .group = 2});
  for (int i = 0; i < 5; ++i) run.next();  // into the second epoch
  data::ExampleLoader resumed(examples, {.batch_size = 1, .seed = 5, .group = 2});
  resumed.seek(run.position());
  for (int i = 0; i < 4; ++i) CHECK(kt::values(resumed.next().inputs) == kt::values(run.next().inputs));
  CHECK_THROWS_WITH(data::ExampleLoader(std::vector<data::ChatExample>(3), {.group = 2}),
                    Catch::Contains("3 examples do not come in groups of 2"));
}

TEST_CASE("BERT's masking: round(15%) of each row (capped at 20 per 128), 80/10/10, never [CLS]/[SEP]/padding") {
  // 400 rows of 128: [CLS] = 1, [SEP] = 2 at the ends, the rest from [10, 1000); every other row padded after 100.
  const int64_t B = 400, T = 128, cls = 1, sep = 2, mask = 3, pad = 0;
  Generator gen(8);
  Tensor tokens = randint(10, 1000, {B, T}, gen);
  std::vector<int64_t> lens;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t length = b % 2 ? 100 : T;
    lens.push_back(length);
    tokens[b][0].fill_(cls);
    tokens[b][length - 1].fill_(sep);
    if (length < T) tokens[b].narrow(0, length, T - length).fill_(pad);
  }
  const data::MaskingOptions options{.mask_id = mask, .vocab_size = 1000, .never_mask = {cls, sep, pad}};
  Generator draw(9);
  const data::MaskedBatch m = data::mask_tokens(tokens, tensor(lens), options, draw);
  const std::vector<double> in = kt::values(tokens), out = kt::values(m.inputs), lab = kt::values(m.labels);
  int64_t masked = 0, replaced = 0, kept = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t chosen = 0;
    for (int64_t t = 0; t < T; ++t) {
      const size_t i = static_cast<size_t>(b * T + t);
      if (lab[i] == -100) {
        CHECK(out[i] == in[i]);  // untouched
        continue;
      }
      ++chosen;
      CHECK(lab[i] == in[i]);
      CHECK((t > 0 && t < lens[b] - 1));  // never [CLS], [SEP] or padding
      if (out[i] == mask) ++masked;
      else if (out[i] == in[i]) ++kept;
      else ++replaced;
    }
    // round(128 x 0.15) = 19 (under the cap of 20); round(100 x 0.15) = 15 (cap round(20 x 100 / 128) = 16).
    CHECK(chosen == (lens[b] == T ? 19 : 15));
  }
  const double total = static_cast<double>(masked + replaced + kept);  // 6800
  CHECK(masked / total == Approx(0.8).margin(0.02));
  CHECK(replaced / total == Approx(0.1).margin(0.015));
  CHECK(kept / total == Approx(0.1).margin(0.015));
  // The same generator state draws the same corruption.
  Generator again(9);
  CHECK(kt::values(data::mask_tokens(tokens, tensor(lens), options, again).inputs) == out);
}

TEST_CASE("T5's span corruption: the layout of a hand-worked mask, sentinels counting down, EOS") {
  const data::SpanCorruptionOptions options{.vocab_size = 100, .eos_id = 1};
  //                               10  11  12  13  14  15  16  17  18  19
  const std::vector<bool> noise{false, true, true, false, false, false, true, false, false, true};
  const data::SpanCorrupted c = data::span_corrupt({10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, noise, options);
  CHECK(c.inputs == std::vector<int64_t>{10, 99, 13, 14, 15, 98, 17, 18, 97, 1});
  CHECK(c.targets == std::vector<int64_t>{99, 11, 12, 98, 16, 97, 19, 1});
  CHECK_THROWS_WITH(data::span_corrupt({1, 2}, {true}, options), Catch::Contains("2 tokens but a noise mask of 1"));
  // A tokenizer's own sentinels, in order.
  const data::SpanCorrupted own = data::span_corrupt({10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, noise,
                                                     {.sentinel_ids = {5, 6, 7}, .eos_id = 2});
  CHECK(own.inputs == std::vector<int64_t>{10, 5, 13, 14, 15, 6, 17, 18, 7, 2});
  CHECK(own.targets == std::vector<int64_t>{5, 11, 12, 6, 16, 7, 19, 2});
  CHECK_THROWS_WITH(data::span_corrupt({10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, noise, {.sentinel_ids = {5, 6}}),
                    Catch::Contains("3 spans need more than the 2 sentinels given"));
}

TEST_CASE("T5's noise masks: the counts of the paper's rule, alternating runs, every layout drawn") {
  const data::SpanCorruptionOptions options{.vocab_size = 32128};
  Generator gen(5);
  // 100 tokens: round(15) noise tokens in round(15 / 3) = 5 spans, the others first.
  std::vector<double> noise_at(100, 0.0);
  const int draws = 2000;
  for (int d = 0; d < draws; ++d) {
    const std::vector<bool> mask = data::random_spans_noise_mask(100, options, gen);
    REQUIRE(mask.size() == 100);
    CHECK(std::count(mask.begin(), mask.end(), true) == 15);
    int spans = 0;
    for (size_t i = 0; i < mask.size(); ++i) {
      spans += mask[i] && (i == 0 || !mask[i - 1]);
      noise_at[i] += mask[i];
    }
    CHECK(spans == 5);
    CHECK_FALSE(mask.front());
    CHECK(mask.back());  // the runs alternate and end with noise
  }
  // Inside the sequence every position is noise about as often (the ends are pinned).
  for (size_t i = 20; i < 80; ++i) CHECK(noise_at[i] / draws == Approx(0.15).margin(0.035));
  // Short sequences still get one span between other tokens.
  Generator small(1);
  const std::vector<bool> two = data::random_spans_noise_mask(2, options, small);
  CHECK(two == std::vector<bool>{false, true});
  // A batch of equal rows: inputs and targets of one length each, the same for the same seed.
  Tensor tokens = randint(2, 1000, {3, 64}, gen);
  Generator a(11), b(11);
  const data::SpanBatch x = data::span_corruption(tokens, options, a), y = data::span_corruption(tokens, options, b);
  // 64 tokens: 10 noise in 3 spans; inputs 64 - 10 + 3 + EOS, targets 3 + 10 + EOS.
  CHECK(x.inputs.sizes() == Shape{3, 58});
  CHECK(x.labels.sizes() == Shape{3, 14});
  CHECK(kt::values(x.inputs) == kt::values(y.inputs));
  CHECK(kt::values(x.labels) == kt::values(y.labels));
}

TEST_CASE("GLM's blank infilling: the layout of a hand-worked example, two position streams, the prefix") {
  const data::BlankInfillingOptions o{.mask_id = 3, .start_id = 4, .end_id = 5};
  // Spans [5, 7) then [1, 3) in part B's order.
  const data::GlmExample ex = data::glm_layout({10, 11, 12, 13, 14, 15, 16, 17, 18, 19}, {{5, 7}, {1, 3}}, o);
  CHECK(ex.prefix == 8);
  CHECK(ex.tokens == std::vector<int64_t>{10, 3, 13, 14, 3, 17, 18, 19, 4, 15, 16, 4, 11, 12});
  CHECK(ex.labels == std::vector<int64_t>{-100, -100, -100, -100, -100, -100, -100, -100, 15, 16, 5, 11, 12, 5});
  CHECK(ex.positions == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 4, 4, 4, 1, 1, 1});
  CHECK(ex.block_positions == std::vector<int64_t>{0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 1, 2, 3});
  // Adjacent spans (two sentences) are two blanks.
  const data::GlmExample two = data::glm_layout({10, 11, 12, 13, 14, 15}, {{1, 3}, {3, 4}}, o);
  CHECK(two.prefix == 5);
  CHECK(two.tokens == std::vector<int64_t>{10, 3, 3, 14, 15, 4, 11, 12, 4, 13});
  CHECK(two.labels == std::vector<int64_t>{-100, -100, -100, -100, -100, 11, 12, 5, 13, 5});
  CHECK(two.positions == std::vector<int64_t>{0, 1, 2, 3, 4, 1, 1, 1, 2, 2});
  CHECK(two.block_positions == std::vector<int64_t>{0, 0, 0, 0, 0, 1, 2, 3, 1, 2});
  CHECK_THROWS_WITH(data::glm_layout({1, 2, 3, 4}, {{0, 2}, {1, 3}}, o), Catch::Contains("overlaps another"));
}

TEST_CASE("GLM's gap sentences: whole sentences, shuffled, until they cover the ratio; EOS in none") {
  // Sentences end at id 7; 9 is EOS: [0, 3), [3, 5), [6, 10), [10, 11).
  const std::vector<int64_t> tokens{1, 2, 7, 3, 7, 9, 4, 5, 6, 7, 8};
  std::vector<bool> ends(9, false);
  ends[7] = true;
  const std::set<std::pair<int64_t, int64_t>> sentences{{0, 3}, {3, 5}, {6, 10}, {10, 11}};
  data::BlankInfillingOptions o{.mask_id = 3, .start_id = 4, .end_id = 5, .ratio = 0.5};
  Generator gen(5);
  std::set<std::pair<int64_t, int64_t>> firsts;
  for (int d = 0; d < 200; ++d) {
    const auto spans = data::sentence_spans(tokens, ends, 9, o, gen);
    REQUIRE(!spans.empty());
    firsts.insert(spans.front());
    int64_t covered = 0;
    for (size_t i = 0; i < spans.size(); ++i) {
      CHECK(sentences.count(spans[i]) == 1);
      if (i + 1 < spans.size()) CHECK(covered + spans[i].second - spans[i].first < 5);  // int(0.5 x 11)
      covered += spans[i].second - spans[i].first;
    }
    CHECK(covered >= 5);
    CHECK(std::set<std::pair<int64_t, int64_t>>(spans.begin(), spans.end()).size() == spans.size());
    data::glm_layout(tokens, spans, o);  // a valid layout
  }
  CHECK(firsts == sentences);  // every sentence comes first sometimes
  // All of them to cover 99%; a sentence of max_span tokens or more is passed over.
  o.ratio = 0.99;
  CHECK(data::sentence_spans(tokens, ends, 9, o, gen).size() == 4);
  o.max_span = 4;
  for (const auto& span : data::sentence_spans(tokens, ends, 9, o, gen)) CHECK(span != std::pair<int64_t, int64_t>{6, 10});
}

TEST_CASE("GLM's spans: Poisson(3) lengths covering 15%, apart, shuffled; the generation span runs to the end") {
  const data::BlankInfillingOptions o{.mask_id = 3, .start_id = 4, .end_id = 5};
  Generator gen(3);
  double lengths = 0, spans = 0;
  bool shuffled = false;
  for (int d = 0; d < 500; ++d) {
    const auto drawn = data::blank_spans(200, o, gen);
    int64_t covered = 0;
    for (const auto& [s, e] : drawn) covered += e - s;
    CHECK(covered >= 30);  // int(0.15 x 200)
    CHECK(covered < 30 + o.max_span);  // the last span drawn crossed the line
    auto in_text = drawn;
    std::sort(in_text.begin(), in_text.end());
    shuffled = shuffled || in_text != drawn;
    for (size_t i = 0; i < in_text.size(); ++i) {
      CHECK(in_text[i].first < in_text[i].second);
      CHECK(in_text[i].second <= 200);
      if (i > 0) CHECK(in_text[i - 1].second < in_text[i].first);
    }
    lengths += static_cast<double>(covered);
    spans += static_cast<double>(drawn.size());
  }
  CHECK(shuffled);
  // Poisson(3) without zero: mean 3 / (1 - e^-3) = 3.157.
  CHECK(lengths / spans == Approx(3.157).margin(0.25));
  for (int d = 0; d < 100; ++d) {
    const auto [start, end] = data::generation_span(40, o, gen);
    CHECK(end == 40);
    CHECK(end - start >= 20);
    CHECK(end - start <= 38);
  }
}
