#pragma once
// ValueModel: a TransformerLM with a scalar head in place of the vocabulary,
// InstructGPT's reward model (the score of each sequence's last token) and
// PPO's critic (a value for every token). The head is Hugging Face's "score"
// of *ForSequenceClassification: Linear(C, 1) without bias, N(0, init_std).
// It lives on the last pipeline stage, replicated across tensor-parallel
// ranks; the backbone is built without its language-model head.

#include "kiln/nn/linear.h"
#include "kiln/nn/transformer_lm.h"

namespace kiln::nn {

// A TransformerLM backbone with a scalar head: a reward model or critic (above).
class ValueModel : public TransformerLM {
 public:
  // spec's backbone without its LM head, and a scalar head, drawn from gen.
  explicit ValueModel(ModelSpec spec, Generator& gen = default_generator(), DType dtype = kFloat32,
                      Device device = kCPU, std::shared_ptr<const LayerFactory> factory = nullptr);

  // The value of every position (B, T), float32 (float64 for a float64 model),
  // from forward_stage's output on the last stage.
  Tensor values_from_hidden(const Tensor& hidden) const;
  // One stage's model: values (B, T) of idx (B, T).
  Tensor values(const Tensor& idx) const;
  // The value at each row's last real token: idx (B, T), lengths (B) int64 in [1, T].
  Tensor scores(const Tensor& idx, const Tensor& lengths) const;

  // A deep copy, head included, as TransformerLM::clone (a critic started from the reward model).
  std::unique_ptr<ValueModel> clone() const {
    return std::unique_ptr<ValueModel>(static_cast<ValueModel*>(TransformerLM::clone().release()));
  }

  std::shared_ptr<Linear> score;  // last stage

 protected:
  ValueModel(const ValueModel& like, DType dtype, Device device);  // the structure, as TransformerLM's
  std::unique_ptr<TransformerLM> empty_like(DType dtype, Device device) const override;
};

}  // namespace kiln::nn
