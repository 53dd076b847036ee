#!/usr/bin/env bash
# scalpel's CPU engine and Hugging Face transformers side by side on this machine: same model,
# prompt and token counts. Needs a Python with scripts/golden/requirements.txt (PYTHON=...).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
ours=$(cargo bench -q --bench cpu_generate -- --json 2>/dev/null | tail -n 1)
theirs=$("$python" scripts/bench_hf_cpu.py 2>/dev/null | tail -n 1)
"$python" - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{'':14}{'prefill tok/s':>15}{'decode tok/s':>15}")
for r in (a, b):
    print(f"{r['engine']:14}{r['prefill_tokens_per_second']:>15.1f}{r['decode_tokens_per_second']:>15.1f}")
print(f"{'ratio':14}{a['prefill_tokens_per_second']/b['prefill_tokens_per_second']:>14.2f}x{a['decode_tokens_per_second']/b['decode_tokens_per_second']:>14.2f}x")
print(f"scalpel peak RSS {a['peak_rss_bytes']/2**20:.0f} MiB = {a['peak_rss_bytes']/a['weights_bytes']:.2f}x the f32 weights; "
      f"{a['threads']} threads, {a['prompt_tokens']} prompt tokens, {a['decode_tokens']} decoded")
PY
