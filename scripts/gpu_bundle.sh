#!/usr/bin/env bash
# Builds what a GPU machine without Rust needs into .gpu/ (git-ignored): the CLI, the GPU test
# binaries and the GPU benchmarks, stripped, for sm_90 by default (SCALPEL_CUDA_ARCHS overrides),
# packed into .gpu/fast.tar.xz for `gpu_check.sh fast` (one device call, no model), and the
# default models cut into parts small enough to travel (a device call carries at most 64 MiB)
# for the real-model checks. scripts/gpu_check.sh runs them there; see its header.
set -euo pipefail
cd "$(dirname "$0")/.."
export SCALPEL_CUDA_ARCHS=${SCALPEL_CUDA_ARCHS:-90}
out=.gpu
rm -rf "$out/bin"
mkdir -p "$out/bin" "$out/models"

# Executables by target name, from cargo's own build report.
build() {
  cargo "$@" --message-format=json 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
{
  build build --release --bin scalpel
  build test --release --no-run --test kernels --test cuda_model
  build bench --no-run --bench gpu_kernels --bench gpu_generate --bench capture_cost
} | while read -r name exe; do
  cp "$exe" "$out/bin/$name"
  strip "$out/bin/$name"
done
ls -la "$out/bin"
# What `gpu_check.sh fast` needs, packed to travel in one call (under 64 MiB).
tar -cJf "$out/fast.tar.xz" -C "$out/bin" kernels cuda_model gpu_kernels gpu_generate scalpel
ls -la "$out/fast.tar.xz"

models="${SCALPEL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/scalpel/models}"
for f in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  [ -f "$models/$f" ] || { echo "gpu_bundle: $models/$f missing (run scripts/setup.sh)" >&2; exit 1; }
  rm -f "$out/models/$f".part*
  split -b 30M -d "$models/$f" "$out/models/$f.part"
  sha256sum "$models/$f" | cut -d' ' -f1 > "$out/models/$f.sha256"
done
ls -la "$out/models"
du -sh "$out/bin" "$out/models"
