#!/usr/bin/env python3
"""Hugging Face transformers (float32, CPU) on the same GGUF and prompt as benches/cpu_generate.rs:
prefill tokens/s (median of 5) and greedy decode tokens/s with the KV cache (median of 3).
Prints one JSON line. Needs scripts/golden/requirements.txt."""

import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

root = Path(__file__).resolve().parent.parent
bench = (root / "benches/cpu_generate.rs").read_text()
prompt = "".join(re.search(r'pub const PROMPT: &str = "(.*?)";', bench, re.S).group(1).split("\\\n"))
model_path = Path(sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/scalpel/models/SmolLM2-135M-Instruct.Q4_1.gguf"))
threads = int(os.environ.get("THREADS", os.cpu_count() or 1))
torch.set_num_threads(threads)
DECODE = 64

tok = AutoTokenizer.from_pretrained(str(model_path.parent), gguf_file=model_path.name)
model = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name, dtype=torch.float32)
model.eval()
ids = tok(prompt, return_tensors="pt")["input_ids"]

with torch.inference_mode():
    prefill = []
    for i in range(6):
        t = time.perf_counter()
        model(ids, use_cache=True)
        if i:
            prefill.append(ids.shape[1] / (time.perf_counter() - t))
    decode = []
    for _ in range(3):
        out = model(ids, use_cache=True)
        past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        t = time.perf_counter()
        for _ in range(DECODE):
            out = model(nxt.view(1, 1), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[0, -1].argmax()
        decode.append(DECODE / (time.perf_counter() - t))

print(json.dumps({
    "engine": "transformers", "version": __import__("transformers").__version__, "torch": torch.__version__,
    "device": "cpu", "threads": threads, "model": model_path.name, "prompt_tokens": ids.shape[1],
    "decode_tokens": DECODE, "prefill_tokens_per_second": statistics.median(prefill),
    "decode_tokens_per_second": statistics.median(decode),
}))
