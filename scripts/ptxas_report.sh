#!/usr/bin/env bash
# Compiles every kernel for sm_90 (or $SCALPEL_CUDA_ARCHS's first arch) with warnings as errors and
# prints ptxas's resource usage per kernel: registers, shared memory, stack, spills. No GPU needed.
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc=${NVCC:-$(command -v nvcc || echo "${XDG_CACHE_HOME:-$HOME/.cache}/scalpel/cuda/nvidia/cu13/bin/nvcc")}
arch=${SCALPEL_CUDA_ARCHS:-90}; arch=${arch%%,*}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
status=0
for cu in kernels/*.cu; do
  if ! "$nvcc" -std=c++17 -O3 -Ikernels --expt-relaxed-constexpr -Werror all-warnings -Xptxas -v,-warn-spills \
      -gencode "arch=compute_$arch,code=sm_$arch" -c "$cu" -o "$tmp/k.o" > "$tmp/log" 2>&1; then
    cat "$tmp/log"; status=1; continue
  fi
  # ptxas prints "Compiling entry function '<mangled>'" then "Used N registers, ..." per kernel.
  python3 - "$cu" "$tmp/log" <<'PY'
import re, subprocess, sys
name, log = sys.argv[1], open(sys.argv[2]).read().splitlines()
fn = None
for line in log:
    m = re.search(r"Compiling entry function '([^']+)'", line)
    if m:
        fn = m.group(1)
        try:
            fn = subprocess.run(["c++filt", fn], capture_output=True, text=True).stdout.strip() or fn
        except OSError:
            pass
        continue
    m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and fn:
        stack, st, ld = m.groups()
    m2 = re.search(r"Used (\d+) registers(.*)", line)
    if m2 and fn:
        smem = re.search(r"(\d+) bytes smem", m2.group(2))
        print(f"{name:28} {fn[:70]:70} regs {m2.group(1):>3}  smem {smem.group(1) if smem else 0:>6}  "
              f"stack {stack:>4}  spills {st}/{ld}")
        fn = None
PY
done
exit $status
