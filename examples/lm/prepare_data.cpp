// prepare_data: text files -> clean documents -> a sentencepiece BPE tokenizer
// -> train.bin / val.bin token files in llm.c's layout.
//
//   prepare_data --out data/fortunes                 # Debian's fortunes (default corpus)
//   prepare_data --input book.txt notes/ --out data/mine --vocab 8192
//   prepare_data --input corpus/ --tokenizer existing.model --out data/x
//   prepare_data --input crawl/part-0.jsonl.gz --text-field content --out data/y
//
// Cleaning: CRLF -> LF, trailing spaces and blank edge lines removed, empty
// documents dropped, Unicode NFKC normalization (sentencepiece's normalizer, by
// an encode/decode round trip), exact duplicates (after normalization) dropped,
// then near-duplicates: documents whose 5-word shingle sets have a Jaccard
// similarity of --near-duplicates or more, found by MinHash and LSH and
// verified exactly (kiln/data/minhash.h); the copy in the earliest input stays.
// Documents are shuffled with a seeded Philox permutation and split into
// train and validation; each is followed by the tokenizer's end-of-text id.
// A tokenizer trained here reserves kiln's special symbols (padding, chat
// roles, [CLS]/[SEP]/[MASK], GLM's and T5's; kiln/data/tokenizer.h), each one id.

#include <CLI/CLI.hpp>
#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>

#include <kiln/kiln.h>

#include "../program.h"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  CLI::App app{"Prepare token files (llm.c layout) and a tokenizer from text"};
  std::vector<std::string> inputs{"/usr/share/games/fortunes"};
  std::string out = "data/fortunes", tokenizer_path, text_field = "text";
  int vocab = 2048;
  double val_fraction = 0.05, near_duplicates = 0.8;
  int sentinels = 16;
  uint64_t seed = 1337;
  app.add_option("--input", inputs, "text files or directories (plain text, *.jsonl; either may be gzipped)")
      ->capture_default_str();
  app.add_option("--text-field", text_field, "the field of each JSON line that holds its document")
      ->capture_default_str();
  app.add_option("--out", out, "output directory")->capture_default_str();
  app.add_option("--vocab", vocab, "vocabulary size of a newly trained tokenizer")
      ->check(program::positive)->capture_default_str();
  app.add_option("--tokenizer", tokenizer_path, "use this sentencepiece .model instead of training one");
  app.add_option("--sentinels", sentinels, "T5 sentinels (<extra_id_N>) a newly trained tokenizer reserves")
      ->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--val-fraction", val_fraction, "share of documents held out")
      ->check(program::in_range(0, 0.5, "a number in [0, 0.5]"))->capture_default_str();
  app.add_option("--near-duplicates", near_duplicates,
                 "drop documents this similar (Jaccard of 5-word shingles) to an earlier one; 0 keeps them")
      ->check(program::in_range(0, std::nextafter(1.0, 0.0), "a number in [0, 1)"))->capture_default_str();
  app.add_option("--seed", seed, "shuffle seed")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;

  return program::run("prepare_data", [&] {
    fs::create_directories(out);
    int64_t read = 0, empty = 0;
    std::vector<std::string> docs;
    std::set<std::string> seen;
    kiln::data::DocumentStream stream(kiln::data::text_files(inputs), {.text_field = text_field});
    for (kiln::data::StreamedDocument d; stream.next(d);) {
      ++read;
      std::string c = kiln::data::clean_document(d.text);
      if (c.empty()) ++empty;
      else if (seen.insert(c).second) docs.push_back(std::move(c));
    }
    fmt::print("read {} documents: {} empty, {} exact duplicates, {} kept\n", read, empty,
               read - empty - static_cast<int64_t>(docs.size()), docs.size());
    if (near_duplicates > 0) {
      const auto found = kiln::data::find_near_duplicates(docs, {.threshold = near_duplicates});
      std::vector<std::string> kept;
      for (size_t d = 0; d < docs.size(); ++d)
        if (found.cluster[d] == d) kept.push_back(std::move(docs[d]));
      docs = std::move(kept);
      fmt::print("near-duplicates (Jaccard >= {}; MinHash LSH, {} bands x {} rows): {} dropped from {} clusters, "
                 "{} candidate pairs verified, {} kept\n",
                 near_duplicates, found.cut.bands, found.cut.rows, found.duplicates, found.clusters, found.compared,
                 docs.size());
    }

    const std::string model = out + "/tokenizer.model";
    if (tokenizer_path.empty()) {
      fmt::print("training a {}-token BPE tokenizer on {} documents\n", vocab, docs.size());
      kiln::data::Tokenizer::train(docs, out + "/tokenizer", {.vocab_size = vocab, .sentinels = sentinels});
    } else {
      fs::copy_file(tokenizer_path, model, fs::copy_options::overwrite_existing);
    }
    kiln::data::Tokenizer tok(model);

    // NFKC through sentencepiece's normalizer, then drop what became a duplicate.
    std::vector<std::vector<uint32_t>> encoded;
    std::set<std::string> normalized;
    for (const std::string& d : docs) {
      std::vector<uint32_t> ids = tok.encode(d);
      if (normalized.insert(tok.decode(ids)).second) encoded.push_back(std::move(ids));
    }
    fmt::print("{} documents after normalization\n", encoded.size());

    // A seeded Fisher-Yates shuffle from Philox bits, then the split.
    std::vector<size_t> order(encoded.size());
    std::iota(order.begin(), order.end(), 0);
    for (size_t i = order.size(); i-- > 1;)
      std::swap(order[i], order[kiln::philox::bits(seed, 0, i) % (i + 1)]);
    size_t n_val = std::max<size_t>(1, static_cast<size_t>(val_fraction * static_cast<double>(order.size())));
    std::vector<uint32_t> train, val;
    for (size_t k = 0; k < order.size(); ++k) {
      auto& dst = k < n_val ? val : train;
      const auto& ids = encoded[order[k]];
      dst.insert(dst.end(), ids.begin(), ids.end());
      dst.push_back(tok.eos_id());
    }
    kiln::data::write_tokens(out + "/train.bin", train);
    kiln::data::write_tokens(out + "/val.bin", val);
    fmt::print("wrote {}/train.bin ({} tokens), {}/val.bin ({} tokens), {} (vocabulary {})\n", out, train.size(), out,
               val.size(), model, tok.vocab_size());
    return 0;
  });
}
