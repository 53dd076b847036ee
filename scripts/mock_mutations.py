#!/usr/bin/env python3
"""Proves the mock device is not vacuous: applies real bug classes, one at a time, to a copy of the
kernels and the CUDA backend, and requires the mock tests to fail for each. Prints one line per
mutation (caught, and by what; or NOT CAUGHT) and exits 1 if any went unnoticed.

    scripts/mock_mutations.py            every mutation
    scripts/mock_mutations.py WORD...    the mutations whose names contain a WORD

Works on a copy of the working tree under target/mutants (the checkout itself is never modified),
with its own target directory so the rebuilds are incremental: each mutation rebuilds the mock
kernels and the crate, a few minutes on 2 cores. Schedules: the kernel tests run forward, reverse
and seeded random, so a race needs only one of them to show.
"""
import os
import re
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(ROOT, "target", "mutants", "tree")
ENV = dict(os.environ, CARGO_TARGET_DIR=os.path.join(ROOT, "target", "mutants", "target"))

# (name, file, old text, new text, test binary, test filter)
MUTATIONS = [
    (
        "removed barrier: row attention merges the warps' partials before all are written",
        "kernels/attention.cu",
        "    for (int j = 0; j < J; j++) wacc[warp][lane + 32 * j] = acc[j];\n    __syncthreads();\n",
        "    for (int j = 0; j < J; j++) wacc[warp][lane + 32 * j] = acc[j];\n",
        "kernels", "attention",
    ),
    (
        "swapped mma fragment registers: q's rows 8-15 and columns 8-15 exchanged",
        "kernels/attention.cu",
        "*reinterpret_cast<const uint32_t *>(qa + 8 * LD),\n"
        "                                   *reinterpret_cast<const uint32_t *>(qa + 8),",
        "*reinterpret_cast<const uint32_t *>(qa + 8),\n"
        "                                   *reinterpret_cast<const uint32_t *>(qa + 8 * LD),",
        "kernels", "attention",
    ),
    (
        "off-by-one causal mask: prefill sees the next key",
        "kernels/attention.cu",
        "const bool ok = live[r] && key <= qpos[r] &&",
        "const bool ok = live[r] && key <= qpos[r] + 1 &&",
        "kernels", "attention",
    ),
    (
        "off-by-one sliding window: one key too many",
        "kernels/attention.cu",
        "return window > 0 ? max(0, pos + 1 - window) : 0;",
        "return window > 0 ? max(0, pos - window) : 0;",
        "kernels", "attention",
    ),
    (
        "wrong GQA head mapping in the row kernel: query head h reads KV head h % n_kv",
        "kernels/attention.cu",
        "lane = threadIdx.x & 31;\n    const int kvh = h / (g.n_heads / g.n_kv_heads);\n",
        "lane = threadIdx.x & 31;\n    const int kvh = h % g.n_kv_heads;\n",
        "kernels", "attention",
    ),
    (
        "wrong GQA head mapping in the tensor-core kernel",
        "kernels/attention.cu",
        "    const int kvh = h / (g.n_heads / g.n_kv_heads);\n    const int row0 = sq.row0[seq]",
        "    const int kvh = h % g.n_kv_heads;\n    const int row0 = sq.row0[seq]",
        "kernels", "attention",
    ),
    (
        "half-warp reduction: warp_sum's butterfly starts at 8",
        "kernels/common.cuh",
        "for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync",
        "for (int o = 8; o > 0; o >>= 1) v += __shfl_xor_sync",
        "kernels", "rms_norm",
    ),
    (
        "removed barrier: block_sum reuses its scratch while a slower warp still reads it",
        "kernels/common.cuh",
        "    __syncthreads();  // scratch may still be read by an earlier reduction\n",
        "",
        "kernels", "sample",
    ),
    (
        "out-of-bounds write: the embedding gather writes one element past each row",
        "kernels/embed.cu",
        "for (int i = threadIdx.x; i < d; i += blockDim.x)",
        "for (int i = threadIdx.x; i <= d; i += blockDim.x)",
        "kernels", "embed",
    ),
    (
        "wrong leading dimension in the GEMM call: ldc = m",
        "src/backend/cuda/ops.rs",
        "\n            ldc: n as i32,",
        "\n            ldc: m as i32,",
        "kernels", "matmul",
    ),
    (
        "wrong leading dimension in the GEMM call: ldb = n",
        "src/backend/cuda/ops.rs",
        "\n            ldb: k as i32,",
        "\n            ldb: n as i32,",
        "kernels", "matmul",
    ),
    (
        "wrong scale in a stored-format kernel: Q6_K's second 128 values take the first half's scales",
        "kernels/qmatmul.cu",
        "v[l] = d * (float)sc[l / 16 + 2 * quarter] * (float)(q - 32);",
        "v[l] = d * (float)sc[l / 16 + quarter] * (float)(q - 32);",
        "kernels", "qmatmul",
    ),
    (
        "swapped nibbles in a stored-format kernel: Q4_K's odd groups read the low nibbles",
        "kernels/qmatmul.cu",
        "for (int l = 0; l < 32; l++) v[l] = d1 * (float)((s & 1) ? q[l] >> 4 : q[l] & 0x0f) - m1;",
        "for (int l = 0; l < 32; l++) v[l] = d1 * (float)((s & 1) ? q[l] & 0x0f : q[l] >> 4) - m1;",
        "kernels", "qmatmul",
    ),
    (
        "missing __syncwarp: the decode kernel stages a row's next 32 groups while lanes still decode",
        "kernels/qmatmul.cu",
        "            __syncwarp();  // every lane has decoded before the next step overwrites the stage\n",
        "",
        "kernels", "qmatmul",
    ),
    (
        "CPU products: the AVX2 kernels take the high nibbles first",
        "src/backend/cpu/qmatmul/avx2.rs",
        "[_mm256_and_si256(a, m), _mm256_and_si256(b, m), _mm256_srli_epi32(a, 4), _mm256_srli_epi32(b, 4)]",
        "[_mm256_srli_epi32(a, 4), _mm256_srli_epi32(b, 4), _mm256_and_si256(a, m), _mm256_and_si256(b, m)]",
        "lib", "qmatmul",
    ),
    (
        "missing synchronization: a decode step's tokens rewritten while a replay may still read them",
        "src/backend/cuda/mod.rs",
        "        // The previous replay may still read the staging: wait for it.\n        self.synchronize()?;\n",
        "",
        "cuda_model", "prefill_then_decode",
    ),
    (
        "missing context bind: kernels launched from a thread the context is not current on",
        "src/backend/cuda/launch.rs",
        "            self.gpu.bind()?;\n",
        "",
        "kernels", "embed",
    ),
    (
        "paged keys read in position order: attention ignores the page table",
        "kernels/attention.cu",
        "    return (size_t)table[key / SCALPEL_PAGE] * SCALPEL_PAGE + key % SCALPEL_PAGE;",
        "    return (size_t)key;",
        "kernels", "paged",
    ),
    (
        "a prefill tile takes the step's first rows, not its own sequence's",
        "kernels/attention.cu",
        "const int row0 = sq.row0[seq], T = sq.rows[seq]",
        "const int row0 = 0, T = sq.rows[seq]",
        "kernels", "paged",
    ),
    (
        "the paged cache write lands at the position, not at the page's slot",
        "kernels/rope.cu",
        "const size_t dst = ((size_t)slot * n_kv + j) * hd;",
        "const size_t dst = ((size_t)pos * n_kv + j) * hd;",
        "kernels", "paged",
    ),
    (
        "a preempted sequence keeps its count of cached positions after its pages are freed",
        "src/schedule/mod.rs",
        "        s.pages.clear();\n        s.computed = 0;\n",
        "        s.pages.clear();\n",
        "batch", "scheduler",
    ),
    (
        "per-sequence probes: an edit is applied to the whole batch's rows",
        "src/probe.rs",
        "            let rows: Vec<usize> = (s.row..s.row + s.len).collect();\n            let mut mine = be.gather_rows(x, &rows)?;",
        "            let rows: Vec<usize> = (0..x.rows()).collect();\n            let mut mine = be.gather_rows(x, &rows)?;",
        "batch", "probes",
    ),
]


def test_command(binary, filt):
    """`cargo test` of one integration test binary (or the library's unit tests) with a filter."""
    target = ["--lib"] if binary == "lib" else ["--test", binary]
    return ["cargo", "test", *target, "--", filt]


def run(cmd, log):
    with open(log, "w") as f:
        return subprocess.run(cmd, cwd=WORK, env=ENV, stdout=f, stderr=subprocess.STDOUT).returncode


def main():
    words = sys.argv[1:]
    chosen = [m for m in MUTATIONS if not words or any(w in m[0] for w in words)]
    os.makedirs(WORK, exist_ok=True)
    skip = {os.path.join(ROOT, p) for p in ("target", ".git", "fuzz/target", ".gpu", ".device", ".venv-llamacpp")}
    # Plain copies (fresh mtimes): with copied mtimes, cargo can take a stale build of an older
    # tree in the mutants target directory for fresh.
    shutil.copytree(ROOT, WORK, dirs_exist_ok=True, copy_function=shutil.copy, ignore=lambda d, names: [n for n in names if os.path.join(d, n) in skip])
    logs = os.path.join(ROOT, "target", "mutants")
    print("baseline: building and running the unmutated tests once", flush=True)
    bins = sorted({(m[4], m[5]) for m in chosen})
    for b, f in bins:
        if run(test_command(b, f), os.path.join(logs, "baseline.log")) != 0:
            sys.exit(f"the unmutated tree fails `{' '.join(test_command(b, f))}` (see {logs}/baseline.log)")
    missed = 0
    for name, path, old, new, binary, filt in chosen:
        src = os.path.join(ROOT, path)
        dst = os.path.join(WORK, path)
        text = open(src).read()
        if text.count(old) != 1:
            print(f"SETUP FAILED  {name}: the text to mutate occurs {text.count(old)} times in {path}")
            missed += 1
            continue
        open(dst, "w").write(text.replace(old, new))
        log = os.path.join(logs, re.sub(r"[^a-z0-9]+", "_", name.lower())[:60] + ".log")
        t0 = time.time()
        code = run(test_command(binary, filt), log)
        shutil.copyfile(src, dst)
        took = time.time() - t0
        if code == 0:
            print(f"NOT CAUGHT    {name} ({binary} {filt} passed; {log})", flush=True)
            missed += 1
            continue
        lines = open(log, errors="replace").read().splitlines()
        why = next((l.strip() for l in lines if re.search(r"relative error|lse\[|mock GPU: |error\[|panicked at", l)
                    and not l.startswith(("kernels on", "cuda_model on"))), "")
        failed = [l.strip() for l in lines if l.startswith("test ") and l.endswith("FAILED")]
        print(f"caught        {name} ({took:.0f} s)\n              {'; '.join(failed)[:200]}\n              {why[:220]}",
              flush=True)
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
