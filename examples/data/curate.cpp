// curate: GPT-3's data pipeline (appendix A) for text larger than memory, on
// one process or many (mpirun), from named sources to a mixture of token files.
//
//   curate --source debian=/usr/share/doc,/usr/share/common-licenses,/usr/share/man/man7 \
//          --source fortunes=/usr/share/games/fortunes --unfiltered fortunes \
//          --reference /usr/share/games/fortunes --out data/debian
//   mpirun -np 4 curate ...                    # the same files, a quarter of the work each
//
// Stages, each resumable (a killed run continues where it stopped when run
// again with the same command):
//  1. filter, file by file, the files shared among the ranks by size: read
//     (plain text, a file a document unless --paragraphs; fortune files, a
//     fortune a document; JSON lines; gzip; kiln/data/document_stream.h), clean, then
//     for filtered sources Gopher's rules and the quality classifier (trained
//     on --reference against the raw sources, or --classifier) with GPT-3's
//     Pareto rule; the kept documents, their MinHash LSH band keys and a hash
//     of their text go to OUT/work.
//  2. deduplicate across sources and files: band keys shuffled to the ranks
//     that own their buckets, candidates verified (equal texts; Jaccard of
//     shingles at --near-duplicates), clusters joined; the copy from the
//     earliest source (then file, then place) stays.
//  3. tokenize, file by file (a tokenizer trained on a sample of what is
//     kept, or --tokenizer); each document goes to validation with
//     probability --val-fraction.
//  4. write OUT/train-<source>.bin per source and OUT/val.bin (llm.c's
//     layout), OUT/mixture.json (the sources' files, tokens and sampling
//     weights, for train --data OUT) and the report: OUT/report.md,
//     OUT/report.json and the score histogram OUT/scores.png.
// OUT must be a directory every rank sees (a shared file system on a cluster).

#include <CLI/CLI.hpp>
#define XXH_INLINE_ALL  // header-only
#include <xxhash.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <unistd.h>

#include <kiln/kiln.h>

#include "../program.h"
#include "curate_counts.h"
#include "curate_store.h"
#include "distributed_dedup.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace curate;

namespace {

struct Source {
  std::string name;
  std::vector<std::string> paths;
  double weight = 0;  // in the mixture; 0: its share of the tokens
  bool filtered = true;
};

struct Args {
  std::vector<std::string> sources, weights, unfiltered, reference;
  std::string out = "data/curated", classifier, tokenizer, text_field = "text";
  double max_document_mb = 1;
  bool paragraphs = false;
  int64_t classifier_sample_mb = 32, min_words = 50, vocab = 8192, tokenizer_sample_mb = 32;
  double alpha = 9, near_duplicates = 0.8, val_fraction = 0.01;
  int permutations = 128, shingle_words = 5;
  uint64_t seed = 1337;
};

// An input file and its source, in priority order (sources as given, files by name).
struct Input {
  std::string path;
  size_t source;
  int64_t bytes;
};

std::vector<Source> parse_sources(const Args& a) {
  std::vector<Source> sources;
  for (const std::string& spec : a.sources) {
    const size_t eq = spec.find('=');
    KILN_CHECK(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(),
               "[curate] --source {}: expected NAME=PATH[,PATH...]", spec);
    Source s{spec.substr(0, eq), {}};
    for (size_t start = eq + 1; start <= spec.size();) {
      const size_t comma = std::min(spec.find(',', start), spec.size());
      if (comma > start) s.paths.push_back(spec.substr(start, comma - start));
      start = comma + 1;
    }
    for (const Source& other : sources) KILN_CHECK(other.name != s.name, "[curate] source {} is given twice", s.name);
    sources.push_back(std::move(s));
  }
  const auto named = [&](const std::string& name, const char* option) -> Source& {
    for (Source& s : sources)
      if (s.name == name) return s;
    KILN_FAIL("[curate] {} {}: no --source of that name", option, name);
  };
  for (const std::string& spec : a.weights) {
    const auto [name, weight] = program::named_weight(spec, "[curate] --weight");
    named(name, "--weight").weight = weight;
  }
  for (const std::string& name : a.unfiltered) named(name, "--unfiltered").filtered = false;
  return sources;
}

// The files of each rank: the largest first, each to the rank with the fewest bytes so far.
std::vector<size_t> my_files(const std::vector<Input>& inputs, int rank, int ranks) {
  std::vector<size_t> order(inputs.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return inputs[a].bytes > inputs[b].bytes; });
  std::vector<int64_t> load(static_cast<size_t>(ranks));
  std::vector<size_t> mine;
  for (size_t f : order) {
    const auto r = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[r] += inputs[f].bytes;
    if (static_cast<int>(r) == rank) mine.push_back(f);
  }
  std::sort(mine.begin(), mine.end());
  return mine;
}

// A line of progress every two seconds on the leading rank: its own share of
// the stage's bytes, MB/s and ETA.
class Progress {
 public:
  Progress(const char* stage, int64_t total, bool lead) : stage_(stage), total_(total), lead_(lead) {}
  void update(int64_t done, bool last = false) {
    const auto now = std::chrono::steady_clock::now();
    if (!lead_ || (!last && now - printed_ < std::chrono::seconds(2))) return;
    printed_ = now;
    const double seconds = std::chrono::duration<double>(now - start_).count(), mb = 1e-6 * static_cast<double>(done);
    const double rate = seconds > 0 ? mb / seconds : 0;
    fmt::print("{:>8}: {:8.1f} / {:.1f} MB ({:3.0f}%) | {:6.1f} MB/s | ETA {:.0f}s\n", stage_, mb,
               1e-6 * static_cast<double>(total_), total_ ? 100.0 * static_cast<double>(done) / total_ : 100.0, rate,
               rate > 0 ? (1e-6 * static_cast<double>(total_) - mb) / rate : 0.0);
    std::fflush(stdout);
  }

 private:
  const char* stage_;
  int64_t total_;
  bool lead_;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), printed_{};
};

kiln::data::DocumentStreamOptions stream_options(const Args& a) {
  return {.text_field = a.text_field,
          .max_document_bytes = static_cast<int64_t>(a.max_document_mb * (1 << 20)),
          .whole_files = !a.paragraphs};
}

uint64_t text_hash(const std::string& text) { return XXH3_64bits(text.data(), text.size()); }

// Up to `budget` bytes of cleaned documents, an even share from the start of each file.
std::vector<std::string> sample(const std::vector<std::string>& files, int64_t budget, const Args& a) {
  std::vector<std::string> docs;
  const int64_t per_file = budget / std::max<int64_t>(1, static_cast<int64_t>(files.size()));
  for (const std::string& f : files) {
    kiln::data::DocumentStream stream({f}, stream_options(a));
    int64_t taken = 0;
    for (kiln::data::StreamedDocument d; stream.next(d);) {
      std::string c = kiln::data::clean_document(d.text);
      if (c.empty()) continue;
      if (taken + static_cast<int64_t>(c.size()) > per_file) break;
      taken += static_cast<int64_t>(c.size());
      docs.push_back(std::move(c));
    }
  }
  return docs;
}

// The classifier: trained by the leading rank on up to --classifier-sample-mb
// of the reference corpus against as much of the filtered sources, saved in
// OUT/work for the other ranks and a resumed run.
std::optional<kiln::data::QualityClassifier> classifier(const Args& a, const std::vector<Source>& sources,
                                                        const std::vector<Input>& inputs, const std::string& work,
                                                        kiln::dist::ProcessGroup& world) {
  if (!a.classifier.empty()) return kiln::data::QualityClassifier::load(a.classifier);
  if (a.reference.empty()) return std::nullopt;
  const std::string saved = work + "/classifier.safetensors";
  if (world.rank() == 0 && !fs::exists(saved)) {
    std::vector<std::string> raw_files;
    for (const Input& in : inputs)
      if (sources[in.source].filtered) raw_files.push_back(in.path);
    const int64_t budget = a.classifier_sample_mb << 20;
    const std::vector<std::string> reference = sample(kiln::data::text_files(a.reference), budget, a);
    const std::vector<std::string> raw = sample(raw_files, budget, a);
    KILN_CHECK(!reference.empty() && !raw.empty(),
               "[curate] the classifier needs documents on both sides: {} reference, {} raw", reference.size(),
               raw.size());
    fmt::print("classifier: training on {} reference and {} raw documents\n", reference.size(), raw.size());
    kiln::data::QualityClassifier::train(reference, raw, {.seed = a.seed}).save(saved);
  }
  world.barrier();
  return kiln::data::QualityClassifier::load(saved);
}

// Stage 1 for one input file.
void filter_file(size_t f, const Input& in, const Source& source, const Args& a,
                         const std::optional<kiln::data::QualityClassifier>& quality, const kiln::data::MinHasher& hasher,
                         kiln::data::LshBands cut, const std::string& work,
                         const std::function<void(int64_t)>& progress) {
  const FileRecords paths(work, f);
  FilterCounts c;
  FileRecordWriter records(paths);
  kiln::data::TextFilterOptions rules;
  rules.min_words = a.min_words;
  kiln::data::DocumentStream stream({in.path}, stream_options(a));
  std::vector<uint64_t> no_bands;
  for (kiln::data::StreamedDocument d; stream.next(d);) {
    ++c.documents;
    c.bytes += d.bytes;
    progress(stream.bytes_read());
    if (d.too_long) {
      ++c.too_long;
      continue;
    }
    const std::string text = kiln::data::clean_document(d.text);
    if (text.empty()) {
      ++c.empty;
      continue;
    }
    if (source.filtered) {
      if (const auto broken = kiln::data::broken_text_rule(text, rules)) {
        ++c.rules[static_cast<size_t>(*broken)];
        continue;
      }
      if (quality) {
        const double score = quality->score(text);
        ++c.scores[FilterCounts::bin(score)];
        if (!kiln::data::keep_by_quality(score, a.alpha, a.seed, doc_key(f, d.index))) {
          ++c.low_quality;
          continue;
        }
        ++c.kept_scores[FilterCounts::bin(score)];
      }
    }
    ++c.kept;
    c.kept_bytes += static_cast<int64_t>(text.size());
    records.add(d.index, text, text_hash(text),
                cut.bands ? kiln::data::band_keys(hasher.signature(text), cut) : no_bands);
  }
  records.publish();
  kiln::write_file_atomic(paths.counts, json(c).dump());
}

// The documents deduplication drops: (key, exact copy) sorted by key, kept in OUT/work/dropped.bin.
using Dropped = std::vector<std::pair<uint64_t, uint64_t>>;

bool is_dropped(const Dropped& dropped, uint64_t key) {
  const auto it = std::lower_bound(dropped.begin(), dropped.end(), std::pair<uint64_t, uint64_t>{key, 0});
  return it != dropped.end() && it->first == key;
}

// Stage 2 on every rank; the leading rank writes the dropped documents and
// the stage's summary (with the largest clusters and excerpts of them).
json deduplicate(const Args& a, const std::vector<Input>& inputs, const std::vector<Source>& sources,
                 const std::vector<size_t>& mine, kiln::data::LshBands cut, const std::string& work,
                 kiln::dist::ProcessGroup& world) {
  std::vector<BucketEntry> entries;
  for (size_t f : mine) {
    const KeyRows rows(work, f, cut.bands);
    for (size_t r = 0; r < rows.size(); ++r)
      for (size_t b = 0; b <= static_cast<size_t>(cut.bands); ++b)
        entries.push_back({b, rows.bucket(r, b), rows.key(r), rows.offset(r)});
  }
  int64_t compared = 0;
  const std::vector<VerifiedPair> pairs =
      verified_pairs(world, std::move(entries), work,
                     {.threshold = a.near_duplicates, .shingle_words = a.shingle_words}, compared);
  kiln::Tensor total_compared = kiln::tensor(std::vector<int64_t>{compared});
  world.all_reduce(total_compared);

  const std::map<uint64_t, uint64_t> roots = cluster_roots(pairs);
  std::set<uint64_t> exact_copies;
  for (const VerifiedPair& p : pairs)
    if (p.exact) exact_copies.insert(p.later);
  Dropped dropped;
  std::map<uint64_t, std::vector<uint64_t>> clusters;
  for (const auto& [doc, root] : roots) {
    clusters[root].push_back(doc);
    if (doc != root) dropped.emplace_back(doc, exact_copies.count(doc));
  }
  json summary = {{"candidate_pairs_compared", total_compared.data_ptr<int64_t>()[0]},
                  {"verified_pairs", pairs.size()},
                  {"clusters", clusters.size()},
                  {"dropped", dropped.size()},
                  {"exact_copies", std::count_if(dropped.begin(), dropped.end(), [](auto& d) { return d.second; })},
                  {"bands", cut.bands},
                  {"rows", cut.rows}};
  if (world.rank() == 0) {
    std::vector<int64_t> per_source(sources.size());
    for (const auto& d : dropped) ++per_source[inputs[file_of(d.first)].source];
    for (size_t s = 0; s < sources.size(); ++s) summary["dropped_per_source"][sources[s].name] = per_source[s];
    std::vector<std::pair<size_t, uint64_t>> largest;  // (members, root)
    for (const auto& [root, members] : clusters) largest.emplace_back(members.size(), root);
    std::stable_sort(largest.begin(), largest.end(), [](auto& x, auto& y) { return x.first > y.first; });
    largest.resize(std::min<size_t>(largest.size(), 5));
    DocReader reader(work);
    summary["largest_clusters"] = json::array();
    for (const auto& [size, root] : largest) {
      json cluster = {{"documents", size}, {"examples", json::array()}};
      for (size_t m = 0; m < std::min<size_t>(2, size); ++m) {
        const uint64_t doc = clusters[root][m];
        const KeyRows rows(work, file_of(doc), cut.bands);
        for (size_t r = 0; r < rows.size(); ++r)
          if (rows.key(r) == doc) {
            std::string text = reader.read(file_of(doc), rows.offset(r));
            if (text.size() > 200) text.replace(200, text.npos, "...");
            cluster["examples"].push_back(
                {{"file", inputs[file_of(doc)].path}, {"document", doc & 0xffffffffu}, {"text", text}});
          }
      }
      summary["largest_clusters"].push_back(cluster);
    }
    std::string bytes(dropped.size() * 16, '\0');
    std::memcpy(bytes.data(), dropped.data(), bytes.size());
    kiln::write_file_atomic(work + "/dropped.bin", bytes);
    kiln::write_file_atomic(work + "/dedup.json", summary.dump(1));
  }
  world.barrier();
  return summary;
}

Dropped read_dropped(const std::string& work) {
  const std::string bytes = kiln::read_file(work + "/dropped.bin");
  Dropped dropped(bytes.size() / 16);
  std::memcpy(dropped.data(), bytes.data(), dropped.size() * 16);
  return dropped;
}

// The tokenizer: --tokenizer, or one trained by the leading rank on up to
// tokenizer_sample_mb of the kept documents (an even share of each file).
kiln::data::Tokenizer tokenizer(const Args& a, const std::vector<Input>& inputs, const Dropped& dropped,
                                kiln::data::LshBands cut, const std::string& work, kiln::dist::ProcessGroup& world) {
  const std::string model = a.out + "/tokenizer.model";
  if (world.rank() == 0 && !fs::exists(model)) {
    if (!a.tokenizer.empty()) {
      kiln::write_file_atomic(model, kiln::read_file(a.tokenizer));
    } else {
      const int64_t per_file = std::max<int64_t>(1, (a.tokenizer_sample_mb << 20) / static_cast<int64_t>(inputs.size()));
      std::vector<std::string> sample;
      for (size_t f = 0; f < inputs.size(); ++f) {
        const KeyRows rows(work, f, cut.bands);
        DocReader reader(work);
        int64_t taken = 0;
        for (size_t r = 0; r < rows.size() && taken < per_file; ++r) {
          if (is_dropped(dropped, rows.key(r))) continue;
          sample.push_back(reader.read(f, rows.offset(r)));
          taken += static_cast<int64_t>(sample.back().size());
        }
      }
      KILN_CHECK(!sample.empty(), "[curate] nothing is left to train a tokenizer on");
      fmt::print("tokenizer: training a {}-token BPE on {} documents\n", a.vocab, sample.size());
      kiln::data::Tokenizer::train(sample, work + "/tokenizer", {.vocab_size = static_cast<int>(a.vocab)});
      kiln::write_file_atomic(model, kiln::read_file(work + "/tokenizer.model"));
    }
  }
  world.barrier();
  return kiln::data::Tokenizer(model);
}

// Stage 3 for one file: its kept, undropped documents as token streams
// (uint32, each document followed by end-of-text) for training and validation.
void tokenize_file(size_t f, const Args& a, const kiln::data::Tokenizer& tok, const Dropped& dropped,
                   kiln::data::LshBands cut, const std::string& work) {
  const FileRecords paths(work, f);
  const KeyRows rows(work, f, cut.bands);
  kiln::AtomicFileWriter train(paths.train), val(paths.val);
  int64_t train_documents = 0, val_documents = 0;
  DocReader reader(work);
  for (size_t r = 0; r < rows.size(); ++r) {
    if (is_dropped(dropped, rows.key(r))) continue;
    std::vector<uint32_t> ids = tok.encode(reader.read(f, rows.offset(r)));
    ids.push_back(tok.eos_id());
    const bool held_out = kiln::philox::uniform_of(kiln::philox::bits(a.seed, 1, rows.key(r))) < a.val_fraction;
    (held_out ? val : train).write(ids.data(), ids.size() * sizeof(uint32_t));
    ++(held_out ? val_documents : train_documents);
  }
  const json counts = {{"train_documents", train_documents}, {"val_documents", val_documents},
                       {"train_tokens", train.size() / sizeof(uint32_t)}, {"val_tokens", val.size() / sizeof(uint32_t)}};
  train.commit();
  val.commit();
  kiln::write_file_atomic(paths.tokens, counts.dump());
}

// Appends a file of raw uint32 tokens to a token file, a piece at a time.
void append_tokens(kiln::data::TokenWriter& out, const std::string& path) {
  std::FILE* in = std::fopen(path.c_str(), "rb");
  KILN_CHECK(in != nullptr, "[curate] cannot open {}", path);
  std::vector<uint32_t> piece(1 << 20);
  for (size_t n; (n = std::fread(piece.data(), sizeof(uint32_t), piece.size(), in)) > 0;)
    out.append(std::span(piece).first(n));
  std::fclose(in);
}

// The histogram of classifier scores as a PNG, when gnuplot is installed.
std::string plot_scores(const FilterCounts& total, const std::string& out) {
  const std::string data = out + "/scores.dat", png = out + "/scores.png";
  std::string rows;
  for (int b = 0; b < kScoreBins; ++b)
    rows += fmt::format("{} {} {}\n", (b + 0.5) / kScoreBins, total.scores[static_cast<size_t>(b)],
                        total.kept_scores[static_cast<size_t>(b)]);
  kiln::write_file_atomic(data, rows);
  const std::string script = fmt::format(
      "set terminal pngcairo size 900,540 enhanced font 'sans,11'; set output '{}'\n"
      "set title 'kiln curate: quality scores of documents that passed the text rules'\n"
      "set xlabel 'P(reference | document)'; set ylabel 'documents'; set style fill solid 0.6; set boxwidth {}\n"
      "set grid ytics; set key top center; set xrange [0:1]; set logscale y; set yrange [0.8:*]\n"
      "plot '{}' using 1:($2 > 0 ? $2 : 1/0) with boxes title 'scored', "
      "'' using 1:($3 > 0 ? $3 : 1/0) with boxes title 'kept (Pareto rule)'",
      png, 1.0 / kScoreBins, data);
  const std::string script_path = out + "/scores.gp";
  kiln::write_file_atomic(script_path, script);
  const int status = std::system(fmt::format("gnuplot '{}' 2>/dev/null", script_path).c_str());
  fs::remove(data);
  fs::remove(script_path);
  return status == 0 ? png : "";
}

// Stage 4 and the report, on the leading rank.
void write_outputs(const Args& a, const std::vector<Source>& sources, const std::vector<Input>& inputs,
                   const std::vector<FilterCounts>& counts, const std::vector<json>& tokens, const json& dedup,
                   const kiln::data::Tokenizer& tok, const std::string& work) {
  std::vector<FilterCounts> per_source(sources.size());
  FilterCounts total;
  std::vector<int64_t> train_tokens(sources.size()), documents(sources.size());
  for (size_t f = 0; f < inputs.size(); ++f) {
    per_source[inputs[f].source] += counts[f];
    total += counts[f];
    train_tokens[inputs[f].source] += tokens[f]["train_tokens"].get<int64_t>();
    documents[inputs[f].source] += tokens[f]["train_documents"].get<int64_t>() + tokens[f]["val_documents"].get<int64_t>();
  }
  const int64_t all_tokens = std::accumulate(train_tokens.begin(), train_tokens.end(), int64_t{0});
  double given = 0;
  for (const Source& s : sources) given += s.weight;
  json mixture = {{"tokenizer", "tokenizer.model"}, {"val", "val.bin"}, {"sources", json::array()}};
  kiln::data::TokenWriter val(a.out + "/val.bin", tok.vocab_size());
  for (size_t s = 0; s < sources.size(); ++s) {
    const std::string name = "train-" + sources[s].name + ".bin";
    if (train_tokens[s] == 0) {
      fmt::print("curate: source {} kept no training tokens; it is left out of the mixture\n", sources[s].name);
      continue;
    }
    kiln::data::TokenWriter train(a.out + "/" + name, tok.vocab_size());
    for (size_t f = 0; f < inputs.size(); ++f)
      if (inputs[f].source == s) {
        const FileRecords paths(work, f);
        append_tokens(train, paths.train);
        append_tokens(val, paths.val);
      }
    train.commit();
    const double natural = static_cast<double>(train_tokens[s]) / static_cast<double>(all_tokens);
    mixture["sources"].push_back({{"name", sources[s].name},
                                  {"train", name},
                                  {"tokens", train_tokens[s]},
                                  {"documents", documents[s]},
                                  {"weight", given > 0 ? sources[s].weight / given : natural}});
  }
  KILN_CHECK(!mixture["sources"].empty(), "[curate] every document was filtered out: nothing to write");
  val.commit();

  json report = {{"sources", json::object()}, {"total", total}, {"dedup", dedup}, {"mixture", mixture}};
  for (size_t s = 0; s < sources.size(); ++s) report["sources"][sources[s].name] = per_source[s];
  const bool scored = std::accumulate(total.scores.begin(), total.scores.end(), int64_t{0}) > 0;
  const std::string png = scored ? plot_scores(total, a.out) : "";
  std::string md = "# curate report\n\n## Filtering\n\n| source | documents | MB | too long | empty |";
  for (int r = 0; r < kiln::data::kTextRules; ++r)
    md += fmt::format(" {} |", kiln::data::text_rule_name(static_cast<kiln::data::TextRule>(r)));
  md += " low quality | kept | MB kept |\n|---|";
  for (int c = 0; c < 7 + kiln::data::kTextRules; ++c) md += "---:|";
  md += "\n";
  const auto row = [&](const std::string& name, const FilterCounts& c) {
    md += fmt::format("| {} | {} | {:.2f} | {} | {} |", name, c.documents, 1e-6 * static_cast<double>(c.bytes),
                      c.too_long, c.empty);
    for (int64_t r : c.rules) md += fmt::format(" {} |", r);
    md += fmt::format(" {} | {} | {:.2f} |\n", c.low_quality, c.kept, 1e-6 * static_cast<double>(c.kept_bytes));
  };
  for (size_t s = 0; s < sources.size(); ++s) row(sources[s].name, per_source[s]);
  row("all", total);
  md += fmt::format(
      "\n## Deduplication\n\n{} candidate pairs compared ({} LSH bands x {} rows and the exact band), {} verified; "
      "{} clusters; {} documents dropped, {} of them exact copies.\n\n",
      dedup["candidate_pairs_compared"].get<int64_t>(), dedup["bands"].get<int>(), dedup["rows"].get<int>(),
      dedup["verified_pairs"].get<int64_t>(), dedup["clusters"].get<int64_t>(), dedup["dropped"].get<int64_t>(),
      dedup["exact_copies"].get<int64_t>());
  for (const json& cluster : dedup.value("largest_clusters", json::array())) {
    md += fmt::format("- a cluster of {} documents:\n", cluster["documents"].get<int64_t>());
    for (const json& e : cluster["examples"])
      md += fmt::format("  - `{}` document {}: {}\n", e["file"].get<std::string>(), e["document"].get<int64_t>(),
                        json(e["text"].get<std::string>()).dump());
  }
  md += "\n## Mixture\n\n| source | documents | training tokens | weight |\n|---|---:|---:|---:|\n";
  for (const json& s : mixture["sources"])
    md += fmt::format("| {} | {} | {} | {:.4f} |\n", s["name"].get<std::string>(), s["documents"].get<int64_t>(),
                      s["tokens"].get<int64_t>(), s["weight"].get<double>());
  if (!png.empty()) md += "\n![quality scores](scores.png)\n";
  kiln::write_file_atomic(a.out + "/report.json", report.dump(1));
  kiln::write_file_atomic(a.out + "/report.md", md);
  kiln::write_file_atomic(a.out + "/mixture.json", mixture.dump(1));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Curate text into a mixture of token files: filter, deduplicate, tokenize (GPT-3, appendix A)"};
  Args a;
  app.add_option("--source", a.sources, "NAME=PATH[,PATH...]: a source's files or directories, highest priority first")
      ->required();
  app.add_option("--weight", a.weights, "NAME=WEIGHT: a source's sampling weight (default: its share of the tokens)");
  app.add_option("--unfiltered", a.unfiltered, "sources kept whole by the text rules and the classifier");
  app.add_option("--reference", a.reference, "a high-quality corpus to train the quality classifier on");
  app.add_option("--classifier", a.classifier, "a trained quality classifier (safetensors) instead");
  app.add_option("--classifier-sample-mb", a.classifier_sample_mb,
                 "text of each side the classifier trains on (an even share of each file)")
      ->check(program::positive)->capture_default_str();
  app.add_option("--alpha", a.alpha, "Pareto shape of the quality rule (GPT-3: 9)")->check(program::positive)
      ->capture_default_str();
  app.add_option("--min-words", a.min_words, "Gopher's least number of words")->check(program::non_negative)
      ->capture_default_str();
  app.add_option("--near-duplicates", a.near_duplicates,
                 "Jaccard similarity of 5-word shingles that makes a duplicate; 0: exact copies only")
      ->check(program::in_range(0, std::nextafter(1.0, 0.0), "a number in [0, 1)"))->capture_default_str();
  app.add_option("--permutations", a.permutations, "MinHash signature length")->check(program::positive)
      ->capture_default_str();
  app.add_option("--tokenizer", a.tokenizer, "a sentencepiece .model to use instead of training one");
  app.add_option("--vocab", a.vocab, "vocabulary of a newly trained tokenizer")->check(program::positive)
      ->capture_default_str();
  app.add_option("--tokenizer-sample-mb", a.tokenizer_sample_mb, "text it is trained on")->check(program::positive)
      ->capture_default_str();
  app.add_option("--val-fraction", a.val_fraction, "chance that a document is held out")
      ->check(program::in_range(0, 0.5, "a number in [0, 0.5]"))->capture_default_str();
  app.add_option("--max-document-mb", a.max_document_mb, "longer documents are dropped as they stream past")
      ->check(program::positive)->capture_default_str();
  app.add_flag("--paragraphs", a.paragraphs, "split plain text at blank lines (else each file is one document)");
  app.add_option("--text-field", a.text_field, "the field of each JSON line that holds its document")
      ->capture_default_str();
  app.add_option("--seed", a.seed, "of the Pareto draws and the split")->capture_default_str();
  app.add_option("--out", a.out, "output directory, seen by every rank")->capture_default_str();
  if (auto code = program::parse(app, argc, argv)) return *code;

  return program::run("curate", [&] {
    auto world = kiln::dist::mpi_world();
    const bool lead = world->rank() == 0;
    const std::vector<Source> sources = parse_sources(a);
    std::vector<Input> inputs;
    for (size_t s = 0; s < sources.size(); ++s)
      for (const std::string& f : kiln::data::text_files(sources[s].paths))
        inputs.push_back({f, s, static_cast<int64_t>(fs::file_size(f))});
    const std::string work = a.out + "/work";
    fs::create_directories(work);

    // A resumed run must be the same run.
    json settings = {{"sources", a.sources}, {"unfiltered", a.unfiltered}, {"reference", a.reference},
                     {"classifier", a.classifier}, {"classifier_sample_mb", a.classifier_sample_mb}, {"alpha", a.alpha},
                     {"min_words", a.min_words}, {"near_duplicates", a.near_duplicates},
                     {"permutations", a.permutations}, {"tokenizer", a.tokenizer}, {"vocab", a.vocab},
                     {"tokenizer_sample_mb", a.tokenizer_sample_mb},
                     {"val_fraction", a.val_fraction}, {"text_field", a.text_field}, {"max_document_mb", a.max_document_mb},
                     {"paragraphs", a.paragraphs}, {"seed", a.seed},
                     {"files", inputs.size()}};
    const std::string settings_path = work + "/settings.json";
    if (fs::exists(settings_path)) {
      KILN_CHECK(json::parse(kiln::read_file(settings_path)) == settings,
                 "[curate] {} holds a run with other settings or inputs ({}); use another --out or remove it",
                 a.out, settings_path);
    } else {
      world->barrier();
      if (lead) kiln::write_file_atomic(settings_path, settings.dump(1));
    }

    const auto quality = classifier(a, sources, inputs, work, *world);
    const kiln::data::MinHasher hasher({.permutations = a.permutations, .shingle_words = a.shingle_words});
    const kiln::data::LshBands cut = a.near_duplicates > 0 ? kiln::data::lsh_bands(a.near_duplicates, a.permutations)
                                                           : kiln::data::LshBands{};
    const std::vector<size_t> mine = my_files(inputs, world->rank(), world->size());

    // Stage 1.
    int64_t my_bytes = 0, done_bytes = 0, resumed = 0;
    for (size_t f : mine) my_bytes += inputs[f].bytes;
    Progress filtering("filter", my_bytes, lead);
    for (size_t f : mine) {
      if (fs::exists(FileRecords(work, f).counts)) {
        ++resumed;
      } else {
        filter_file(f, inputs[f], sources[inputs[f].source], a, quality, hasher, cut, work,
                    [&](int64_t read) { filtering.update(done_bytes + read); });
      }
      done_bytes += inputs[f].bytes;
    }
    filtering.update(done_bytes, true);
    if (resumed && lead) fmt::print("filter: {} of rank 0's {} files were done before\n", resumed, mine.size());
    world->barrier();

    // Stage 2.
    json dedup = fs::exists(work + "/dedup.json") ? json::parse(kiln::read_file(work + "/dedup.json"))
                                                  : deduplicate(a, inputs, sources, mine, cut, work, *world);
    const Dropped dropped = read_dropped(work);
    if (lead)
      fmt::print("dedup: {} documents dropped ({} exact copies) from {} clusters\n", dedup["dropped"].get<int64_t>(),
                 dedup["exact_copies"].get<int64_t>(), dedup["clusters"].get<int64_t>());

    // Stage 3.
    const kiln::data::Tokenizer tok = tokenizer(a, inputs, dropped, cut, work, *world);
    Progress tokenizing("tokenize", my_bytes, lead);
    done_bytes = 0;
    for (size_t f : mine) {
      if (!fs::exists(FileRecords(work, f).tokens)) tokenize_file(f, a, tok, dropped, cut, work);
      done_bytes += inputs[f].bytes;
      tokenizing.update(done_bytes);
    }
    tokenizing.update(done_bytes, true);
    world->barrier();

    // Stage 4.
    if (lead) {
      std::vector<FilterCounts> counts(inputs.size());
      std::vector<json> tokens(inputs.size());
      for (size_t f = 0; f < inputs.size(); ++f) {
        counts[f] = json::parse(kiln::read_file(FileRecords(work, f).counts)).get<FilterCounts>();
        tokens[f] = json::parse(kiln::read_file(FileRecords(work, f).tokens));
      }
      write_outputs(a, sources, inputs, counts, tokens, dedup, tok, work);
      fmt::print("curate: wrote {0}/mixture.json, {0}/val.bin and a train-<source>.bin per source; "
                 "the report is {0}/report.md\n", a.out);
    }
    world->barrier();
    return 0;
  });
}
