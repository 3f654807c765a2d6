#include "kiln/data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <fstream>

#include "kiln/base/error.h"

namespace kiln::data {

namespace {
constexpr std::string_view kNewline = "\xE2\x90\xA4";  // U+2424, UTF-8

std::string replace_all(const std::string& s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t at = 0;
  for (size_t hit; (hit = s.find(from, at)) != std::string::npos; at = hit + from.size()) {
    out.append(s, at, hit - at);
    out.append(to);
  }
  out.append(s, at, std::string::npos);
  return out;
}
constexpr Special kSpecials[] = {Special::Pad,       Special::System, Special::User, Special::Assistant,
                                 Special::EndOfTurn, Special::Cls,    Special::Sep,  Special::Mask,
                                 Special::SMask,     Special::GMask,  Special::StartOfPiece, Special::EndOfPiece};
}  // namespace

std::string_view special_piece(Special s) {
  switch (s) {
    case Special::Pad: return "<pad>";
    case Special::System: return "<|system|>";
    case Special::User: return "<|user|>";
    case Special::Assistant: return "<|assistant|>";
    case Special::EndOfTurn: return "<|end|>";
    case Special::Cls: return "[CLS]";
    case Special::Sep: return "[SEP]";
    case Special::Mask: return "[MASK]";
    case Special::SMask: return "[sMASK]";
    case Special::GMask: return "[gMASK]";
    case Special::StartOfPiece: return "<|startofpiece|>";
    case Special::EndOfPiece: return "<|endofpiece|>";
  }
  KILN_FAIL("[Tokenizer] unknown special symbol {}", static_cast<int>(s));
}

std::string sentinel_piece(int i) { return fmt::format("<extra_id_{}>", i); }

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()), path_(model_path) {
  auto status = sp_->Load(model_path);
  KILN_CHECK(status.ok(), "[Tokenizer] cannot load {}: {}", model_path, status.ToString());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;

void Tokenizer::train(const std::vector<std::string>& documents, const std::string& model_prefix,
                      const TokenizerTrainOptions& o) {
  KILN_CHECK(!documents.empty(), "[Tokenizer] no documents to train on");
  const std::string input = model_prefix + ".train.txt";
  {
    std::ofstream out(input, std::ios::binary);
    KILN_CHECK(out.good(), "[Tokenizer] cannot write {}", input);
    for (const std::string& doc : documents) out << replace_all(doc, "\n", kNewline) << '\n';
  }
  KILN_CHECK(o.sentinels >= 0, "[Tokenizer] sentinels must be >= 0, got {}", o.sentinels);
  // Each reserved symbol is one piece wherever it appears, and never split.
  std::string symbols(kNewline);
  if (o.special_symbols) {
    for (Special sp : kSpecials) symbols += fmt::format(",{}", special_piece(sp));
    for (int i = 0; i < o.sentinels; ++i) symbols += "," + sentinel_piece(i);
  }
  std::string args = fmt::format(
      "--input={} --model_prefix={} --vocab_size={} --model_type={} --character_coverage={} --num_threads={} "
      "--pad_id=-1 --unk_id=0 --bos_id=1 --eos_id=2 --input_sentence_size=0 --shuffle_input_sentence=false "
      "--max_sentence_length=65536 --split_digits=true --byte_fallback=true --hard_vocab_limit=false "
      "--add_dummy_prefix=false "
      "--user_defined_symbols={} "
      "--minloglevel=2",
      input, model_prefix, o.vocab_size, o.model_type, o.character_coverage, o.threads, symbols);
  auto status = sentencepiece::SentencePieceTrainer::Train(args);
  std::remove(input.c_str());
  KILN_CHECK(status.ok(), "[Tokenizer] training failed: {}", status.ToString());
}

std::vector<uint32_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  auto status = sp_->Encode(replace_all(text, "\n", kNewline), &ids);
  KILN_CHECK(status.ok(), "[Tokenizer] encoding failed: {}", status.ToString());
  return {ids.begin(), ids.end()};
}

std::string Tokenizer::decode(const std::vector<uint32_t>& ids) const {
  std::vector<int> v(ids.begin(), ids.end());
  for (int& id : v)
    KILN_CHECK(id >= 0 && id < sp_->GetPieceSize(), "[Tokenizer] id {} is outside the vocabulary of {}", id,
               sp_->GetPieceSize());
  std::string text;
  auto status = sp_->Decode(v, &text);
  KILN_CHECK(status.ok(), "[Tokenizer] decoding failed: {}", status.ToString());
  return replace_all(text, kNewline, "\n");
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
uint32_t Tokenizer::eos_id() const { return static_cast<uint32_t>(sp_->eos_id()); }

std::optional<uint32_t> Tokenizer::piece_id(std::string_view piece) const {
  const int id = sp_->PieceToId(piece);
  if (id < 0 || (id == sp_->unk_id() && piece != sp_->IdToPiece(id))) return std::nullopt;
  return static_cast<uint32_t>(id);
}

std::string Tokenizer::piece(uint32_t id) const {
  KILN_CHECK(id < static_cast<uint32_t>(sp_->GetPieceSize()), "[Tokenizer] id {} is outside the vocabulary of {}", id,
             sp_->GetPieceSize());
  return replace_all(sp_->IdToPiece(static_cast<int>(id)), kNewline, "\n");
}

uint32_t Tokenizer::special_id(Special s) const {
  auto id = piece_id(special_piece(s));
  KILN_CHECK(id, "[Tokenizer] {} has no '{}': it was trained without kiln's special symbols (prepare_data reserves "
             "them)", path_, special_piece(s));
  return *id;
}

uint32_t Tokenizer::sentinel_id(int i) const {
  auto id = piece_id(sentinel_piece(i));
  KILN_CHECK(id, "[Tokenizer] {} has no '{}': it holds {} sentinels", path_, sentinel_piece(i), sentinels());
  return *id;
}

int Tokenizer::sentinels() const {
  int n = 0;
  while (piece_id(sentinel_piece(n))) ++n;
  return n;
}

}  // namespace kiln::data
