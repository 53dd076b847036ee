#!/usr/bin/env python3
"""scalpel's ``Model.run_with_cache`` against Hugging Face transformers' forward pass with
``output_hidden_states`` and ``output_attentions`` on the same CPU, the same GGUF file and prompt,
the same thread count: seconds per call (median), peak resident memory of each engine's own
process, and how far the two engines' residual streams are apart.

Each engine runs in a child process of its own (so each peak RSS is that engine's alone): scalpel
from the Python that runs this script (with the package installed: scripts/test_python.sh builds it
into .venv), transformers from ``--hf-python`` (a Python with scripts/golden/requirements.txt).

    .venv/bin/python benches/run_with_cache_vs_hf.py --hf-python /path/to/venv/bin/python [--threads 2]

Prints a table and, last, one JSON line with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PROMPT = (
    "The apple is green. What color is the apple? In the orchard behind the old farmhouse, the "
    "trees were heavy with fruit, and the children ran between the rows collecting the ones that "
    "had fallen into the grass before the rain came in from the hills."
)
MODEL = os.path.expanduser("~/.cache/scalpel/models/SmolLM2-135M-Instruct.Q4_1.gguf")
CALLS = 10


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_scalpel(model_path: str, threads: int, out: str) -> dict:
    import numpy as np

    import scalpel

    t = time.perf_counter()
    model = scalpel.Model(model_path, device="cpu")
    load = time.perf_counter() - t
    names = ["embed", "blocks.*.resid_post", "blocks.*.attn_probs"]
    rows = {}
    for label, which in (("hidden states + attentions", names), ("every probe point", None)):
        model.run_with_cache(PROMPT, names=which)  # warm-up
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            _, cache = model.run_with_cache(PROMPT, names=which)
            times.append(time.perf_counter() - t)
        rows[label] = statistics.median(times)
    _, cache = model.run_with_cache(PROMPT, names=names)
    hidden = np.stack([cache["embed"]] + [cache[f"blocks.{l}.resid_post"] for l in range(model.n_layers)])
    np.save(out, hidden.astype(np.float32))
    return {"engine": "scalpel", "load_s": load, "seconds": rows, "tokens": len(cache.str_tokens), "peak_rss_mib": peak_rss_mib()}


def run_hf(model_path: str, threads: int, out: str) -> dict:
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    directory, name = os.path.split(model_path)
    t = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    load = time.perf_counter() - t
    ids = tok(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        model(ids, output_hidden_states=True, output_attentions=True)  # warm-up
        times = []
        for _ in range(CALLS):
            t = time.perf_counter()
            o = model(ids, output_hidden_states=True, output_attentions=True)
            times.append(time.perf_counter() - t)
    hidden = torch.stack(o.hidden_states)[:, 0].numpy()
    # The embedding and every layer's output but the last, which transformers gives after the
    # final norm.
    np.save(out, hidden[:-1].astype(np.float32))
    return {
        "engine": f"transformers {transformers.__version__} / torch {torch.__version__.split('+')[0]}",
        "load_s": load,
        "seconds": {"hidden states + attentions": statistics.median(times)},
        "tokens": int(ids.shape[1]),
        "peak_rss_mib": peak_rss_mib(),
    }


def child(engine: str, python: str, model_path: str, threads: int, out: str) -> dict:
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    p = subprocess.run(
        [python, os.path.abspath(__file__), "--child", engine, "--model", model_path, "--threads", str(threads), "--out", out],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if p.returncode != 0:
        sys.exit(f"the {engine} child failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hf-python", default=os.environ.get("PYTHON", "python3"))
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--child", choices=["scalpel", "hf"])
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child:
        run = run_scalpel if a.child == "scalpel" else run_hf
        print(json.dumps(run(a.model, a.threads, a.out)))
        return
    import numpy as np

    with tempfile.TemporaryDirectory() as d:
        ours = child("scalpel", sys.executable, a.model, a.threads, os.path.join(d, "s.npy"))
        theirs = child("hf", a.hf_python, a.model, a.threads, os.path.join(d, "h.npy"))
        # transformers' last hidden state is after the final norm: the last layer's output is left
        # out of the comparison on both sides.
        hs, hh = np.load(os.path.join(d, "s.npy"))[:-1], np.load(os.path.join(d, "h.npy"))
    if hs.shape != hh.shape:
        sys.exit(f"the engines disagree on the shapes: {hs.shape} vs {hh.shape} (tokenization?)")
    # Per layer and position, relative to the vector's size; the first position (the attention
    # sink, with activations far larger than the others) is included.
    rel = np.linalg.norm(hs - hh, axis=-1) / np.maximum(np.linalg.norm(hh, axis=-1), 1e-30)
    key = "hidden states + attentions"
    ratio = theirs["seconds"][key] / ours["seconds"][key]
    print(f"{os.path.basename(a.model)}, {ours['tokens']} tokens, {a.threads} threads, median of {CALLS} calls")
    print(f"{'engine':44}{'what is kept':30}{'s/call':>9}{'load s':>8}{'peak RSS MiB':>14}")
    for r in (ours, theirs):
        for what, s in r["seconds"].items():
            print(f"{r['engine']:44}{what:30}{s:>9.4f}{r['load_s']:>8.2f}{r['peak_rss_mib']:>14.0f}")
    print(f"scalpel is {ratio:.2f}x transformers' speed on {key}; peak RSS {ours['peak_rss_mib'] / theirs['peak_rss_mib']:.2f}x")
    print(f"residual streams apart by at most {rel.max():.2e} (median {np.median(rel):.2e}) relative, over {rel.size} vectors")
    print(json.dumps({"scalpel": ours, "transformers": theirs, "speed_ratio": ratio, "max_rel_diff": float(rel.max()),
                      "median_rel_diff": float(np.median(rel)), "threads": a.threads, "model": os.path.basename(a.model)}))


if __name__ == "__main__":
    main()
