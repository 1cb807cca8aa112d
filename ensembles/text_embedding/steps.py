"""Pre/post-processing of the text_embedding ensemble: plain functions on whole batches.

Each takes and returns a dict of numpy arrays whose first dimension is the batch. A function with a
``resources`` parameter gets the directory of its resource files (copied in at build time)."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, everyone loved the ending and the music.",
    "Triton serves models over HTTP and gRPC.",
]


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")  # noqa: S106 - noqa: S106 - to the longest text of the batch
    return tok


def tokenize(inputs: dict[str, np.ndarray], resources: Path) -> dict[str, np.ndarray]:
    """text [batch, 1] (bytes) -> input_ids, attention_mask [batch, longest] INT64."""
    texts = [t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
             for t in inputs["text"].reshape(-1)]
    encodings = _tokenizer(str(resources / "tokenizer.json")).encode_batch(texts)
    return {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    }


def mean_pool(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Mean of the token embeddings under the attention mask, then L2 normalisation (what
    sentence-transformers does for all-MiniLM-L6-v2)."""
    hidden = inputs["last_hidden_state"].astype(np.float32)
    mask = inputs["attention_mask"].astype(np.float32)[:, :, None]
    summed = (hidden * mask).sum(axis=1)
    mean = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    norm = np.clip(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12, None)
    return {"embedding": (mean / norm).astype(np.float32)}


def example_inputs(variant: int) -> dict[str, np.ndarray]:
    """Build-time examples for signature inference: two batches of different sizes and lengths."""
    texts = SENTENCES[:1] if variant == 0 else SENTENCES[1:]
    return {"text": np.array([[t.encode()] for t in texts], dtype=np.object_)}
