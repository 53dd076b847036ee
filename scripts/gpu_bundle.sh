#!/usr/bin/env bash
# Builds what a GPU machine without Rust needs into .gpu/ (git-ignored): the GPU test binaries and
# benchmarks and the CLI, stripped, in .gpu/bin; the four that `gpu_check.sh fast` runs packed into
# .gpu/fast.tar.gz (gzip: every machine unpacks it; xz is not everywhere); and the default models
# cut into parts small enough to travel, for the real-model checks. scripts/gpu_check.sh runs them
# there; see its header. The prepared device call:
#
#   run(command="scripts/gpu_check.sh fast", carry=[".gpu/fast.tar.gz"], timeout_s=420)
#
#   scripts/gpu_bundle.sh          release build for sm_90 (SCALPEL_CUDA_ARCHS overrides) in its
#                                  own target directory (target/gpu), so the main build keeps its
#                                  kernels; then the models' parts
#   scripts/gpu_bundle.sh --dry    what `cargo test` built (the test profile, every default arch),
#                                  no models: for scripts/gpu_dry_run.sh
#
# A device call carries at most 64 MiB, the working tree included: the bundle is refused when the
# tree plus .gpu/fast.tar.gz passes 60 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
dry=0
for a in "$@"; do
  case "$a" in
    --dry) dry=1 ;;
    *) echo "gpu_bundle: unknown argument $a" >&2; exit 2 ;;
  esac
done
out=.gpu
mkdir -p "$out"
rm -rf "$out/bin" "$out/fast.tar.gz"
mkdir -p "$out/bin"
if [ $dry = 1 ]; then
  profile=()
else
  export SCALPEL_CUDA_ARCHS=${SCALPEL_CUDA_ARCHS:-90}
  export CARGO_TARGET_DIR=${GPU_TARGET_DIR:-target/gpu}
  profile=(--release)
fi

# Executables by target name, from cargo's own build report; cargo's errors are shown, not lost.
log=$out/build.log
: > "$log"
build() {
  if ! cargo "$@" --message-format=json > "$out/build.json" 2>> "$log"; then
    echo "gpu_bundle: cargo $* failed:" >&2
    tail -n 40 "$log" >&2
    grep '"level":"error"' "$out/build.json" | python3 -c '
import json, sys
for line in sys.stdin:
    print(json.loads(line)["message"]["rendered"], file=sys.stderr)' || true
    exit 1
  fi
  python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])' "$out/build.json" >> "$out/artifacts.txt"
}
: > "$out/artifacts.txt"
if [ $dry = 1 ]; then
  # The test profile builds benches too (`cargo test --bench`); their main runs as in `cargo bench`.
  build test --no-run --bin scalpel --test kernels --test cuda_model --bench gpu_kernels --bench gpu_generate \
    --bench capture_cost
else
  build build --release --bin scalpel
  build test --release --no-run --test kernels --test cuda_model
  build bench --no-run --bench gpu_kernels --bench gpu_generate --bench capture_cost
fi
while read -r name exe; do
  cp "$exe" "$out/bin/$name"
  strip "$out/bin/$name"
done < "$out/artifacts.txt"
rm -f "$out/build.json" "$out/artifacts.txt"
ls -la "$out/bin"
for b in kernels cuda_model gpu_kernels gpu_generate; do
  [ -x "$out/bin/$b" ] || { echo "gpu_bundle: $b was not built" >&2; exit 1; }
done
# What `gpu_check.sh fast` needs, packed to travel in one call.
tar -czf "$out/fast.tar.gz" -C "$out/bin" kernels cuda_model gpu_kernels gpu_generate
ls -la "$out/fast.tar.gz"

# What travels with the call: the tracked and the untracked-but-not-ignored files, shared/, and the
# carried bundle.
tree=$(git ls-files -z -co --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
shared=$( [ -d shared ] && du -sb shared | cut -f1 || echo 0)
bundle=$(stat -c %s "$out/fast.tar.gz")
total=$((tree + ${shared:-0} + bundle))
limit=$((60 << 20))
awk -v t="$tree" -v s="${shared:-0}" -v b="$bundle" 'BEGIN {
  printf "gpu_bundle: tree %.1f MiB + shared %.1f MiB + bundle %.1f MiB = %.1f MiB to carry (limit 60 MiB)\n",
    t / 1048576, s / 1048576, b / 1048576, (t + s + b) / 1048576 }'
[ $total -le $limit ] || { echo "gpu_bundle: too big to carry in one device call" >&2; exit 1; }

[ $dry = 1 ] && exit 0
models="${SCALPEL_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/scalpel/models}"
mkdir -p "$out/models"
for f in SmolLM2-135M-Instruct.Q4_1.gguf gemma-3-270m-q4_k_m.gguf; do
  [ -f "$models/$f" ] || { echo "gpu_bundle: $models/$f missing (run scripts/setup.sh)" >&2; exit 1; }
  rm -f "$out/models/$f".part*
  split -b 30M -d "$models/$f" "$out/models/$f.part"
  sha256sum "$models/$f" | cut -d' ' -f1 > "$out/models/$f.sha256"
done
ls -la "$out/models"
du -sh "$out/bin" "$out/models"
