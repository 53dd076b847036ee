#!/usr/bin/env python3
"""Hugging Face transformers on the same GPU and shapes as benches/gpu_generate.rs, for a
side-by-side line: random-weight Llama-3.2-3B and Gemma-3-4B (bf16, sdpa attention), prefill of
2048 tokens and 128 greedy decode steps after a 512-token prompt, with the KV cache. Prints one
JSON line per model. Needs torch with CUDA and transformers (the GPU machine's image has them)."""

import json
import sys
import time

import torch
from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

PREFILL, PROMPT, DECODE = 2048, 512, 128

CONFIGS = {
    "Llama-3.2-3B shapes (random weights)": LlamaConfig(
        hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
        num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192}),
    "Gemma-3-4B shapes (random weights)": Gemma3TextConfig(
        hidden_size=2560, intermediate_size=10240, num_hidden_layers=34, num_attention_heads=8,
        num_key_value_heads=4, head_dim=256, vocab_size=262208, max_position_embeddings=131072,
        rms_norm_eps=1e-6, rope_theta=1000000.0, rope_local_base_freq=10000.0, query_pre_attn_scalar=256,
        sliding_window=1024, rope_scaling={"rope_type": "linear", "factor": 8.0}, tie_word_embeddings=True),
}


def sync():
    torch.cuda.synchronize()


@torch.inference_mode()
def bench(name, config):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16, attn_implementation="sdpa").cuda().eval()
    ids = torch.randint(0, config.vocab_size, (1, PREFILL), device="cuda")
    for _ in range(2):
        model(ids, use_cache=True, logits_to_keep=1)
    sync()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        model(ids, use_cache=True, logits_to_keep=1)
        sync()
        times.append(time.perf_counter() - t)
    pre = sorted(times)[1]
    out = model(ids[:, :PROMPT], use_cache=True, logits_to_keep=1)
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    t = time.perf_counter()
    for _ in range(DECODE):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    sync()
    dec = time.perf_counter() - t
    print(json.dumps({"engine": "transformers", "model": name, "prefill_tokens_per_second": PREFILL / pre,
                      "decode_tokens_per_second": DECODE / dec, "gpu": torch.cuda.get_device_name(),
                      "torch": torch.__version__, "transformers": __import__("transformers").__version__}))
    sys.stdout.flush()
    del model
    torch.cuda.empty_cache()


if __name__ == "__main__":
    for name, cfg in CONFIGS.items():
        bench(name, cfg)
