#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each (default 600), starting from
# the seed corpora (tests/fuzz_smoke.rs writes them: real default-model headers, the tiny fixture,
# control vectors, chat templates, tokenizer.json, a safetensors directory) and keeping what the
# fuzzer finds in fuzz/corpus. Needs a nightly toolchain (cargo +nightly fuzz). Prints each
# target's executions, executions per second and coverage; crashes land in fuzz/artifacts/ and
# belong in tests/fuzz_regressions/<target>/ once fixed.
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}; shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(gguf_header gguf_model control_vector safetensors_dir chat_template tokenizer_json)
SCALPEL_WRITE_SEEDS="$PWD/fuzz/corpus" SCALPEL_FUZZ_SECONDS=1 cargo test -q --no-default-features --test fuzz_smoke mutated >/dev/null
cd fuzz
for t in "${targets[@]}"; do
  log=$(mktemp)
  # -rss_limit_mb: a target allocating what an input claims trips this and counts as a crash.
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=1024 -timeout=20 -max_len=262144 \
    -print_final_stats=1 > "$log" 2>&1 || { echo "$t: FAILED"; tail -n 40 "$log"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | grep -o '[0-9]*' || echo 0)
  printf '%-16s %6ss %12s runs %8s exec/s  coverage %s\n' "$t" "$secs" "$runs" "$speed" "$cov"
  rm -f "$log"
done
