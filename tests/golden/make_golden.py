#!/usr/bin/env python3
"""Golden values for kiln's models, from PyTorch and Hugging Face transformers.

Never run by the build or CI; it needs torch, transformers and safetensors
(pip install torch transformers safetensors).

  python3 tests/golden/make_golden.py --model gpt2|llama|llama3|mixtral|opt|neox|bloom|bert|t5|t5_v1_1|glm|switch_router
      writes tests/golden/<model>_tiny.safetensors: a tiny model's (GPT2LMHeadModel's,
      LlamaForCausalLM's, ...) initial weights (Hugging Face names), inputs, targets,
      logits, loss, every parameter's gradient and the parameters after one
      AdamW step.

  python3 tests/golden/make_golden.py --model peft_llama|peft_gpt2|peft_neox
      writes tests/golden/peft_<model>_tiny.safetensors: a PEFT LoRA adapter on a tiny model (pip install peft).

  python3 tests/golden/make_golden.py --check-kiln build/tests/kiln_*tiny build/tests/bert_classify/out/model
      loads the checkpoints that test_golden (and the bert_classify test) wrote with Hugging Face's classes
      and compares their logits with kiln's; writes tests/golden/hf_roundtrip.txt.
"""
import argparse
import math
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoModelForCausalLM, BertConfig, BertForPreTraining, BertForSequenceClassification,
                          BloomConfig, BloomForCausalLM,
                          GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig, LlamaForCausalLM, MixtralConfig,
                          MixtralForCausalLM, OPTConfig, OPTForCausalLM, T5Config, T5ForConditionalGeneration)
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
from transformers.models.switch_transformers import modeling_switch_transformers as switch

HERE = os.path.dirname(os.path.abspath(__file__))
# name: (config class, model class, config, tokens per sequence)
MODELS = {
    "gpt2": (GPT2Config, GPT2LMHeadModel,
             dict(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0, embd_pdrop=0.0,
                  attn_pdrop=0.0, activation_function="gelu_new", layer_norm_epsilon=1e-5, tie_word_embeddings=True),
             8),
    # Grouped-query attention (4 heads, 2 kv heads), a large RoPE base, an untied head.
    "llama": (LlamaConfig, LlamaForCausalLM,
              dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5, rope_theta=500000.0,
                   tie_word_embeddings=False, attention_bias=False, mlp_bias=False),
              8),
    # Llama 3.1's RoPE scaling over sequences longer than its original context,
    # a head size apart from hidden / heads, and a tied head (Llama 3.2's).
    "llama3": (LlamaConfig, LlamaForCausalLM,
               dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=12, max_position_embeddings=64, rms_norm_eps=1e-5,
                    rope_theta=10000.0, rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                                          high_freq_factor=4.0, original_max_position_embeddings=16),
                    tie_word_embeddings=True, attention_bias=False, mlp_bias=False),
               24),
}
# Mixtral: 4 experts, top-2, GQA; its per-layer balancing loss is written too.
MODELS["mixtral"] = (MixtralConfig, MixtralForCausalLM,
                     dict(vocab_size=100, hidden_size=32, intermediate_size=24, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-5,
                          rope_theta=1e6, num_local_experts=4, num_experts_per_tok=2, router_aux_loss_coef=0.02,
                          tie_word_embeddings=False, experts_implementation="eager"),  # grouped_mm has no float64
                     8)
# OPT: learned positions two rows on, a ReLU MLP, a tied head.
MODELS["opt"] = (OPTConfig, OPTForCausalLM,
                 dict(vocab_size=100, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                      max_position_embeddings=16, word_embed_proj_dim=32, do_layer_norm_before=True,
                      activation_function="relu", dropout=0.0, attention_dropout=0.0, layerdrop=0.0,
                      enable_bias=True, tie_word_embeddings=True),
                 8)
# GPT-NeoX: parallel attention and MLP, a quarter of each head rotated (2 of 8 features), exact GELU, an
# untied head.
MODELS["neox"] = (GPTNeoXConfig, GPTNeoXForCausalLM,
                  dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=16, rotary_pct=0.25, rotary_emb_base=10000,
                       layer_norm_eps=1e-5, hidden_act="gelu", use_parallel_residual=True, attention_bias=True,
                       hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False),
                  8)
# BLOOM: ALiBi over 6 heads (not a power of two: the slopes' second series), a LayerNorm on the
# embeddings, a tied head.
MODELS["bloom"] = (BloomConfig, BloomForCausalLM,
                   dict(vocab_size=100, hidden_size=48, n_layer=2, n_head=6, layer_norm_epsilon=1e-5,
                        hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=True),
                   8)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
WEIGHT_DECAY = 0.1


def gradients_and_step(model):
    """Every parameter's gradient ("grad.NAME") and its value after one AdamW step ("after.NAME"), in float32."""
    names = {id(p): n for n, p in model.named_parameters()}
    grads = {f"grad.{names[id(p)]}": p.grad.float().contiguous() for p in model.parameters()}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], **ADAMW)
    opt.step()
    after = {f"after.{names[id(p)]}": p.detach().float().contiguous() for p in model.parameters()}
    return grads, after


def disk_names(tensors):
    """GPT-NeoX's head is embed_out in its released checkpoints (transformers 5 renames it lm_head on load).
    transformers 5 holds a layer's experts fused (mlp.gate, mlp.experts.gate_up_proj and down_proj); its
    checkpoints, and kiln's mapping, name them as Mixtral's release does (block_sparse_moe.gate, experts.E.w1/w2/w3)."""
    out = {}
    for key, t in tensors.items():
        head, _, rest = key.partition("model.layers.")
        layer, _, tail = rest.partition(".")
        prefix = f"{head}model.layers.{layer}.block_sparse_moe"
        if tail == "mlp.gate.weight":
            out[f"{prefix}.gate.weight"] = t
        elif tail == "mlp.experts.gate_up_proj":
            h = t.shape[1] // 2
            for e in range(t.shape[0]):
                out[f"{prefix}.experts.{e}.w1.weight"] = t[e, :h].contiguous()
                out[f"{prefix}.experts.{e}.w3.weight"] = t[e, h:].contiguous()
        elif tail == "mlp.experts.down_proj":
            for e in range(t.shape[0]):
                out[f"{prefix}.experts.{e}.w2.weight"] = t[e].contiguous()
        elif key.endswith("lm_head.weight") and any("gpt_neox." in k for k in tensors):
            out[key.replace("lm_head.weight", "embed_out.weight")] = t  # GPT-NeoX's released name
        else:
            out[key] = t
    return out


def make_golden(name):
    config_class, model_class, config, tokens = MODELS[name]
    torch.manual_seed(1234)
    model = model_class(config_class(**config))
    # Non-trivial norm parameters and biases, so their gradients are tested too.
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    tied = config["tie_word_embeddings"]
    initial = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
               if not k.endswith((".attn.bias", ".attn.masked_bias")) and not (tied and k == "lm_head.weight")}
    model = model.double()
    idx = torch.randint(0, config["vocab_size"], (2, tokens))
    targets = torch.randint(0, config["vocab_size"], (2, tokens))
    targets[0, 3] = -100  # an ignored position
    out = model(idx, output_router_logits=name == "mixtral")
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, config["vocab_size"]), targets.view(-1))
    loss.backward()
    grads, after = gradients_and_step(model)
    tensors = disk_names(initial)
    tensors.update(disk_names(grads))
    tensors.update(disk_names(after))
    if name == "mixtral":  # Hugging Face's balancing loss of layer 0 alone (its coefficient not applied)
        tensors["balance_layer0"] = load_balancing_loss_func(
            out.router_logits[:1], config["num_local_experts"], config["num_experts_per_tok"]).float().reshape(1)
    tensors["input_ids"] = idx
    tensors["targets"] = targets
    tensors["logits"] = logits.detach().float().contiguous()
    tensors["loss"] = loss.detach().float().reshape(1)
    path = os.path.join(HERE, f"{name}_tiny.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__, "config": str(config), "adamw": str(ADAMW),
                                       "weight_decay": str(WEIGHT_DECAY)})
    print(f"wrote {path}: loss {loss.item():.6f}")


def make_bert():
    """A tiny BertForPreTraining: two sequences of 10 tokens with two token types, the second padded after 7
    (attention_mask), masked-LM labels at some positions and next-sentence labels; its logits of both heads,
    loss, every gradient and the parameters after one AdamW step, in float64, under the checkpoint's names."""
    torch.manual_seed(4321)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=16, type_vocab_size=2, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    model = BertForPreTraining(config)
    with torch.no_grad():  # biases and norms away from their initial values, so their gradients are tested
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    model = model.double()
    initial = {k: v.detach().float().clone().contiguous() for k, v in model.state_dict().items()
               if not k.endswith("position_ids")}
    idx = torch.randint(0, 100, (2, 10))
    types = torch.tensor([[0] * 5 + [1] * 5, [0] * 4 + [1] * 6])
    lengths = torch.tensor([10, 7])
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    labels = torch.full((2, 10), -100)
    labels[0, [1, 4, 8]] = torch.randint(0, 100, (3,))
    labels[1, [2, 5]] = torch.randint(0, 100, (2,))
    nsp = torch.tensor([0, 1])
    out = model(input_ids=idx, token_type_ids=types, attention_mask=mask, labels=labels, next_sentence_label=nsp)
    out.loss.backward()
    grads, after = gradients_and_step(model)
    tensors = dict(initial)
    tensors.update(grads)
    tensors.update(after)
    tensors.update({"input_ids": idx, "token_type_ids": types, "lengths": lengths, "labels": labels,
                    "next_sentence_label": nsp, "prediction_logits": out.prediction_logits.detach().float(),
                    "seq_relationship_logits": out.seq_relationship_logits.detach().float(),
                    "loss": out.loss.detach().float().reshape(1)})
    path = os.path.join(HERE, "bert_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"torch": torch.__version__, "config": str(config.to_dict())})
    print(f"wrote {path}: loss {out.loss.item():.6f}")


def make_t5(name):
    """A tiny T5ForConditionalGeneration: v1.0 (ReLU, the head tied and fed d_model^-0.5 times the decoder's
    output) or v1.1 (gated GELU, unscaled; transformers 5 ties its head too). Few buckets over a short distance,
    so that the sequences reach the logarithmic ones; a head size apart from d_model / heads; more decoder layers
    than encoder ones. Two source rows, the second padded after 9 tokens, and labels with -100 at the end of the
    second. Its logits, loss, every gradient, the parameters after one AdamW step, and greedy and 3-beam
    generations of 6 tokens, in float64, under the checkpoint's names."""
    torch.manual_seed(2468)
    v1_1 = name == "t5_v1_1"
    config = T5Config(vocab_size=100, d_model=32, d_kv=12, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu" if v1_1 else "relu", tie_word_embeddings=not v1_1,
                      decoder_start_token_id=0)
    model = T5ForConditionalGeneration(config)
    with torch.no_grad():  # norms away from one, so their gradients are tested
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
        model.shared.weight[0].mul_(0.1)  # else the tied head echoes the decoder's start token (0) forever
    model = model.double()
    initial = {k: v.detach().float().clone().contiguous() for k, v in model.state_dict().items()
               if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")}
    idx = torch.randint(2, 100, (2, 12))
    lengths = torch.tensor([12, 9])
    mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
    idx[1, 9:] = 0
    labels = torch.randint(2, 100, (2, 7))
    labels[1, 5:] = -100
    out = model(input_ids=idx, attention_mask=mask, labels=labels)
    out.loss.backward()
    grads, after = gradients_and_step(model)
    tensors = dict(initial)
    tensors.update(grads)
    tensors.update(after)
    model.load_state_dict({**model.state_dict(), **{k: v.double() for k, v in initial.items()}})
    with torch.no_grad():
        greedy = model.generate(input_ids=idx, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=1,
                                use_cache=False)  # its cache holds num_layers, not num_decoder_layers
        beams = model.generate(input_ids=idx, attention_mask=mask, max_new_tokens=6, do_sample=False, num_beams=3,
                               length_penalty=1.0, early_stopping=False, use_cache=False)
    tensors.update({"input_ids": idx, "lengths": lengths, "labels": labels, "logits": out.logits.detach().float(),
                    "loss": out.loss.detach().float().reshape(1), "greedy": greedy, "beam3": beams})
    path = os.path.join(HERE, f"{name}_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path,
              metadata={"torch": torch.__version__, "config": str(config.to_dict())})
    print(f"wrote {path}: loss {out.loss.item():.6f}; greedy {greedy.tolist()}, 3 beams {beams.tolist()}")


class GLMTranscription(torch.nn.Module):
    """THUDM's GLMModel with block position encoding (model/modeling_glm.py, mpu/transformers.py's
    GPT2ParallelTransformer) on one process: word, position and block-position embeddings summed; pre-norm
    layers of fused query_key_value attention, scores q k^T / sqrt(d) masked by the sep mask (every query sees
    part A, part B causally) as scores * m - 10000 (1 - m), and the tanh-GELU MLP; a final LayerNorm; logits
    against the word embeddings."""

    def __init__(self, vocab, hidden, layers, heads, max_positions):
        super().__init__()
        self.heads = heads
        self.word_embeddings = torch.nn.Embedding(vocab, hidden)
        self.position_embeddings = torch.nn.Embedding(max_positions, hidden)
        self.block_position_embeddings = torch.nn.Embedding(max_positions, hidden)
        self.layers = torch.nn.ModuleList()
        for _ in range(layers):
            layer = torch.nn.Module()
            layer.input_layernorm = torch.nn.LayerNorm(hidden, eps=1e-5)
            layer.query_key_value = torch.nn.Linear(hidden, 3 * hidden)
            layer.dense = torch.nn.Linear(hidden, hidden)
            layer.post_attention_layernorm = torch.nn.LayerNorm(hidden, eps=1e-5)
            layer.dense_h_to_4h = torch.nn.Linear(hidden, 4 * hidden)
            layer.dense_4h_to_h = torch.nn.Linear(4 * hidden, hidden)
            self.layers.append(layer)
        self.final_layernorm = torch.nn.LayerNorm(hidden, eps=1e-5)

    def forward(self, ids, positions, block_positions, sep):
        B, T = ids.shape
        h = self.word_embeddings(ids) + self.position_embeddings(positions) + self.block_position_embeddings(block_positions)
        m = torch.tril(torch.ones(T, T, dtype=h.dtype)).expand(B, T, T).clone()
        m = m.masked_fill((torch.arange(T)[None, :] < sep[:, None]).unsqueeze(1).expand_as(m), 1).unsqueeze(1)
        for layer in self.layers:
            x = layer.input_layernorm(h)
            q, k, v = layer.query_key_value(x).split(x.shape[-1], dim=-1)
            split = lambda t: t.view(B, T, self.heads, -1).transpose(1, 2)
            q, k, v = split(q), split(k), split(v)
            scores = torch.matmul(q / math.sqrt(q.shape[-1]), k.transpose(-1, -2))
            scores = scores * m - 10000.0 * (1.0 - m)
            context = torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2).reshape(B, T, -1)
            h = h + layer.dense(context)
            x = layer.post_attention_layernorm(h)
            h = h + layer.dense_4h_to_h(torch.nn.functional.gelu(layer.dense_h_to_4h(x), approximate="tanh"))
        return torch.nn.functional.linear(self.final_layernorm(h), self.word_embeddings.weight)


def make_glm():
    """A tiny GLM on two rows laid out for blank infilling (part A of 6 and 5 tokens, then the spans), its
    logits, the loss over part B (THUDM's loss mask), every gradient and the parameters after one AdamW step,
    in float64, under THUDM's names."""
    torch.manual_seed(1357)
    model = GLMTranscription(vocab=128, hidden=32, layers=2, heads=4, max_positions=16)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(0.02 * torch.randn_like(p) if p.dim() == 2 else 0.1 * torch.randn_like(p))
        for layer in model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.add_(1.0)
        model.final_layernorm.weight.add_(1.0)
    model = model.double()
    initial = {k: v.detach().float().clone().contiguous() for k, v in model.state_dict().items()}
    # Row 0: 8 tokens, spans [1, 3) and [5, 6) -> part A of 6 tokens, part B of 3 + 2.
    # Row 1: 8 tokens, span [4, 7) -> part A of 6 (one mask), part B of 4, one padding token at the end.
    ids = torch.tensor([[10, 3, 13, 14, 3, 17, 4, 11, 12, 4, 15],
                        [20, 21, 22, 23, 3, 27, 4, 24, 25, 26, 0]])
    labels = torch.tensor([[-100] * 6 + [11, 12, 5, 15, 5], [-100] * 6 + [24, 25, 26, 5, -100]])
    positions = torch.tensor([[0, 1, 2, 3, 4, 5, 1, 1, 1, 4, 4], [0, 1, 2, 3, 4, 5, 4, 4, 4, 4, 0]])
    block_positions = torch.tensor([[0] * 6 + [1, 2, 3, 1, 2], [0] * 6 + [1, 2, 3, 4, 0]])
    sep = torch.tensor([6, 6])
    logits = model(ids, positions, block_positions, sep)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, 128), labels.view(-1))
    loss.backward()
    grads, after = gradients_and_step(model)
    tensors = dict(initial)
    tensors.update(grads)
    tensors.update(after)
    tensors.update({"input_ids": ids, "labels": labels, "positions": positions, "block_positions": block_positions,
                    "prefix_lengths": sep, "logits": logits.detach().float(), "loss": loss.detach().float().reshape(1)})
    path = os.path.join(HERE, "glm_tiny.safetensors")
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata={"torch": torch.__version__})
    print(f"wrote {path}: loss {loss.item():.6f}")


def make_switch_router():
    """Switch Transformer's top-1 router (SwitchTransformersTop1Router) on one sequence of 12 tokens over 4
    experts at a capacity of 2 per expert, in float32 (its only precision): its logits, the kept one-hot choices (drops by position), the gates,
    the z-loss and the balancing loss of the choices before any drop."""
    torch.manual_seed(7)
    config = switch.SwitchTransformersConfig(num_experts=4, expert_capacity=2, d_model=8, router_dtype="float32")
    router = switch.SwitchTransformersTop1Router(config)
    x = torch.randn(1, 12, 8)
    kept, gates, logits = router(x)
    probs = torch.softmax(logits, dim=-1)
    tensors = {"x": x[0], "router.weight": router.classifier.weight.detach(), "logits": logits[0].detach(),
               "kept": kept[0].double(), "gates": gates[0, :, 0].detach(),
               "z_loss": switch.router_z_loss_func(logits).detach().reshape(1),
               "balance": switch.load_balancing_loss_func(probs, logits.argmax(-1)).detach().reshape(1)}
    path = os.path.join(HERE, "switch_router.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__, "config": str(config.to_dict()["expert_capacity"])})
    print(f"wrote {path}: {int(kept.sum())} of 12 tokens kept")


# PEFT adapters on the tiny models: per projection and on both kinds of layer (Llama), on GPT-2's fused
# Conv1D c_attn (fan_in_fan_out) and on GPT-NeoX's per-head query_key_value.
PEFT_TARGETS = {"llama": ["q_proj", "v_proj", "gate_proj", "down_proj"],
                "gpt2": ["c_attn", "attn.c_proj"],
                "neox": ["query_key_value", "dense_4h_to_h"]}


def make_peft(name):
    """A PEFT LoRA (r 4, alpha 8, random B: init_lora_weights=False) on a tiny model: the base weights, the
    adapter's tensors as PEFT saves them, its adapter_config.json (metadata) and the adapted logits."""
    import json
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    config_class, model_class, config, tokens = MODELS[name]
    torch.manual_seed(99)
    base = model_class(config_class(**config)).double()
    tied = config["tie_word_embeddings"]
    weights = disk_names({k: v.detach().float().clone().contiguous() for k, v in base.state_dict().items()
                          if not k.endswith((".attn.bias", ".attn.masked_bias")) and not (tied and k == "lm_head.weight")})
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=PEFT_TARGETS[name], init_lora_weights=False,
                      fan_in_fan_out=name == "gpt2")
    model = get_peft_model(base, lora).eval()
    idx = torch.randint(0, config["vocab_size"], (2, tokens))
    with torch.no_grad():
        logits = model(input_ids=idx).logits
    adapter = {f"adapter.{k}": v.float().contiguous() for k, v in get_peft_model_state_dict(model).items()}
    tensors = {**weights, **adapter, "input_ids": idx, "logits": logits.float().contiguous()}
    path = os.path.join(HERE, f"peft_{name}_tiny.safetensors")
    adapter_config = lora.to_dict()
    adapter_config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in adapter_config.items()}
    save_file(tensors, path, metadata={"torch": torch.__version__, "peft": __import__("peft").__version__,
                                       "adapter_config": json.dumps(adapter_config)})
    print(f"wrote {path}: {len(adapter)} adapter tensors")


def check_kiln(directories):
    lines = []
    for directory in directories:
        ref = load_file(os.path.join(directory, "kiln_logits.safetensors"))
        name = None
        if os.path.exists(os.path.join(directory, "adapter_config.json")):
            from peft import PeftModel
            base = AutoModelForCausalLM.from_pretrained(directory).double()
            model = PeftModel.from_pretrained(base, directory).eval()
            with torch.no_grad():
                logits = model(input_ids=ref["input_ids"]).logits
            name = f"PeftModel.from_pretrained({type(base).__name__})"  # the adapter, on the base
        elif "t5" in directory:
            model = T5ForConditionalGeneration.from_pretrained(directory).double().eval()
            mask = (torch.arange(ref["input_ids"].shape[1])[None, :] < ref["lengths"][:, None]).long()
            with torch.no_grad():
                logits = model(input_ids=ref["input_ids"], attention_mask=mask, labels=ref["labels"]).logits
        elif "classify" in directory:
            model = BertForSequenceClassification.from_pretrained(directory).double().eval()
            mask = (torch.arange(ref["input_ids"].shape[1])[None, :] < ref["lengths"][:, None]).long()
            with torch.no_grad():
                logits = model(input_ids=ref["input_ids"], attention_mask=mask).logits
        elif "bert" in directory:
            model = BertForPreTraining.from_pretrained(directory).double().eval()
            with torch.no_grad():
                logits = model(ref["input_ids"]).prediction_logits
        else:
            model = AutoModelForCausalLM.from_pretrained(directory, experts_implementation="eager").double().eval()
            with torch.no_grad():
                logits = model(ref["input_ids"]).logits
        name = name or f"{type(model).__name__}.from_pretrained"
        kiln = ref["logits"].double()
        err = ((logits - kiln).abs().max() / kiln.abs().max()).item()
        verdict = "PASS" if err <= 1e-5 else "FAIL"
        lines.append(f"{verdict}: {name} on kiln's checkpoint reproduces kiln's "
                     f"logits (max |a-b| / max |ref| = {err:.3e}; transformers "
                     f"{__import__('transformers').__version__}, torch {torch.__version__})\n")
    with open(os.path.join(HERE, "hf_roundtrip.txt"), "w") as f:
        f.writelines(lines)
    print("".join(lines), end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=sorted(MODELS) + ["bert", "t5", "t5_v1_1", "glm", "switch_router"] +
                        [f"peft_{m}" for m in PEFT_TARGETS],
                        help="write this model's golden values")
    parser.add_argument("--check-kiln", metavar="DIR", nargs="+", help="check checkpoints written by test_golden")
    args = parser.parse_args()
    if args.check_kiln:
        check_kiln(args.check_kiln)
    elif args.model and args.model.startswith("peft_"):
        make_peft(args.model[len("peft_"):])
    elif args.model == "switch_router":
        make_switch_router()
    elif args.model == "bert":
        make_bert()
    elif args.model == "glm":
        make_glm()
    elif args.model in ("t5", "t5_v1_1"):
        make_t5(args.model)
    else:
        make_golden(args.model or "gpt2")
