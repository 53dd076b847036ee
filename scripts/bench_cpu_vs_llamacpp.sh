#!/usr/bin/env bash
# scalpel's CPU engine and llama.cpp side by side on this machine, on the same GGUF files, token ids
# and thread count: prefill and decode tok/s and peak resident memory, one engine at a time.
#
#   scripts/bench_cpu_vs_llamacpp.sh [THREADS]     (default 2; ROUNDS=N, default 3)
#
# The engines take turns, ROUNDS times per model, and each ratio is computed within a round, then
# the median and range over rounds are printed: on a shared VM the speed of the same binary moved
# by up to 2x within minutes (2026-12-03), so engines run minutes apart are not comparable. Each
# run also records the CPU time the hypervisor stole from this VM while it ran (/proc/stat), as a
# share of the run's wall time summed over all CPUs.
#
# Models: the default model (SmolLM2-135M-Instruct Q4_1) and a random-weight GGUF of
# Llama-3.2-3B's shapes in the Q4_K_M mix (scripts/bench/random_gguf.py, written once into the
# models directory, ~2 GB). llama.cpp comes from the llama-cpp-python package, built from source
# into .venv-llamacpp (git-ignored) on first use (about ten minutes on 2 cores): never a wheel from
# pip's cache, which may have been built for another machine's instruction set.
#
# On CPUs with AMX, llama.cpp 0.3.36's AMX matrix product segfaults on the first batch (seen on an
# Intel Xeon with AMX, Q4_1 and Q4_K_M alike; ggml-org/llama.cpp#20824, closed without a fix), so
# there it is built without AMX: GGML_NATIVE off and every other instruction-set option this CPU
# has turned on by name (AVX-512 and VNNI included), so that only AMX is missing. The venv records
# the flags it was built with and is rebuilt when they change.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-2}
prompt=64
decode=64
python=$(command -v python3)
venv=.venv-llamacpp
cmake_args=""
if grep -qw amx_int8 /proc/cpuinfo 2>/dev/null; then
  flags=$(grep -m1 '^flags' /proc/cpuinfo)
  has() { [[ " $flags " == *" $1 "* ]]; }
  cmake_args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
  for f in avx:AVX avx2:AVX2 fma:FMA f16c:F16C bmi2:BMI2 avx_vnni:AVX_VNNI avx512f:AVX512 \
           avx512vbmi:AVX512_VBMI avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    has "${f%%:*}" && cmake_args+=" -DGGML_${f#*:}=ON"
  done
fi
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import llama_cpp, gguf' 2>/dev/null \
   || [ "$(cat "$venv/cmake_args" 2>/dev/null)" != "$cmake_args" ]; then
  echo "bench: building llama-cpp-python 0.3.36 from source into $venv${cmake_args:+ (CMAKE_ARGS=$cmake_args)}" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  CMAKE_ARGS="$cmake_args" "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-cache-dir \
    --no-binary llama-cpp-python llama-cpp-python==0.3.36 gguf==0.19.0 numpy
  printf '%s' "$cmake_args" > "$venv/cmake_args"
fi
models="${SCALPEL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/scalpel/models}"
smol="$models/SmolLM2-135M-Instruct.Q4_1.gguf"
big="$models/random-llama-3.2-3b-q4_k_m.gguf"
[ -f "$smol" ] || { echo "bench: $smol missing (run scripts/setup.sh)" >&2; exit 1; }
if [ ! -f "$big" ]; then
  echo "bench: writing $big" >&2
  "$venv/bin/python" scripts/bench/random_gguf.py "$big.partial" && mv "$big.partial" "$big"
fi
bench_bin=$(cargo bench -q --bench cpu_generate --no-run --message-format=json \
  | "$python" -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"] == "cpu_generate"][-1])')
rounds=${ROUNDS:-3}
# One engine's JSON line with "steal" added: the share of the run's CPU time (all CPUs) stolen.
stolen() {
  local before after
  before=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  local line
  line=$("$@" | tail -n 1)
  after=$(awk '/^cpu /{print $9, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat)
  "$python" -c 'import json,sys; r=json.loads(sys.argv[1]); b=list(map(int,sys.argv[2].split())); a=list(map(int,sys.argv[3].split())); r["steal"]=(a[0]-b[0])/max(a[1]-b[1],1); print(json.dumps(r))' \
    "$line" "$before" "$after"
}
results=()
for model in "$smol" "$big"; do
  for ((round = 1; round <= rounds; round++)); do
    ours=$(stolen env RAYON_NUM_THREADS=$threads "$bench_bin" --model "$model" --prompt-tokens $prompt --decode $decode --json)
    int8=$(stolen env RAYON_NUM_THREADS=$threads "$bench_bin" --model "$model" --prompt-tokens $prompt --decode $decode --activations int8 --json)
    theirs=$(stolen "$venv/bin/python" scripts/bench/llamacpp_run.py "$model" $prompt $decode "$threads")
    results+=("$ours" "$int8" "$theirs")
  done
done
"$python" - "$rounds" "${results[@]}" <<'PY'
import json, os, statistics, sys
rounds = int(sys.argv[1])
rows = [json.loads(a) for a in sys.argv[2:]]
print(f"{'model':34}{'engine':34}{'round':>6}{'prefill tok/s':>14}{'decode tok/s':>13}{'peak RSS MiB':>13}{'steal':>7}")
per_model = len(rows) // (3 * rounds)
for mi in range(per_model):
    block = rows[mi * 3 * rounds:(mi + 1) * 3 * rounds]
    trips = [block[3 * i:3 * i + 3] for i in range(rounds)]
    name = os.path.basename(block[0]["model"])
    for ri, trip in enumerate(trips, 1):
        for r in trip:
            engine = r["engine"] + (" (int8 activations)" if r.get("activations") == "int8" else "")
            print(f"{name[:33]:34}{engine[:33]:34}{ri:>6}{r['prefill_tokens_per_second']:>14.1f}"
                  f"{r['decode_tokens_per_second']:>13.1f}{r['peak_rss_bytes'] / 2**20:>13.0f}{r['steal']:>7.0%}")
    ours0 = trips[0][0]
    bound = 1.15 * (ours0["file_bytes"] + ours0["kv_cache_bytes"]) + 64 * 2**20
    for col, label in ((0, "scalpel / llama.cpp"), (1, "scalpel int8 / llama.cpp")):
        out = []
        for key in ("prefill_tokens_per_second", "decode_tokens_per_second"):
            ratios = sorted(t[col][key] / t[2][key] for t in trips)
            out.append(f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})")
        rss = max(t[col]["peak_rss_bytes"] for t in trips) / bound
        print(f"{'':34}{label:34}  prefill {out[0]:20} decode {out[1]:20} "
              f"RSS {rss:.2f} of the bound 1.15 x (file + KV) + 64 MiB = {bound / 2**20:.0f} MiB")
print(f"{rows[0]['threads']} threads, {rows[0]['prompt_tokens']} prompt tokens, {rows[0]['decode_tokens']} decoded; "
      f"ratios: median (min-max) over {rounds} rounds, each ratio within one round")
PY
