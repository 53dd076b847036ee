#!/usr/bin/env bash
# Runs the mock device's tests with the kernels built under AddressSanitizer and UBSan's alignment
# check: out-of-bounds reads (which the mock's redzones cannot see), use after free, and misaligned
# vector loads (a 16-byte uint4 read that is not 16-byte aligned faults on a GPU) in kernel code.
# The fibers tell ASan about every stack switch. Uses its own target directory (a full build).
#
#   scripts/mock_asan.sh [TEST FILTER...]
set -euo pipefail
cd "$(dirname "$0")/.."
export SCALPEL_MOCK_SANITIZE=address
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/asan}
# Leaks: the fiber pool and the worker threads live for the process on purpose.
# The runtime is linked as a library of the test binary, not first in its list (rustc decides
# the order), which ASan accepts once told so.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1:verify_asan_link_order=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
cargo test --test kernels --test mock_device -- "$@"
