#!/usr/bin/env python3
"""Golden values for kiln's GPT-2, from PyTorch and Hugging Face transformers.

Never run by the build or CI; it needs torch, transformers and safetensors
(pip install torch transformers safetensors).

  python3 tests/golden/make_gpt2_golden.py
      writes tests/golden/gpt2_tiny.safetensors: a tiny GPT2LMHeadModel's
      initial weights (Hugging Face names), inputs, targets, logits, loss, every
      parameter's gradient and the parameters after one AdamW step.

  python3 tests/golden/make_gpt2_golden.py --check-kiln build/tests/kiln_tiny
      loads the checkpoint that test_golden wrote with GPT2LMHeadModel and
      compares its logits with kiln's; writes tests/golden/hf_roundtrip.txt.
"""
import argparse
import os

import torch
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIG = dict(vocab_size=100, n_positions=16, n_embd=32, n_layer=2, n_head=4, resid_pdrop=0.0,
              embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_new", layer_norm_epsilon=1e-5,
              tie_word_embeddings=True)
ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
WEIGHT_DECAY = 0.1


def make_golden():
    torch.manual_seed(1234)
    model = GPT2LMHeadModel(GPT2Config(**CONFIG))
    # Non-trivial LayerNorm parameters and biases, so their gradients are tested too.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
    initial = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()
               if not k.endswith((".attn.bias", ".attn.masked_bias")) and k != "lm_head.weight"}
    model = model.double()
    idx = torch.randint(0, CONFIG["vocab_size"], (2, 8))
    targets = torch.randint(0, CONFIG["vocab_size"], (2, 8))
    targets[0, 3] = -100  # an ignored position
    out = model(idx)
    logits = out.logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, CONFIG["vocab_size"]), targets.view(-1))
    loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    grads = {f"grad.{names[id(p)]}": p.grad.float().contiguous() for p in model.parameters()}
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], **ADAMW)
    opt.step()
    after = {f"after.{names[id(p)]}": p.detach().float().contiguous() for p in model.parameters()}
    tensors = dict(initial)
    tensors.update(grads)
    tensors.update(after)
    tensors["input_ids"] = idx
    tensors["targets"] = targets
    tensors["logits"] = logits.detach().float().contiguous()
    tensors["loss"] = loss.detach().float().reshape(1)
    path = os.path.join(HERE, "gpt2_tiny.safetensors")
    save_file(tensors, path, metadata={"torch": torch.__version__, "config": str(CONFIG), "adamw": str(ADAMW),
                                       "weight_decay": str(WEIGHT_DECAY)})
    print(f"wrote {path}: loss {loss.item():.6f}")


def check_kiln(directory):
    model = GPT2LMHeadModel.from_pretrained(directory).double().eval()
    ref = load_file(os.path.join(directory, "kiln_logits.safetensors"))
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    kiln = ref["logits"].double()
    err = ((logits - kiln).abs().max() / kiln.abs().max()).item()
    verdict = "PASS" if err <= 1e-5 else "FAIL"
    line = (f"{verdict}: GPT2LMHeadModel.from_pretrained on kiln's checkpoint reproduces kiln's logits "
            f"(max |a-b| / max |ref| = {err:.3e}; transformers {__import__('transformers').__version__}, "
            f"torch {torch.__version__})\n")
    with open(os.path.join(HERE, "hf_roundtrip.txt"), "w") as f:
        f.write(line)
    print(line, end="")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check-kiln", metavar="DIR", help="check a checkpoint written by test_golden")
    args = parser.parse_args()
    check_kiln(args.check_kiln) if args.check_kiln else make_golden()
