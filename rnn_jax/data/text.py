"""Character corpora: loading through `datasets`, a character vocabulary, and windows.

`load_text` reads local files (a path or a glob) with the `datasets` "text" builder, one
document per file. `builtin_corpus` generates a small corpus with nested, long-range
structure, so that examples and tests need no download.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np


def load_text(path: str) -> str:
    """All text of the files matching `path` (a file or a glob), concatenated in sorted order."""
    files = sorted(globlib.glob(path, recursive=True)) if any(c in path for c in "*?[") else [path]
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise FileNotFoundError(f"no text file matches {path!r}; pass --data PATH to an existing file or a quoted glob")
    import datasets

    datasets.disable_progress_bars()
    try:
        corpus = datasets.load_dataset("text", data_files=files, sample_by="document", split="train")
    except UnicodeDecodeError as error:
        raise ValueError(f"{path!r} is not UTF-8 text ({error}); convert it, e.g. with iconv") from error
    text = "".join(corpus["text"])
    if not text:
        raise ValueError(f"{path!r} is empty: a character model needs text to train on")
    return text


def builtin_corpus(num_chars: int = 200_000, seed: int = 0) -> str:
    """A generated corpus of nested clauses: brackets close what opened many characters
    earlier and names recur across a sentence, so a model gains from long memory."""
    rng = np.random.default_rng(seed)
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    verbs = ["sees", "likes", "helps", "calls", "finds", "meets", "knows", "follows"]
    things = ["the red cat", "a small dog", "the old map", "a blue bird", "the long road", "a quiet house"]
    opening, closing = "([{<", ")]}>"

    def clause(depth: int) -> str:
        text = f"{rng.choice(names)} {rng.choice(verbs)} {rng.choice(things)}"
        if depth < 3 and rng.random() < 0.55:
            k = rng.integers(len(opening))
            text += f" {opening[k]}{clause(depth + 1)}{closing[k]}"
        return text

    parts, size = [], 0
    while size < num_chars:
        name = rng.choice(names)
        sentence = f"{name}: {clause(0)}, said {name}.\n"
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)[:num_chars]


@dataclasses.dataclass(frozen=True)
class CharVocab:
    """Characters of the training text, sorted; ids are positions in `chars`."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "CharVocab":
        return cls("".join(sorted(set(text))))

    @property
    def size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.chars)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {unknown!r}")
        return np.fromiter((index[c] for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).tolist())


def random_windows(key: jax.Array, data: jax.Array, batch: int, length: int) -> dict[str, jax.Array]:
    """`batch` windows of `length` + 1 characters at random offsets: inputs are the first
    `length`, targets the next character of each (batch, length)."""
    if data.shape[0] < length + 1:
        raise ValueError(f"the corpus has {data.shape[0]} characters, fewer than one window of {length + 1}")
    starts = jax.random.randint(key, (batch,), 0, data.shape[0] - length)
    windows = jax.vmap(lambda s: jax.lax.dynamic_slice_in_dim(data, s, length + 1))(starts)
    return {"inputs": windows[:, :-1], "targets": windows[:, 1:]}
