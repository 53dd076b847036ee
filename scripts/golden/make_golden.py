#!/usr/bin/env python3
"""Regenerates the golden files under tests/golden/ from Hugging Face transformers (float32) and
the `gguf` package, loading the same GGUF files scalpel loads.

    python -m venv .venv-golden && .venv-golden/bin/pip install -r scripts/golden/requirements.txt
    .venv-golden/bin/python scripts/golden/make_golden.py \
        --smollm ~/.cache/scalpel/models/SmolLM2-135M-Instruct.Q4_1.gguf \
        --gemma ~/.cache/scalpel/models/gemma-3-270m-q4_k_m.gguf --out tests/golden

What it writes:
  dequant.safetensors         raw GGML blocks and gguf-py's dequantized values, per type
  <model>/tokenizer.json      texts, their ids from transformers' GGUF tokenizer, chat renderings
  <model>/prompt_<i>.safetensors
                              tokens, embed, resid_post per layer (forward hooks on the decoder
                              layers: HF's last hidden_states entry is already normed), logits,
                              attention probabilities, logit-lens top-10 per layer and position,
                              32 greedy tokens (EOS ignored)
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import save_file

import gguf
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer

torch.manual_seed(0)
torch.set_num_threads(max(1, os.cpu_count() or 1))

PROMPTS = {
    "smollm2": [
        "The capital of France is",
        "the apple is green. what color is the apple?",
        "中国的首都是",
        "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
        "In 1135, the king wrote",
    ],
    "gemma3": [
        "The capital of France is",
        "the apple is green. what color is the apple?",
        "中国的首都是",
        "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n",
    ],
}

TOKENIZER_TEXTS = [
    "The capital of France is",
    "Hello, world!",
    " leading space",
    "  two leading spaces",
    "trailing spaces   ",
    "line one\nline two\n\n\nthree newlines",
    "tabs\tand\tmore\t\ttabs",
    "I have 12 apples and 1135 pears; π ≈ 3.14159",
    "天气预报说明天会下雨",
    "中国的首都是北京。",
    "日本語のテキストも少し",
    "Ünïcödé àccents — and “quotes”",
    "emoji 🍎🍏 and 👩‍👩‍👧",
    "def f(x):\n    return x ** 2  # square",
    "<|im_start|>user\nhi<|im_end|>",
    "<start_of_turn>user\nhi<end_of_turn>",
    "a" * 40,
    "don't won't they'll I'm we've",
    "https://example.com/path?q=1&r=2",
    "",
]

CHAT_MESSAGES = ["What is 2+2?", "写一首关于天气的诗"]


def rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def dequant_goldens(smollm: Path, gemma: Path | None, out: Path):
    """Real tensors of the default models, plus random blocks for the types they lack."""
    tensors = {}
    meta = {}
    sources = {
        "Q4_1": (smollm, "blk.0.attn_q.weight"),
        "Q8_0": (smollm, "token_embd.weight"),
        "F32": (smollm, "blk.0.attn_norm.weight"),
    }
    if gemma is not None:
        sources.update({
            "Q5_0": (gemma, "blk.0.attn_q.weight"),
            "Q4_K": (gemma, "blk.0.attn_output.weight"),
            "Q6_K": (gemma, "blk.0.ffn_down.weight"),
        })
    readers = {}
    for name, (path, tensor_name) in sources.items():
        r = readers.setdefault(path, gguf.GGUFReader(str(path)))
        t = next(t for t in r.tensors if t.name == tensor_name)
        assert t.tensor_type.name == name, (tensor_name, t.tensor_type.name)
        block, size = gguf.GGML_QUANT_SIZES[t.tensor_type]
        n_blocks = min(t.n_elements // block, max(64, 2048 // block))
        raw = np.asarray(t.data).reshape(-1).view(np.uint8)[: n_blocks * size].copy()
        vals = gguf.quants.dequantize(raw, t.tensor_type).reshape(-1).astype(np.float32)
        tensors[f"{name}.raw"] = raw
        tensors[f"{name}.values"] = vals
        meta[name] = f"{path.name}:{tensor_name}, first {n_blocks} blocks"

    rng = np.random.default_rng(1234)
    for name in ["F16", "BF16", "Q4_0", "Q5_1", "Q5_K"] + ([] if gemma else ["Q5_0", "Q4_K", "Q6_K"]):
        qtype = gguf.GGMLQuantizationType[name]
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        if name in ("F16", "BF16"):
            x = rng.standard_normal(2048).astype(np.float32) * 3
            raw = gguf.quants.quantize(x, qtype).reshape(-1).view(np.uint8).copy()
        else:
            raw = rng.integers(0, 256, size=(48, size), dtype=np.uint8)
            # Scales are f16: keep them finite and modest so the values are too.
            for off in f16_offsets(name):
                raw[:, off : off + 2] = np.frombuffer(
                    (rng.standard_normal(48) * 0.02).astype(np.float16).tobytes(), dtype=np.uint8
                ).reshape(48, 2)
            raw = raw.reshape(-1)
        vals = gguf.quants.dequantize(raw, qtype).reshape(-1).astype(np.float32)
        tensors[f"{name}.raw"] = raw
        tensors[f"{name}.values"] = vals
        meta[name] = "random blocks (seeded), dequantized by gguf-py"
    meta["gguf-py"] = getattr(gguf, "__version__", "unknown")
    save_file(tensors, str(out / "dequant.safetensors"), metadata={k: str(v) for k, v in meta.items()})


def f16_offsets(name):
    return {"Q4_0": [0], "Q5_1": [0, 2], "Q5_0": [0], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}[name]


def tokenizer_goldens(tok, out_dir: Path):
    cases = []
    for text in TOKENIZER_TEXTS:
        ids = tok(text)["input_ids"]
        cases.append({"text": text, "ids": ids})
    chats = []
    if tok.chat_template:
        for m in CHAT_MESSAGES:
            msgs = [{"role": "user", "content": m}]
            rendered = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids = tok(rendered, add_special_tokens=False)["input_ids"]
            chats.append({"message": m, "rendered": rendered, "ids": ids})
    (out_dir / "tokenizer.json").write_text(
        json.dumps({"cases": cases, "chat": chats}, ensure_ascii=False, indent=1) + "\n"
    )


# A prompt longer than the shrunken sliding window below, so local layers really cut keys off.
WINDOW_PROMPT = ("The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat "
                 "and the birds sing in the tall green trees")
WINDOW = 8


def load(path: Path):
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    model.eval()
    return tok, model


@torch.no_grad()
def model_goldens(name: str, path: Path, out_dir: Path, lens_k=10, greedy_n=32, keep_logits=None, window=None):
    tok, model = load(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    prompts = PROMPTS[name]
    stem = "prompt"
    if window is None:
        tokenizer_goldens(tok, out_dir)
    else:
        # Shrink the sliding window (read at every forward when the masks are built).
        model.config.sliding_window = window
        prompts, stem = [WINDOW_PROMPT], f"window{window}"
    decoder = model.model
    final_norm = decoder.norm
    for i, prompt in enumerate(prompts):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        resid = []
        hooks = [
            layer.register_forward_hook(lambda m, a, o: resid.append((o[0] if isinstance(o, tuple) else o).detach().clone()))
            for layer in decoder.layers
        ]
        out = model(ids, output_hidden_states=True, output_attentions=True, use_cache=False)
        for h in hooks:
            h.remove()
        resid_post = torch.stack([r[0] for r in resid])  # [L, T, d]
        embed = out.hidden_states[0][0]
        logits = out.logits[0]
        attn = torch.stack([a[0] for a in out.attentions])  # [L, H, T, T]
        # Logit lens: final norm + LM head on each layer's resid_post.
        lens = model.lm_head(final_norm(resid_post))
        if getattr(model.config, "final_logit_softcapping", None):
            c = model.config.final_logit_softcapping
            lens = torch.tanh(lens / c) * c
        lens_lp = torch.log_softmax(lens, dim=-1)
        top_lp, top_ids = lens_lp.topk(lens_k, dim=-1)
        # Greedy continuation with the KV cache, EOS ignored, so every run has greedy_n tokens.
        greedy = []
        past = None
        step_ids = ids
        for _ in range(greedy_n):
            o = model(step_ids, past_key_values=past, use_cache=True)
            past = o.past_key_values
            nxt = int(o.logits[0, -1].argmax())
            greedy.append(nxt)
            step_ids = torch.tensor([[nxt]])
        T = ids.shape[1]
        keep = T if keep_logits is None else min(T, keep_logits)
        tensors = {
            "tokens": ids[0].numpy().astype(np.int64),
            "embed": embed.numpy(),
            "resid_post": resid_post.numpy(),
            "logits": logits[T - keep :].numpy(),
            "attn_probs": attn.numpy(),
            "lens_top_ids": top_ids.numpy().astype(np.int64),
            "lens_top_logprobs": top_lp.numpy(),
            "greedy": np.array(greedy, dtype=np.int64),
        }
        meta = {
            "prompt": prompt,
            "model": path.name,
            "logits_first_position": str(T - keep),
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "greedy_text": tok.decode(greedy),
        }
        if window is not None:
            meta["sliding_window"] = str(window)
        save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(out_dir / f"{stem}_{i}.safetensors"), metadata=meta)
        print(f"{name} prompt {i}: {T} tokens; greedy: {tok.decode(greedy)!r}", file=sys.stderr)


def rope_goldens(out: Path):
    """Llama 3 RoPE scaling as transformers computes it, for Llama-3.2-3B's config."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    scaling = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}
    cfg = LlamaConfig(hidden_size=3072, num_attention_heads=24, num_key_value_heads=8, head_dim=128,
                      rope_theta=500000.0, rope_scaling=scaling, max_position_embeddings=131072)
    inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    (out / "rope_llama3.json").write_text(json.dumps({
        "config": {"head_dim": 128, "rope_theta": 500000.0, "rope_scaling": scaling},
        "inv_freq": [float(x) for x in inv_freq.float().tolist()],
    }, indent=1) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smollm", type=Path, required=True)
    ap.add_argument("--gemma", type=Path)
    ap.add_argument("--out", type=Path, default=Path("tests/golden"))
    ap.add_argument("--only", choices=["dequant", "rope", "smollm2", "gemma3", "gemma3-window"], action="append")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    only = set(args.only or ["dequant", "rope", "smollm2", "gemma3", "gemma3-window"])
    if "dequant" in only:
        dequant_goldens(args.smollm, args.gemma, args.out)
    if "rope" in only:
        rope_goldens(args.out)
    if "smollm2" in only:
        model_goldens("smollm2", args.smollm, args.out / "smollm2")
    if "gemma3" in only and args.gemma is not None:
        model_goldens("gemma3", args.gemma, args.out / "gemma3", keep_logits=2)
    if "gemma3-window" in only and args.gemma is not None:
        model_goldens("gemma3", args.gemma, args.out / "gemma3", keep_logits=2, window=WINDOW)


if __name__ == "__main__":
    main()
