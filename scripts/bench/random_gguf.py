#!/usr/bin/env python3
"""Writes a random-weight GGUF of Llama-3.2-3B's exact shapes in llama.cpp's Q4_K_M mix, for the
CPU benchmarks against llama.cpp (scripts/bench_cpu_vs_llamacpp.sh): no 2 GB download, the same
bytes for both engines.

    random_gguf.py OUT.gguf [--layers N]

Weights: Q4_K for attention and feed-forward matrices, Q6_K for the token embedding (tied to the
output, as in Llama-3.2-3B) and for attn_v / ffn_down in the layers llama.cpp's Q4_K_M gives more
bits (the first and last eighth, and every third between); F32 norms. Block bytes are random with
scales of a realistic size, so the model computes finite, meaningless numbers. The vocabulary is a
synthetic SentencePiece one (byte fallback) of Llama 3's size, 128256 tokens, which both engines
read. Needs the gguf package (pip install gguf==0.19.0 numpy).
"""
import argparse
import sys

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import GGUFWriter, TokenType

HIDDEN, FFN, LAYERS, HEADS, KV_HEADS, HEAD_DIM, VOCAB = 3072, 8192, 28, 24, 8, 128, 128256
BLOCK = {Q.Q4_K: (256, 144), Q.Q6_K: (256, 210)}


def f16(values):
    return np.asarray(values, dtype=np.float16).view(np.uint8).reshape(-1, 2)


def random_blocks(rng, qtype, rows, cols):
    elems, nbytes = BLOCK[qtype]
    n = rows * cols // elems
    b = rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)
    if qtype == Q.Q4_K:
        b[:, 0:2] = f16(rng.uniform(2e-4, 1e-3, n))  # d
        b[:, 2:4] = f16(rng.uniform(2e-4, 1e-3, n))  # dmin
    else:
        b[:, 208:210] = f16(rng.uniform(1e-4, 6e-4, n) * rng.choice([-1, 1], n))  # d
    return b.reshape(rows, cols // elems * nbytes)


def more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--seed", type=int, default=3)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    w = GGUFWriter(a.out, "llama")
    w.add_name("random Llama-3.2-3B shapes (Q4_K_M mix)")
    w.add_context_length(131072)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(VOCAB)
    w.add_file_type(15)  # MOSTLY_Q4_K_M
    # A SentencePiece vocabulary with byte fallback: <unk>, <s>, </s>, the 256 bytes, then pieces.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)]
    tokens += [f"\u2581w{i}" for i in range(VOCAB - len(tokens))]
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL] + [TokenType.BYTE] * 256
    types += [TokenType.NORMAL] * (VOCAB - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(VOCAB)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)

    def matrix(name, qtype, rows, cols):
        w.add_tensor(name, random_blocks(rng, qtype, rows, cols), raw_dtype=qtype)

    def norm(name, n):
        w.add_tensor(name, rng.uniform(0.9, 1.1, n).astype(np.float32))

    matrix("token_embd.weight", Q.Q6_K, VOCAB, HIDDEN)
    norm("output_norm.weight", HIDDEN)
    for i in range(a.layers):
        big = Q.Q6_K if more_bits(i, a.layers) else Q.Q4_K
        norm(f"blk.{i}.attn_norm.weight", HIDDEN)
        matrix(f"blk.{i}.attn_q.weight", Q.Q4_K, HEADS * HEAD_DIM, HIDDEN)
        matrix(f"blk.{i}.attn_k.weight", Q.Q4_K, KV_HEADS * HEAD_DIM, HIDDEN)
        matrix(f"blk.{i}.attn_v.weight", big, KV_HEADS * HEAD_DIM, HIDDEN)
        matrix(f"blk.{i}.attn_output.weight", Q.Q4_K, HIDDEN, HEADS * HEAD_DIM)
        norm(f"blk.{i}.ffn_norm.weight", HIDDEN)
        matrix(f"blk.{i}.ffn_gate.weight", Q.Q4_K, FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_up.weight", Q.Q4_K, FFN, HIDDEN)
        matrix(f"blk.{i}.ffn_down.weight", big, HIDDEN, FFN)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(a.out, file=sys.stderr)


if __name__ == "__main__":
    main()
