"""Sample text from a trained char_lm run.

    python -m experiments.sample --checkpoint runs/char_lm/20261127-120000 --prime "ROMEO:" --length 500 --temperature 0.8
    python -m experiments.sample --checkpoint RUN --prime "int main(" --top-k 5
    python -m experiments.sample --checkpoint RUN --prime "\\begin{" --argmax

--checkpoint is the run's output directory (it holds config.json and checkpoints/); the best
checkpoint by validation loss is used (--last for the latest one).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from experiments.char_lm import Config, build, sample_text
from rnn_jax.data.text import CharVocab
from rnn_jax.train import Checkpoints


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

    run_dir = Path(args.checkpoint)
    if not (run_dir / "config.json").exists() or not (run_dir / "checkpoints").is_dir():
        sys.exit(f"--checkpoint {run_dir}: not a char_lm run directory (it needs config.json and checkpoints/)")
    cfg = Config(**{**json.loads((run_dir / "config.json").read_text()), "resume": None})
    checkpoints = Checkpoints(run_dir / "checkpoints")
    best = not args.last and checkpoints.best.latest_step() is not None
    manager = checkpoints.best if best else checkpoints.last
    step = manager.best_step() if best else manager.latest_step()
    if step is None:
        sys.exit(f"{run_dir}: no checkpoint saved yet")
    # the vocabulary lives in the checkpoint's JSON; read it first to shape the model
    vocab = CharVocab(manager.restore(step, args=_json_only())["extra"]["vocab"])
    unknown = sorted(set(args.prime) - set(vocab.chars))
    if unknown:
        sys.exit(f"--prime has characters the model never saw: {unknown!r}; its vocabulary is {vocab.chars!r}")
    graphdef, like, _ = build(cfg, vocab)
    state, _ = checkpoints.restore(like, best=best, step=step)
    checkpoints.close()
    print(sample_text(graphdef, state.params, vocab, prime=args.prime, length=args.length,
                      temperature=args.temperature, top_k=args.top_k, argmax=args.argmax, seed=args.seed))


def _json_only():
    import orbax.checkpoint as ocp

    return ocp.args.Composite(extra=ocp.args.JsonRestore())


if __name__ == "__main__":
    main()
