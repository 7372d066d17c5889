"""Character corpora: loading through `datasets`, a character vocabulary, and windows.

`load_text` reads local files (a path or a glob) with the `datasets` "text" builder, one
document per file; `load_hf_text` reads a text column of a Hugging Face dataset (a hub name,
a folder written by `save_to_disk`, or local parquet/json/csv files). `builtin_corpus`
generates a small corpus with nested, long-range structure, so that examples and tests need
no download.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from rnn_jax.data import corpora
from rnn_jax.data.tables import load_table, require_columns


def load_text(path: str) -> str:
    """All text of the files matching `path` (a file or a glob), concatenated in sorted order."""
    files = sorted(globlib.glob(path, recursive=True)) if any(c in path for c in "*?[") else [path]
    files = [f for f in files if Path(f).is_file()]
    if not files:
        raise FileNotFoundError(f"no text file matches {path!r}; pass --data PATH to an existing file or a quoted glob")
    import datasets

    datasets.disable_progress_bars()
    for file in files:  # name the offending file before `datasets` buries the error in its own
        try:
            with open(file, encoding="utf-8") as handle:
                for _ in iter(lambda: handle.read(1 << 20), ""):
                    pass
        except UnicodeDecodeError as error:
            raise ValueError(f"{file!r} is not UTF-8 text ({error}); convert it, e.g. with iconv") from error
    corpus = datasets.load_dataset("text", data_files=files, sample_by="document", split="train")
    text = "".join(corpus["text"])
    if not text:
        raise ValueError(f"{path!r} is empty: a character model needs text to train on")
    return text


def load_hf_text(name: str, *, text_column: str = "text", split: str = "train", config: str | None = None) -> str:
    """The `text_column` of split `split` (e.g. "train+validation+test") of a Hugging Face
    dataset, documents joined by newlines. `name` is a hub id (needs the network), a
    `save_to_disk` folder, or a local .parquet / .json(l) / .csv file or glob (see
    `rnn_jax.data.tables.load_table`)."""
    corpus = load_table(name, split=split, config=config)
    require_columns(corpus, name, [text_column])
    text = "\n".join(corpus[text_column])
    if not text:
        raise ValueError(f"dataset {name!r}, column {text_column!r}, split {split!r} holds no text")
    return text


def read_text(data: str | None, *, seed: int = 0) -> str:
    """The text of `data`: a corpus name (``tinyshakespeare``, ``stacks_latex``, ``linux_c``;
    found through `rnn_jax.data.corpora`: $RNN_JAX_DATA, else the hub), a text file or a quoted
    glob; None: the built-in generated corpus (no download)."""
    if data is None:
        return builtin_corpus(seed=seed)

    def load(source: corpora.Source) -> str:
        if source.on_hub:  # the whole text: the hub copies split it
            return load_hf_text(source.location, split="train+validation+test", config=source.config)
        return load_text(source.location)

    return corpora.read(data, load)


def split_text(text: str, validation_fraction: float = 0.1) -> tuple[str, str]:
    """A contiguous train / validation split (the last `validation_fraction` is validation), as
    char-rnn and nanoGPT do: no window of the validation text was ever seen in training."""
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in (0, 1), got {validation_fraction}")
    cut = int(len(text) * (1.0 - validation_fraction))
    return text[:cut], text[cut:]


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


def stream_layout(data, batch: int, length: int):
    """Stateful TBPTT layout: the corpus as `batch` contiguous parallel streams (char-rnn).
    Returns (streams (batch, stream_len), windows per pass)."""
    data = jnp.asarray(data)
    stream_len = data.shape[0] // batch
    windows = (stream_len - 1) // length
    if windows < 1:
        raise ValueError(
            f"the text has {data.shape[0]} characters: too few for {batch} streams with windows of "
            f"{length} + 1; use a smaller --batch or --bptt, or more text"
        )
    return data[: batch * stream_len].reshape(batch, stream_len), windows


def stream_window(streams: jax.Array, index, length: int) -> dict[str, jax.Array]:
    """Window `index` of every stream: inputs (batch, length), the next characters as targets,
    and `reset` (True at the first window, where the carried state must start from zeros)."""
    start = index * length
    window = jax.lax.dynamic_slice_in_dim(streams, start, length + 1, axis=1)
    return {"inputs": window[:, :-1], "targets": window[:, 1:], "reset": jnp.asarray(index == 0)}
