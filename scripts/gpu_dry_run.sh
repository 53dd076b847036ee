#!/usr/bin/env bash
# Tests scripts/gpu_check.sh here, without a GPU, on what a GPU run depends on: the bundle builds
# (scripts/gpu_bundle.sh --dry), the tree plus bundle stays under 60 MiB, the bundle unpacks where
# there is no xz, library discovery finds a libcublas planted in a fake site-packages, every step
# of `fast` runs (binaries on the mock device, stand-ins for nvidia-smi and compute-sanitizer) and
# writes its summary line, a failing kernel case is rerun with synchronous launches and under
# memcheck, the deadline skips steps and says so, a killed run still leaves its summary, and $OUT
# holds at most 8 files. Run by .ci/run after the tests (about 5 minutes on 2 cores).
#
#   scripts/gpu_dry_run.sh [--no-build]     --no-build: use the .gpu/fast.tar.gz already there
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
[ "${1:-}" = --no-build ] || scripts/gpu_bundle.sh --dry

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "gpu_dry_run: FAIL: $*" >&2; [ -f "$tmp/last" ] && sed 's/^/  | /' "$tmp/last" >&2; exit 1; }

# The working tree as the device tool sends it: tracked and untracked-but-not-ignored files, and
# the carried bundle (not .gpu/bin).
repo=$tmp/repo
mkdir -p "$repo"
git ls-files -z -co --exclude-standard | xargs -0 -r cp --parents -t "$repo" 2>/dev/null || true
mkdir -p "$repo/.gpu" && cp .gpu/fast.tar.gz "$repo/.gpu/"
size=$(du -sb "$repo" | cut -f1)
[ "$size" -le $((60 << 20)) ] || fail "the tree plus bundle is $((size >> 20)) MiB, over 60"

# No xz on this "machine"; a libcublas only in a Python site-packages, as PyTorch's wheels ship it.
mkdir -p "$tmp/bin" "$tmp/site/site-packages/nvidia/cu13/lib"
for x in xz unxz xzcat; do printf '#!/bin/sh\necho "%s: not installed here" >&2\nexit 127\n' "$x" > "$tmp/bin/$x"; done
chmod +x "$tmp/bin"/*
: > "$tmp/site/site-packages/nvidia/cu13/lib/libcublas.so.13"
export PATH="$tmp/bin:$PATH" PYTHONPATH="$tmp/site/site-packages${PYTHONPATH:+:$PYTHONPATH}"

check() { # run-directory: at most 8 files, a summary
  local n
  n=$(find "$1" -type f | wc -l)
  [ "$n" -le 8 ] || fail "$1 holds $n files (at most 8 come back)"
  [ -s "$1/summary.txt" ] || fail "no summary in $1"
}
has() { grep -qE "$2" "$1/summary.txt" || { cp "$1/summary.txt" "$tmp/last"; fail "$1/summary.txt lacks /$2/"; }; }

# 1. The whole sequence, with time for every step.
echo "gpu_dry_run: the whole sequence (a few minutes on the mock)"
OUT=$tmp/out1 GPU_DEADLINE=1500 "$repo/scripts/gpu_check.sh" fast --dry > "$tmp/last" 2>&1 ||
  fail "gpu_check.sh fast --dry failed"
check "$tmp/out1"
has "$tmp/out1" "^libcublas +ok .*$tmp/site/site-packages/nvidia/cu13/lib"
has "$tmp/out1" "^ldd +ok"
for c in $("$repo/.gpu/bin/kernels" --list | grep -v '^kernels:'); do has "$tmp/out1" "^kernel:$c +ok"; done
for s in random_models graph_replay memcheck racecheck synccheck gpu_kernels gpu_generate; do has "$tmp/out1" "^$s +ok"; done
has "$tmp/out1" "^done +ok"
awk '$2 != "ok" {bad = 1} END {exit bad ? 0 : 1}' "$tmp/out1/summary.txt" &&
  { cp "$tmp/out1/summary.txt" "$tmp/last"; fail "a step failed or was skipped"; }
cat "$tmp/out1/summary.txt"

# 2. A kernel case that fails, and a deadline that cannot hold every step.
real=$repo/.gpu/bin/kernels.real
mv "$repo/.gpu/bin/kernels" "$real"
cat > "$repo/.gpu/bin/kernels" <<SH
#!/bin/sh
case " \$* " in *" --exact embed "*) echo "test embed on mock/forward ... FAILED"; exit 1 ;; esac
exec "$real" "\$@"
SH
chmod +x "$repo/.gpu/bin/kernels"
echo "gpu_dry_run: a failing case and a 40-second deadline"
start=$SECONDS
OUT=$tmp/out2 GPU_DEADLINE=40 "$repo/scripts/gpu_check.sh" fast --dry > "$tmp/last" 2>&1 && fail "a failed case must fail the run"
[ $((SECONDS - start)) -le 70 ] || fail "the 40-second deadline ran $((SECONDS - start)) s"
check "$tmp/out2"
has "$tmp/out2" "^kernel:embed +FAIL"
has "$tmp/out2" "^kernel:embed:sync +FAIL"
has "$tmp/out2" "^kernel:embed:memcheck +FAIL"
has "$tmp/out2" "SKIPPED +0s +deadline"
has "$tmp/out2" "^gpu_generate +SKIPPED"
has "$tmp/out2" "^done +FAIL"

# 3. Killed from outside: what ran is in the summary already.
echo "gpu_dry_run: killed after 20 seconds"
OUT=$tmp/out3 GPU_DEADLINE=1500 timeout -s KILL 20 "$repo/scripts/gpu_check.sh" fast --dry > "$tmp/last" 2>&1 && fail "not killed"
check "$tmp/out3"
has "$tmp/out3" "^ldd +"
has "$tmp/out3" "^kernel:qmatmul +ok"
grep -q '^done' "$tmp/out3/summary.txt" && fail "a killed run cannot have finished"
echo "gpu_dry_run: ok"
