#!/usr/bin/env bash
# Runs scalpel's GPU checks on a machine with an NVIDIA GPU and no Rust, from the repository root,
# with what scripts/gpu_bundle.sh built here: the binaries in .gpu/bin (or packed in .gpu/fast.tar.xz)
# and, for the real-model checks, the model parts in .gpu/models. Logs and a summary go to $OUT
# (or .gpu/out).
#
#   scripts/gpu_check.sh fast       ONE call, no model carried, under 5 minutes: kernel parity
#                                   (tests/kernels.rs), random-weight models of the SmolLM2,
#                                   gemma-3-270m and Llama-3.2-3B shapes against the CPU
#                                   (tests/cuda_model.rs random_models), compute-sanitizer memcheck,
#                                   racecheck and synccheck over the kernel tests, and the prefill
#                                   and decode benches on random-weight models; one summary
#   scripts/gpu_check.sh kernels    every kernel against its CPU twin
#   scripts/gpu_check.sh sanitize   compute-sanitizer memcheck, racecheck, initcheck, synccheck over
#                                   the kernel tests, and memcheck over a short generate and trace
#   scripts/gpu_check.sh model      the whole model on CUDA vs CPU and transformers (tests/cuda_model.rs)
#   scripts/gpu_check.sh bench      gpu_kernels, gpu_generate, capture_cost, and transformers beside them
#   scripts/gpu_check.sh all        all but fast
#
# Every test binary is the one the mock device runs in every `cargo test`; here `--device cuda`.
# A device call carries at most 64 MiB: `fast` needs only .gpu/fast.tar.xz (the test and bench
# binaries, packed). The real-model checks carry the model parts in further calls (30 MiB each):
# `model` reassembles the parts it finds and checks their sha256 first.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=${OUT:-$root/.gpu/out}
mkdir -p "$out"
bin=$root/.gpu/bin
if [ ! -x "$bin/kernels" ] && [ -f "$root/.gpu/fast.tar.xz" ]; then
  mkdir -p "$bin" && tar -xJf "$root/.gpu/fast.tar.xz" -C "$bin"
fi
[ -x "$bin/kernels" ] || { echo "gpu_check: $bin/kernels missing: run scripts/gpu_bundle.sh where Rust is" >&2; exit 2; }

# cuBLAS: the binary opens it at run time.
find_cublas() {
  local d
  for d in $(ldconfig -p 2>/dev/null | awk '/libcublas\.so/ {print $NF}' | xargs -r -n1 dirname | sort -u) \
           /usr/local/cuda*/lib64 /usr/local/cuda*/targets/x86_64-linux/lib \
           $(python3 -c 'import site,glob; print(" ".join(glob.glob(p + "/nvidia/*/lib") for p in site.getsitepackages()))' 2>/dev/null | tr -d "[]',"); do
    if ls "$d"/libcublas.so* >/dev/null 2>&1; then echo "$d"; return; fi
  done
}
cublas_dir=$(find_cublas)
if [ -n "$cublas_dir" ]; then
  export LD_LIBRARY_PATH="$cublas_dir:${LD_LIBRARY_PATH:-}"
  # The loader asks for libcublas.so or libcublas.so.13; give it whichever version is there.
  if ! ls "$cublas_dir"/libcublas.so >/dev/null 2>&1 && ! ls "$cublas_dir"/libcublas.so.13 >/dev/null 2>&1; then
    shim=$root/.gpu/lib; mkdir -p "$shim"
    for lib in libcublas libcublasLt; do
      real=$(ls "$cublas_dir"/$lib.so.* 2>/dev/null | head -n1)
      [ -n "$real" ] && ln -sf "$real" "$shim/$lib.so"
    done
    export LD_LIBRARY_PATH="$shim:$LD_LIBRARY_PATH"
  fi
fi
echo "cuBLAS from: ${cublas_dir:-not found}" | tee "$out/env.txt"
nvidia-smi >> "$out/env.txt" 2>&1
head -n 12 "$out/env.txt"

export SCALPEL_ROOT=$root SCALPEL_BIN=$bin/scalpel
models=$root/.gpu/models
assemble() {
  local f=$1
  [ -f "$models/$f" ] && return 0
  ls "$models/$f".part* >/dev/null 2>&1 || return 1
  cat "$models/$f".part* > "$models/$f.tmp"
  if [ "$(sha256sum "$models/$f.tmp" | cut -d' ' -f1)" = "$(cat "$models/$f.sha256" 2>/dev/null)" ]; then
    mv "$models/$f.tmp" "$models/$f"
  else
    rm -f "$models/$f.tmp"
    echo "gpu_check: $f: parts incomplete or corrupt (sha256 mismatch)" >&2
    return 1
  fi
}

declare -a summary
failures=0
run() { # name command...
  local name=$1; shift
  echo "== $name: $*"
  local t0=$SECONDS
  "$@" > "$out/$name.log" 2>&1
  local rc=$?
  [ $rc = 0 ] || failures=$((failures + 1))
  tail -n 25 "$out/$name.log"
  summary+=("$(printf '%-28s %-6s %4ss  %s' "$name" "$([ $rc = 0 ] && echo ok || echo FAIL:$rc)" $((SECONDS - t0)) \
    "$(grep -E 'passed|FAILED|ERROR SUMMARY|tok/s' "$out/$name.log" | tail -n 1 | cut -c1-70)")")
}

san() { # tool, then the command
  local tool=$1; shift
  compute-sanitizer --tool "$tool" --error-exitcode 9 --print-limit 20 "$@"
}

modes=${*:-all}
want() { [[ " $modes " == *" $1 "* || ( " $modes " == *" all "* && $1 != fast ) ]]; }

if want fast; then
  export SCALPEL_TEST_QUICK=1
  run kernels "$bin/kernels" --device cuda
  run random_models "$bin/cuda_model" --device cuda random_models
  run memcheck san memcheck "$bin/kernels" --device cuda
  run racecheck san racecheck "$bin/kernels" --device cuda attention sample rms_norm add_rms_norm interventions
  run synccheck san synccheck "$bin/kernels" --device cuda attention sample rms_norm
  run gpu_kernels "$bin/gpu_kernels"
  run gpu_generate "$bin/gpu_generate"
fi
if want kernels; then
  run kernels "$bin/kernels" --device cuda
fi
if want sanitize; then
  run memcheck san memcheck "$bin/kernels" --device cuda
  run racecheck san racecheck "$bin/kernels" --device cuda attention sample rms_norm add_rms_norm interventions
  run initcheck san initcheck "$bin/kernels" --device cuda
  run synccheck san synccheck "$bin/kernels" --device cuda attention sample rms_norm
fi
have_models=0
if want model || want sanitize || want bench; then
  mkdir -p "$models"
  assemble SmolLM2-135M-Instruct.Q4_1.gguf && have_models=1
  assemble gemma-3-270m-q4_k_m.gguf || true
  export SCALPEL_MODELS=$models
fi
if [ $have_models = 1 ]; then
  want model && run cuda_model "$bin/cuda_model" --device cuda
  if want sanitize; then
    run memcheck-generate san memcheck "$bin/scalpel" generate -p "The capital of France is" -n 8 --device cuda
    run memcheck-trace san memcheck "$bin/scalpel" trace -p "the apple is green" -o "$out/trace.safetensors" --force \
      --points 'blocks.*.resid_post,blocks.*.attn_probs,logits' --device cuda
  fi
elif want model || want sanitize || want bench; then
  summary+=("model checks: skipped (no model parts in .gpu/models)")
fi
if want bench; then
  run gpu_kernels "$bin/gpu_kernels"
  run gpu_generate "$bin/gpu_generate"
  [ $have_models = 1 ] && run capture_cost "$bin/capture_cost" cuda
  run hf_gpu python3 scripts/bench_hf_gpu.py
fi
echo
printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
[ $failures = 0 ]
