#!/usr/bin/env python3
"""Independent float64 reference for the decoder test (tools/tests/decoder.rs).

Reads a llama-architecture GGUF with the `gguf` PyPI package (its own dequantizers, not wattle's),
runs the transformer in numpy float64 over the token ids given, and prints, for each position, the
20 largest logits as JSON. The committed output is tools/tests/data/decoder_logits.json:

    pip install gguf numpy
    python3 tools/tests/data/decoder_ref.py MODEL.gguf 504 3575 282 4649 > tools/tests/data/decoder_logits.json

(504 3575 282 4649 are the first four tokens of "The capital of France is" under SmolLM2's
tokenizer.) The maths is written out from the llama architecture, not from wattle's code:
RMSNorm, rotary embedding on adjacent pairs (GGUF llama weights are stored permuted for it),
grouped-query causal attention, SwiGLU, tied or separate output projection.
"""
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

TOP = 20


def field(r, key):
    f = r.fields[key]
    v = f.parts[f.data[0]]
    if f.types and f.types[0].name == "STRING":
        return bytes(v).decode()
    return v.tolist()[0]


def main():
    path = sys.argv[1]
    ids = [int(t) for t in sys.argv[2:]]
    r = GGUFReader(path)
    arch = field(r, "general.architecture")
    assert arch == "llama", arch
    n_layer = field(r, "llama.block_count")
    n_embd = field(r, "llama.embedding_length")
    n_head = field(r, "llama.attention.head_count")
    n_kv = field(r, "llama.attention.head_count_kv")
    base = float(field(r, "llama.rope.freq_base"))
    eps = float(field(r, "llama.attention.layer_norm_rms_epsilon"))
    hd = n_embd // n_head
    n_rot = field(r, "llama.rope.dimension_count")

    tensors = {t.name: t for t in r.tensors}

    def w(name):
        t = tensors[name]
        a = dequantize(t.data, t.tensor_type).astype(np.float64)
        # ggml's ne is innermost first; numpy's shape outermost first.
        return a.reshape([int(d) for d in reversed(t.shape.tolist())])

    emb = w("token_embd.weight")
    out_w = w("output.weight") if "output.weight" in tensors else emb

    def rms(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * g

    t = len(ids)
    pos = np.arange(t, dtype=np.float64)
    inv = base ** (-np.arange(0, n_rot, 2, dtype=np.float64) / n_rot)
    ang = pos[:, None] * inv[None, :]  # [t, n_rot/2]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x [t, h, hd]; adjacent pairs (x0, x1), (x2, x3), ...
        y = x.copy()
        a = x[:, :, 0:n_rot:2]
        b = x[:, :, 1:n_rot:2]
        c, s = cos[:, None, :], sin[:, None, :]
        y[:, :, 0:n_rot:2] = a * c - b * s
        y[:, :, 1:n_rot:2] = a * s + b * c
        return y

    x = emb[ids]
    mask = np.triu(np.full((t, t), -np.inf), 1)
    for l in range(n_layer):
        p = f"blk.{l}."
        h = rms(x, w(p + "attn_norm.weight"))
        q = rope((h @ w(p + "attn_q.weight").T).reshape(t, n_head, hd))
        k = rope((h @ w(p + "attn_k.weight").T).reshape(t, n_kv, hd))
        v = (h @ w(p + "attn_v.weight").T).reshape(t, n_kv, hd)
        o = np.zeros((t, n_head, hd))
        g = n_head // n_kv
        for i in range(n_head):
            s = q[:, i, :] @ k[:, i // g, :].T / np.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            o[:, i, :] = s @ v[:, i // g, :]
        x = x + o.reshape(t, n_head * hd) @ w(p + "attn_output.weight").T
        h = rms(x, w(p + "ffn_norm.weight"))
        gate = h @ w(p + "ffn_gate.weight").T
        up = h @ w(p + "ffn_up.weight").T
        x = x + (gate / (1.0 + np.exp(-gate)) * up) @ w(p + "ffn_down.weight").T
    logits = rms(x, w("output_norm.weight")) @ out_w.T

    # One line per position: [[id, logit], ...] for the TOP largest logits.
    lines = []
    for i in range(t):
        order = np.argsort(-logits[i], kind="stable")[:TOP]
        lines.append(json.dumps([[int(j), round(float(logits[i, j]), 5)] for j in order]))
    sys.stdout.write('{"tokens": %s, "top": %d, "positions": [\n%s\n]}\n'
                     % (json.dumps(ids), TOP, ",\n".join(lines)))


if __name__ == "__main__":
    main()
