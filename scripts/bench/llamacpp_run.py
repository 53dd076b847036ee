#!/usr/bin/env python3
"""llama.cpp's CPU prefill and decode speed on one GGUF file, through the llama-cpp-python package
(which builds llama.cpp from source with this machine's instruction set), on the same token ids
scalpel's cpu_generate bench uses: prints one JSON line.

    llamacpp_run.py MODEL.gguf PROMPT_TOKENS DECODE_TOKENS THREADS
"""
import json
import resource
import statistics
import sys
import time

from llama_cpp import Llama, __version__


def main():
    path, n_prompt, n_decode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    llm = Llama(
        model_path=path,
        n_ctx=n_prompt + n_decode + 8,
        n_batch=max(n_prompt, 8),
        n_threads=threads,
        n_threads_batch=threads,
        use_mmap=True,
        verbose=False,
    )
    vocab = llm.n_vocab()
    # The same ids as benches/cpu_generate.rs --prompt-tokens.
    ids = [(i * 7919 + 13) % vocab for i in range(n_prompt)]
    prefill = []
    for run in range(6):
        llm.reset()
        t = time.perf_counter()
        llm.eval(ids)
        if run > 0:
            prefill.append(n_prompt / (time.perf_counter() - t))
    decode = []
    for _ in range(3):
        llm.reset()
        llm.eval(ids)
        t = time.perf_counter()
        for i in range(n_decode):
            llm.eval([(i * 31 + 7) % vocab])
        decode.append(n_decode / (time.perf_counter() - t))
    print(json.dumps({
        "engine": f"llama.cpp (llama-cpp-python {__version__})",
        "threads": threads,
        "model": path,
        "prompt_tokens": n_prompt,
        "decode_tokens": n_decode,
        "prefill_tokens_per_second": statistics.median(prefill),
        "decode_tokens_per_second": statistics.median(decode),
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }))


if __name__ == "__main__":
    main()
