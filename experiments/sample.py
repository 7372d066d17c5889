"""Sample text from a trained char_lm run.

    python -m experiments.sample --checkpoint runs/char_lm/20261127-120000 --prime "ROMEO:" --length 500 --temperature 0.8
    python -m experiments.sample --checkpoint RUN --prime "int main(" --top-k 5
    python -m experiments.sample --checkpoint RUN --prime "\\begin{" --argmax

--checkpoint is the run's output directory (it holds config.json and checkpoints/); the best
checkpoint by validation loss is used (--last for the latest one).
"""

from __future__ import annotations

import argparse
import sys

from flax import nnx

from experiments.char_lm import Config, build_model, sample_text
from rnn_jax.config import user_errors
from rnn_jax.data.text import CharVocab
from rnn_jax.experiment import load_run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="output directory of a char_lm run")
    parser.add_argument("--prime", default="\n", help="text to start from (default: a newline)")
    parser.add_argument("--length", type=int, default=500, help="characters to generate (default: 500)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=None, help="sample among the k most likely characters only")
    parser.add_argument("--argmax", action="store_true", help="greedy: always the most likely character")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    parser.add_argument("--last", action="store_true", help="use the latest checkpoint, not the best by validation loss")
    args = parser.parse_args(argv)
    if args.length < 1 or args.temperature <= 0 or (args.top_k is not None and args.top_k < 1):
        parser.error("need --length >= 1, --temperature > 0 and --top-k >= 1")
    if not args.prime:
        parser.error("--prime must hold at least one character")

    with user_errors():
        cfg, extra, model = load_run(args.checkpoint, Config, build_model, last=args.last)
    vocab = CharVocab(extra["vocab"])
    unknown = sorted(set(args.prime) - set(vocab.chars))
    if unknown:
        sys.exit(f"--prime has characters the model never saw: {unknown!r}; its vocabulary is {vocab.chars!r}")
    graphdef, params = nnx.split(model)
    print(sample_text(graphdef, params, vocab, prime=args.prime, length=args.length,
                      temperature=args.temperature, top_k=args.top_k, argmax=args.argmax, seed=args.seed))


if __name__ == "__main__":
    main()
