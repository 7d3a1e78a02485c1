#!/usr/bin/env python3
"""An independent numpy forward pass of all-MiniLM-L6-v2, and the reference fixture of the
`local` embedder's tests.

Nothing here shares code with the Rust embedder (candle): the safetensors file is parsed by
hand (8-byte little-endian header length, JSON header, raw little-endian tensors), the BERT
encoder is written out in numpy in float64, and only the tokenizer is the same (the
`tokenizers` package reading the model's own tokenizer.json, as the Rust `tokenizers` crate
does).

The model, as sentence-transformers runs it (modules.json: Transformer -> Pooling ->
Normalize; sentence_bert_config.json: max_seq_length 256; 1_Pooling: mean tokens):
  embeddings = LayerNorm(word + position + token_type(0)), eps 1e-12
  6 x [ x = LayerNorm(x + Wo . MHA_12(x, mask)); x = LayerNorm(x + W2 . gelu_erf(W1 . x)) ]
  vector = L2-normalise( sum(mask * x) / sum(mask) )

Usage (after scripts/fetch-minilm.sh, which makes target/model-venv unless target/py-venv exists):
  target/model-venv/bin/pip install numpy tokenizers
  target/model-venv/bin/python scripts/minilm_reference.py [MODEL_DIR] [OUT_JSON]
Writes crates/ingestion/tests/fixtures/minilm_reference.json by default.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
MODEL_DIR = ROOT / "target/models/all-minilm-l6-v2"
OUT = ROOT / "crates/ingestion/tests/fixtures/minilm_reference.json"
MAX_SEQ_LENGTH = 256  # sentence-transformers' max_seq_length for this model
EPS = 1e-12

DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I64": "<i8", "I32": "<i4"}

LONG = (
    "Retrieval-augmented generation splits every document of a knowledge base into chunks, "
    "embeds each chunk as a vector, stores the vectors with their provenance, and at query "
    "time embeds the question, finds the nearest chunks by cosine similarity and hands them "
    "to the language model as context, so that its answer can cite the passages it used."
)

CASES = [
    "How do I reset my password?",
    "I forgot my password, how can I change it?",
    "The invoice is due at the end of the month.",
    LONG,
    "Refunds",
    "Café prices rose 5% in Zürich — naïve “estimates” said 3%!",
    # Longer than 256 tokens: checks truncation (the vector is of the first 256 tokens,
    # [CLS] and [SEP] included).
    " ".join([LONG] * 5),
]


def load_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file, parsed by hand."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        dtype = np.dtype(DTYPES[info["dtype"]])
        arr = np.frombuffer(data, dtype=dtype, count=(end - start) // dtype.itemsize,
                            offset=base + start)
        out[name] = arr.reshape(info["shape"])
    return out


def weights(path: Path) -> tuple[dict[str, np.ndarray], str]:
    """The tensors as float64, and the prefix of their names ("" or "bert.")."""
    raw = load_safetensors(path)
    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in raw else ""
    w = {k[len(prefix):]: v.astype(np.float64) for k, v in raw.items() if k.startswith(prefix)}
    return w, prefix


_erf = np.frompyfunc(math.erf, 1, 1)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU: x * Phi(x) with the true erf (not the tanh approximation)."""
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))


def layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + EPS) * g + b


def linear(w: dict, name: str, x: np.ndarray) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def encode(w: dict, cfg: dict, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Unit-length mean-pooled vectors of a padded batch: ids and mask are [batch, seq]."""
    bsz, seq = ids.shape
    heads = cfg["num_attention_heads"]
    hd = cfg["hidden_size"] // heads
    x = (
        w["embeddings.word_embeddings.weight"][ids]
        + w["embeddings.position_embeddings.weight"][np.arange(seq)][None]
        + w["embeddings.token_type_embeddings.weight"][np.zeros_like(ids)]
    )
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    # Padding keys get a large negative bias before the softmax (as HF BERT does).
    bias = (1.0 - mask[:, None, None, :].astype(np.float64)) * -1e30

    def split(t):  # [b, s, h*d] -> [b, h, s, d]
        return t.reshape(bsz, seq, heads, hd).transpose(0, 2, 1, 3)

    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        q = split(linear(w, f"{p}.attention.self.query", x))
        k = split(linear(w, f"{p}.attention.self.key", x))
        v = split(linear(w, f"{p}.attention.self.value", x))
        scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd) + bias
        scores = scores - scores.max(-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(bsz, seq, heads * hd)
        x = layer_norm(x + linear(w, f"{p}.attention.output.dense", ctx),
                       w[f"{p}.attention.output.LayerNorm.weight"],
                       w[f"{p}.attention.output.LayerNorm.bias"])
        h = gelu(linear(w, f"{p}.intermediate.dense", x))
        x = layer_norm(x + linear(w, f"{p}.output.dense", h),
                       w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
    m = mask[:, :, None].astype(np.float64)
    pooled = (x * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def tokenizer(model_dir: Path) -> Tokenizer:
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    # tokenizer.json ships truncation 128 and padding Fixed(128); sentence-transformers
    # uses 256 and pads a batch to its longest sequence.
    tok.enable_truncation(max_length=MAX_SEQ_LENGTH)
    tok.no_padding()
    return tok


def sig7(x: float) -> float:
    return float(f"{x:.7g}")


def main() -> None:
    model_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL_DIR
    out = Path(sys.argv[2]) if len(sys.argv) > 2 else OUT
    cfg = json.loads((model_dir / "config.json").read_text())
    w, prefix = weights(model_dir / "model.safetensors")
    print(f"weights: {len(w)} tensors, prefix {prefix!r}", file=sys.stderr)
    tok = tokenizer(model_dir)
    encs = [tok.encode(t) for t in CASES]

    # One at a time (no padding) ...
    vecs = [encode(w, cfg, np.array([e.ids]), np.array([e.attention_mask]))[0] for e in encs]
    # ... and as one padded batch: the attention mask must make them equal.
    seq = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), seq), dtype=np.int64)
    mask = np.zeros((len(encs), seq), dtype=np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    batched = encode(w, cfg, ids, mask)
    diff = max(float(np.abs(batched[i] - vecs[i]).max()) for i in range(len(encs)))
    print(f"max |batched - single| = {diff:.2e}", file=sys.stderr)
    assert diff < 1e-6, diff

    def cos(a, b):
        return float(np.dot(vecs[a], vecs[b]))

    same, other = cos(0, 1), cos(0, 2)
    print(f"cos(reset password, forgot password) = {same:.4f}", file=sys.stderr)
    print(f"cos(reset password, invoice due)     = {other:.4f}", file=sys.stderr)
    print(f"cos(reset password, RAG paragraph)   = {cos(0, 3):.4f}", file=sys.stderr)
    assert same > 0.6 and same > other + 0.3, (same, other)

    fixture = {
        "model": "all-MiniLM-L6-v2",
        "pooling": "mean",
        "normalized": True,
        "dimensions": cfg["hidden_size"],
        "max_seq_length": MAX_SEQ_LENGTH,
        "cases": [
            {"text": t, "token_ids": e.ids, "vector": [sig7(x) for x in v]}
            for t, e, v in zip(CASES, encs, vecs)
        ],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(fixture, ensure_ascii=False) + "\n")
    for t, e in zip(CASES, encs):
        print(f"{len(e.ids):4} tokens  {t[:60]!r}", file=sys.stderr)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
