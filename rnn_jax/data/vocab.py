"""Token vocabularies built from training data.

`Vocab` maps tokens (words, tags, characters) to ids. Id 0 is `<pad>`; `<unk>` (id 1) stands
for every token absent from the training data, so a vocabulary never grows after it is
built and a model's embedding table matches its checkpoint. Sequence-to-sequence vocabularies
add `<bos>` / `<eos>`. A vocabulary is saved as its token list (`tokens`), in order.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"


@dataclasses.dataclass(frozen=True)
class Vocab:
    """`tokens[i]` is the token of id i; `tokens[0]` is `<pad>`, `tokens[1]` `<unk>` when the
    vocabulary has one (label vocabularies do not: an unknown label is an error)."""

    tokens: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("a vocabulary lists each token once")
        object.__setattr__(self, "_index", {t: i for i, t in enumerate(self.tokens)})

    @classmethod
    def build(
        cls,
        sequences: Iterable[Sequence[str]],
        *,
        min_count: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (PAD, UNK),
    ) -> "Vocab":
        """Tokens of `sequences` seen at least `min_count` times, most frequent first (ties in
        first-seen order, so the ids are deterministic), after `specials`; at most `max_size`
        tokens in all."""
        counts = collections.Counter(token for sequence in sequences for token in sequence)
        kept = [t for t, n in counts.most_common() if n >= min_count and t not in specials]
        if max_size is not None:
            kept = kept[: max(max_size - len(specials), 0)]
        if not kept:
            raise ValueError("the training data holds no token (after min_count); nothing to build a vocabulary from")
        return cls((*specials, *kept))

    @property
    def size(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self._index

    def id(self, token: str) -> int:
        return self._index[token]

    def encode(self, sequence: Sequence[str]) -> np.ndarray:
        """Ids of `sequence`; unknown tokens map to `<unk>` (a vocabulary without one raises,
        naming the unknown tokens)."""
        unk = self._index.get(UNK)
        if unk is None:
            unknown = sorted({t for t in sequence if t not in self._index})
            if unknown:
                raise ValueError(f"not in the vocabulary: {unknown[:10]!r}; it holds {list(self.tokens)[:20]!r}...")
        return np.fromiter((self._index.get(t, unk) for t in sequence), np.int32, len(sequence))

    def decode(self, ids: Iterable[int], *, stop_at_eos: bool = True) -> list[str]:
        """Tokens of `ids`, without padding and `<bos>`; ends at the first `<eos>` if asked."""
        out = []
        for i in np.asarray(ids).tolist():
            token = self.tokens[i]
            if token == EOS and stop_at_eos:
                break
            if token not in (PAD, BOS):
                out.append(token)
        return out
