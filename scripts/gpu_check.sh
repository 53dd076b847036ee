#!/usr/bin/env bash
# Runs scalpel's GPU checks on a machine with an NVIDIA GPU and no Rust, from the repository root,
# with what scripts/gpu_bundle.sh built here: the binaries in .gpu/bin (or packed in
# .gpu/fast.tar.gz) and, for the real-model checks, the model parts in .gpu/models. Logs and a
# summary go to $OUT (or .gpu/out).
#
#   scripts/gpu_check.sh fast [--dry]  ONE device call, no model carried, inside $GPU_DEADLINE
#                                   seconds (default 360): environment and library discovery,
#                                   every kernel against its CPU twin (one case per process; a
#                                   failing case is rerun at once with synchronous launches and
#                                   under memcheck), random-weight models of the SmolLM2,
#                                   gemma-3-270m and Llama-3.2-3B shapes against the CPU, graph
#                                   replay checked by name, compute-sanitizer memcheck, racecheck and
#                                   synccheck over the kernel tests, then the kernel and
#                                   prefill/decode benches
#   scripts/gpu_check.sh kernels    every kernel against its CPU twin
#   scripts/gpu_check.sh sanitize   compute-sanitizer memcheck, racecheck, initcheck, synccheck over
#                                   the kernel tests, and memcheck over a short generate and trace
#   scripts/gpu_check.sh model      the whole model on CUDA vs CPU and transformers (tests/cuda_model.rs)
#   scripts/gpu_check.sh bench      gpu_kernels, gpu_generate, capture_cost, and transformers beside them
#   scripts/gpu_check.sh all        all but fast
#
# The device machine gives one command at most 10 minutes, brings back at most 8 files from $OUT
# and may kill the command: so every step runs under its own `timeout`, steps are ordered by
# value, a step that would start too close to the deadline is skipped and reported as skipped, a
# failure never stops the run, and after every step one line is appended to $OUT/summary.txt (a
# killed run still says what it found). $OUT holds at most 8 files: summary.txt, env.txt and one
# log per group of steps (kernels, models, sanitize, bench).
#
# --dry runs the same sequence here, without a GPU: the binaries on the mock device, stand-ins for
# nvidia-smi and compute-sanitizer. scripts/gpu_dry_run.sh drives it and checks what a GPU run
# depends on (see there).
#
# Every test binary is the one the mock device runs in every `cargo test`; here `--device cuda`.
# A device call carries at most 64 MiB: `fast` needs only .gpu/fast.tar.gz (the test and bench
# binaries, packed with gzip, which every machine can unpack). The real-model checks carry the
# model parts in further calls (30 MiB each): `model` reassembles the parts it finds and checks
# their sha256 first.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD

dry=0
modes=()
for a in "$@"; do
  case "$a" in
    --dry) dry=1 ;;
    fast|kernels|sanitize|model|bench|all) modes+=("$a") ;;
    *) echo "gpu_check: unknown argument $a (modes: fast kernels sanitize model bench all; --dry)" >&2; exit 2 ;;
  esac
done
[ ${#modes[@]} -gt 0 ] || modes=(all)
want() { [[ " ${modes[*]} " == *" $1 "* || ( " ${modes[*]} " == *" all "* && $1 != fast ) ]]; }

out=${OUT:-$root/.gpu/out}
mkdir -p "$out"
summary=$out/summary.txt
: > "$summary"
deadline=$((SECONDS + ${GPU_DEADLINE:-360}))
# A step is skipped when fewer seconds than this are left: it could not finish, and the last
# lines of the summary must still be written before the caller's own limit.
min_step=${GPU_MIN_STEP:-15}

line() { # name status seconds detail: one summary line, written at once
  printf '%-40s %-9s %4ss  %s\n' "$1" "$2" "$3" "$4" | tee -a "$summary"
}

device=cuda
if [ $dry = 1 ]; then
  device=mock
  # Stand-ins: nvidia-smi says what it is; compute-sanitizer drops its own options and runs the
  # command (the mock checks memory itself), printing the line the real tool ends with.
  fake=$(mktemp -d)
  printf '#!/bin/sh\necho "nvidia-smi stand-in (gpu_check --dry): no GPU, the mock device"\n' > "$fake/nvidia-smi"
  cat > "$fake/compute-sanitizer" <<'SH'
#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in --tool|--error-exitcode|--print-limit|--report-api-errors) shift 2 ;; --*) shift ;; *) break ;; esac
done
"$@"; rc=$?
echo "========= ERROR SUMMARY: 0 errors (compute-sanitizer stand-in, gpu_check --dry)"
exit $rc
SH
  chmod +x "$fake/nvidia-smi" "$fake/compute-sanitizer"
  export PATH="$fake:$PATH"
fi

# --- the binaries -------------------------------------------------------------------------
bin=$root/.gpu/bin
if [ ! -x "$bin/kernels" ] && [ -f "$root/.gpu/fast.tar.gz" ]; then
  mkdir -p "$bin"
  # gzip is everywhere; python3's tarfile stands in where tar or gzip is missing.
  tar -xzf "$root/.gpu/fast.tar.gz" -C "$bin" 2>/dev/null ||
    python3 -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$root/.gpu/fast.tar.gz" "$bin"
fi
if [ ! -x "$bin/kernels" ]; then
  line bundle FAIL 0 "$bin/kernels missing: run scripts/gpu_bundle.sh where Rust is, and carry .gpu"
  exit 2
fi

# --- environment and library discovery ----------------------------------------------------
t0=$SECONDS
env_log=$out/env.txt
: > "$env_log"
# Directories that may hold $1 (a library file name pattern), best first: the loader's cache,
# the CUDA toolkits, every Python site-packages' nvidia/*/lib (the wheels PyTorch ships), then a
# bounded search of the usual roots.
lib_dirs() { # base name (libcublas)
  ldconfig -p 2>/dev/null | awk -v pat="^$1[.]so" '$1 ~ pat {print $NF}' | xargs -r -n1 dirname
  ls -d /usr/local/cuda*/lib64 /usr/local/cuda*/targets/*/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu 2>/dev/null
  python3 - <<'PY' 2>>"$env_log"
import glob, os, site, sys
roots = set(p for p in sys.path if p.endswith(("site-packages", "dist-packages")))
try:
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
except Exception as e:
    print(f"site: {e}", file=sys.stderr)
for r in sorted(roots):
    for d in sorted(glob.glob(os.path.join(r, "nvidia", "*", "lib"))):
        print(d)
PY
  timeout 20 find /usr /opt -maxdepth 6 -name "$1.so*" -printf '%h\n' 2>/dev/null
}
find_lib() { # base name (libcublas): the first directory holding it
  local d
  while read -r d; do
    [ -n "$d" ] && ls "$d/$1".so* >/dev/null 2>&1 && { echo "$d"; return; }
  done < <(lib_dirs "$1")
}
cuda_dir=$(find_lib libcuda)
cublas_dir=$(find_lib libcublas)
if [ -n "$cublas_dir" ]; then
  export LD_LIBRARY_PATH="$cublas_dir:${LD_LIBRARY_PATH:-}"
  # The binary asks for libcublas.so or libcublas.so.13: give it whichever version is there.
  if ! ls "$cublas_dir"/libcublas.so "$cublas_dir"/libcublas.so.13 >/dev/null 2>&1; then
    shim=$root/.gpu/lib; mkdir -p "$shim"
    for lib in libcublas libcublasLt; do
      real=$(ls "$cublas_dir"/$lib.so.* 2>/dev/null | head -n1)
      [ -n "$real" ] && ln -sf "$real" "$shim/$lib.so"
    done
    export LD_LIBRARY_PATH="$shim:$LD_LIBRARY_PATH"
  fi
fi
{
  echo "gpu_check ${modes[*]} (dry: $dry, device: $device, deadline ${GPU_DEADLINE:-360}s) at $(date -u +%FT%TZ)"
  echo "libcuda from: ${cuda_dir:-not found}"
  echo "libcublas from: ${cublas_dir:-not found} $(ls "$cublas_dir"/libcublas.so* 2>/dev/null | head -n3 | xargs -r -n1 basename | tr '\n' ' ')"
  echo "LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used,clocks.sm --format=csv 2>&1 || nvidia-smi 2>&1
  for b in "$bin"/*; do
    echo "--- ldd $(basename "$b")"
    ldd "$b" 2>&1 | grep -v -E 'linux-vdso|ld-linux' | sed 's/ (0x[0-9a-f]*)//'
  done
} >> "$env_log" 2>&1
line libcuda "$([ -n "$cuda_dir" ] || [ $dry = 1 ] && echo ok || echo MISSING)" 0 "${cuda_dir:-not found}"
line libcublas "$([ -n "$cublas_dir" ] || [ $dry = 1 ] && echo ok || echo MISSING)" 0 "${cublas_dir:-not found}"
line gpu ok $((SECONDS - t0)) "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n1 || nvidia-smi 2>&1 | head -n1)"
missing=$(for b in "$bin"/*; do ldd "$b" 2>&1 | awk '/not found/ {print $1}'; done | sort -u | tr '\n' ' ')
line ldd "$([ -z "$missing" ] && echo ok || echo FAIL)" 0 "${missing:+not found: }${missing:-every library of every binary resolves}"

export SCALPEL_ROOT=$root SCALPEL_BIN=$bin/scalpel
# The mock runs one schedule here (cargo test runs three); a GPU has its own.
mock_args=()
[ $dry = 1 ] && mock_args=(--schedule forward)

# --- the step runner ----------------------------------------------------------------------
failures=0
step() { # group name limit_seconds command...: runs it under `timeout`, logs, one summary line
  local group=$1 name=$2 limit=$3; shift 3
  local left=$((deadline - SECONDS))
  if [ $left -lt $min_step ]; then
    line "$name" SKIPPED 0 "deadline: ${left}s left of ${GPU_DEADLINE:-360}"
    LAST_STATUS=SKIPPED
    return 0
  fi
  [ $limit -gt $((left - 5)) ] && limit=$((left - 5))
  local log=$out/$group.log tmp
  tmp=$(mktemp)
  echo "== $name (limit ${limit}s): $*" >> "$log"
  local t=$SECONDS
  timeout -k 10 "$limit" "$@" > "$tmp" 2>&1
  local rc=$?
  cat "$tmp" >> "$log"
  local status=ok
  if [ $rc = 124 ] || [ $rc = 137 ]; then status=TIMEOUT; elif [ $rc != 0 ]; then status=FAIL:$rc; fi
  # A decode that could not be recorded falls back silently but for this note: make it loud.
  if grep -q 'not replayed as a graph' "$tmp"; then
    [ $status = ok ] && status=NOGRAPH
  fi
  [ $status = ok ] || failures=$((failures + 1))
  local detail
  detail=$(grep -E 'not replayed as a graph|passed|FAILED|panicked|ERROR SUMMARY|tok/s|TFLOP/s|GB/s|SKIPPED|error' "$tmp" |
    tail -n 1 | tr -s ' ' | cut -c1-90)
  line "$name" "$status" $((SECONDS - t)) "$detail"
  rm -f "$tmp"
  LAST_STATUS=$status
}

# compute-sanitizer, then the tool's name and the command (an array, not a function: `timeout`
# runs programs). API errors are cuBLAS's own probing, not ours.
san=(compute-sanitizer --report-api-errors no --error-exitcode 9 --print-limit 20 --tool)

kernel_cases() {
  "$bin/kernels" --list 2>/dev/null | grep -v '^kernels:'
}

if want fast; then
  export SCALPEL_TEST_QUICK=1
  cases=$(kernel_cases)
  [ -n "$cases" ] || line kernels-list FAIL 0 "kernels --list printed no cases"
  for c in $cases; do
    step kernels "kernel:$c" 60 "$bin/kernels" --device $device "${mock_args[@]}" --exact "$c"
    if [ "$LAST_STATUS" != ok ] && [ "$LAST_STATUS" != SKIPPED ]; then
      # An asynchronous fault is pinned to its launch with synchronous launches, and memcheck
      # names the access.
      SCALPEL_CUDA_SYNC=1 step kernels "kernel:$c:sync" 60 "$bin/kernels" --device $device "${mock_args[@]}" --exact "$c"
      step kernels "kernel:$c:memcheck" 120 "${san[@]}" memcheck "$bin/kernels" --device $device "${mock_args[@]}" --exact "$c"
    fi
  done
  step models random_models 150 "$bin/cuda_model" --device $device "${mock_args[@]}" --exact random_models_match_the_cpu
  step models graph_replay 90 "$bin/cuda_model" --device $device "${mock_args[@]}" --exact graph_replay_on_a_random_model
  step sanitize memcheck 120 "${san[@]}" memcheck "$bin/kernels" --device $device "${mock_args[@]}"
  step sanitize racecheck 120 "${san[@]}" racecheck "$bin/kernels" --device $device "${mock_args[@]}" \
    attention sample rms_norm add_rms_norm interventions qmatmul
  step sanitize synccheck 90 "${san[@]}" synccheck "$bin/kernels" --device $device "${mock_args[@]}" attention sample rms_norm qmatmul
  step bench gpu_kernels 90 "$bin/gpu_kernels"
  step bench gpu_generate 150 "$bin/gpu_generate"
fi

if want kernels; then
  step kernels kernels 300 "$bin/kernels" --device $device "${mock_args[@]}"
fi
if want sanitize; then
  step sanitize memcheck 300 "${san[@]}" memcheck "$bin/kernels" --device $device "${mock_args[@]}"
  step sanitize racecheck 300 "${san[@]}" racecheck "$bin/kernels" --device $device "${mock_args[@]}" \
    attention sample rms_norm add_rms_norm interventions qmatmul
  step sanitize initcheck 300 "${san[@]}" initcheck "$bin/kernels" --device $device "${mock_args[@]}"
  step sanitize synccheck 300 "${san[@]}" synccheck "$bin/kernels" --device $device "${mock_args[@]}" attention sample rms_norm qmatmul
fi

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
    line "assemble:$f" FAIL 0 "parts incomplete or corrupt (sha256 mismatch)"
    return 1
  fi
}
have_models=0
if want model || want sanitize || want bench; then
  mkdir -p "$models"
  assemble SmolLM2-135M-Instruct.Q4_1.gguf && have_models=1
  assemble gemma-3-270m-q4_k_m.gguf || true
  export SCALPEL_MODELS=$models
  [ $have_models = 1 ] || line "model checks" SKIPPED 0 "no model parts in .gpu/models"
fi
if [ $have_models = 1 ]; then
  want model && step models cuda_model 540 "$bin/cuda_model" --device $device "${mock_args[@]}"
  if want sanitize; then
    step sanitize memcheck-generate 300 "${san[@]}" memcheck "$bin/scalpel" generate -p "The capital of France is" -n 8 --device $device
    step sanitize memcheck-trace 300 "${san[@]}" memcheck "$bin/scalpel" trace -p "the apple is green" -o "$out/trace.safetensors" \
      --force --points 'blocks.*.resid_post,blocks.*.attn_probs,logits' --device $device
    rm -f "$out/trace.safetensors"
  fi
fi
if want bench; then
  step bench gpu_kernels 300 "$bin/gpu_kernels"
  step bench gpu_generate 300 "$bin/gpu_generate"
  [ $have_models = 1 ] && step bench capture_cost 300 "$bin/capture_cost" cuda
  step bench hf_gpu 300 python3 scripts/bench_hf_gpu.py
fi

line done "$([ $failures = 0 ] && echo ok || echo "FAIL:$failures")" "$SECONDS" "$(ls "$out" | wc -l) files in \$OUT"
[ $failures = 0 ]
