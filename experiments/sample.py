"""Sample text from a trained char_lm run.

    python -m experiments.sample --checkpoint runs/char_lm/20261127-120000 --prime "ROMEO:" --length 500 --temperature 0.8
    python -m experiments.sample --checkpoint RUN --prime "int main(" --top-k 5
    python -m experiments.sample --checkpoint RUN --prime "\\begin{" --argmax

--checkpoint is the run's output directory (it holds config.json and checkpoints/); the best
checkpoint by validation loss is used (--last for the latest one).
"""

from __future__ import annotations

import dataclasses

from flax import nnx

from experiments import char_lm, cli
from rnn_jax.data.text import CharVocab
from rnn_jax.decode import sample_text
from rnn_jax.experiment import load_run


@dataclasses.dataclass
class Config:
    checkpoint: str
    """output directory of a char_lm run"""
    prime: str = "\n"
    """text to start from"""
    length: int = 500
    """characters to generate"""
    temperature: float = 1.0
    """softmax temperature"""
    top_k: int | None = None
    """sample among the k most likely characters only"""
    argmax: bool = False
    """greedy: always the most likely character"""
    seed: int = 0
    """sampling seed"""
    last: bool = False
    """use the latest checkpoint, not the best by validation loss"""

    def __post_init__(self):
        if self.length < 1 or self.temperature <= 0 or (self.top_k is not None and self.top_k < 1):
            raise ValueError("need --length >= 1, --temperature > 0 and --top-k >= 1")
        if not self.prime:
            raise ValueError("--prime must hold at least one character")


def main(argv=None):
    options = cli.parse(Config, argv, description=__doc__)
    with cli.user_errors():
        _, extra, model = load_run(options.checkpoint, char_lm.Config, char_lm.build_model, last=options.last)
        vocab = CharVocab(extra["vocab"])
        unknown = sorted(set(options.prime) - set(vocab.chars))
        if unknown:
            raise ValueError(
                f"--prime has characters the model never saw: {unknown!r}; its vocabulary is {vocab.chars!r}"
            )
        graphdef, params = nnx.split(model)
        print(
            sample_text(
                graphdef,
                params,
                vocab,
                prime=options.prime,
                length=options.length,
                temperature=options.temperature,
                top_k=options.top_k,
                argmax=options.argmax,
                seed=options.seed,
            )
        )


if __name__ == "__main__":
    main()
