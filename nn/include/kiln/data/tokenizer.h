#pragma once
// Tokenizer: a sentencepiece model (BPE or unigram), trained here or loaded
// from an existing .model file. sentencepiece treats its input as lines, so
// newlines inside a document travel as one symbol, U+2424 (SYMBOL FOR NEWLINE),
// in training, encoding and decoding alike.

#include <memory>
#include <string>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kiln::data {

struct TokenizerTrainOptions {
  int vocab_size = 4096;
  std::string model_type = "bpe";
  double character_coverage = 1.0;
  int threads = 2;
};

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

  std::vector<uint32_t> encode(const std::string& text) const;
  std::string decode(const std::vector<uint32_t>& ids) const;
  int vocab_size() const;
  // The end-of-text id placed between documents.
  uint32_t eos_id() const;

 private:
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::string path_;
};

}  // namespace kiln::data
