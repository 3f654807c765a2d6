#pragma once
// Tokenizer: a sentencepiece model (BPE or unigram), trained here or loaded
// from an existing .model file. sentencepiece treats its input as lines, so
// newlines inside a document travel as one symbol, U+2424 (SYMBOL FOR NEWLINE),
// in training, encoding and decoding alike.

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kiln::data {

// The special symbols kiln reserves in the tokenizers it trains, for every
// stage and model family: padding, chat roles and the end of a turn, BERT's
// [CLS]/[SEP]/[MASK], GLM's [sMASK]/[gMASK] and its span delimiters, and T5's
// sentinels (`<extra_id_0>`, ...). Each is one id, in text as in ids.
enum class Special { Pad, System, User, Assistant, EndOfTurn, Cls, Sep, Mask, SMask, GMask, StartOfPiece, EndOfPiece };
// The symbol's text: "<pad>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "[CLS]", "[SEP]",
// "[MASK]", "[sMASK]", "[gMASK]", "<|startofpiece|>", "<|endofpiece|>".
std::string_view special_piece(Special s);
// T5's sentinel i: `<extra_id_i>`.
std::string sentinel_piece(int i);

// How train_tokenizer trains a sentencepiece model.
struct TokenizerTrainOptions {
  // sentencepiece's settings, under its names.
  int vocab_size = 4096;
  std::string model_type = "bpe";
  double character_coverage = 1.0;
  int threads = 2;
  // Reserve every Special symbol and this many sentinels (false: none at all).
  bool special_symbols = true;
  int sentinels = 16;
};

// A sentencepiece tokenizer with kiln's special symbols.
class Tokenizer {
 public:
  // Loads a .model file; raises kiln::Error with sentencepiece's message.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;

  // Trains on documents and writes model_prefix.model and model_prefix.vocab.
  // A small corpus may yield fewer pieces than vocab_size; vocab_size() tells.
  static void train(const std::vector<std::string>& documents, const std::string& model_prefix,
                    const TokenizerTrainOptions& options);

  // Text to ids and back; special symbols are one id each, in text as in ids.
  std::vector<uint32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<uint32_t>& ids) const;
  int vocab_size() const;  // the pieces the model holds
  // The end-of-text id placed between documents.
  uint32_t eos_id() const;
  // The id of a piece, if the vocabulary has it.
  std::optional<uint32_t> piece_id(std::string_view piece) const;
  // The piece of an id as text (sentencepiece's U+2581 for a leading space; a
  // newline as "\n").
  std::string piece(uint32_t id) const;
  // A reserved symbol's id; raises, naming the symbol and the model file, when
  // the tokenizer was trained without it.
  uint32_t special_id(Special s) const;
  uint32_t sentinel_id(int i) const;
  // How many sentinels the vocabulary holds (`<extra_id_0>` up).
  int sentinels() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace kiln::data
