"""What the gradient-flow probes and NNX's Python overhead cost per train step.

Compares, on identical models and batches (the char-LM step of `benchmarks/common.py`, or the
adding problem's with `--task adding`):
  split-once  rnn_jax.make_train_step: the NNX graph is split once; the jitted step is a pure
              function of (TrainState, batch), so a call is an XLA dispatch and nothing more;
  flow        the same step with gradient-flow measurement on (probes: ||dL/dh_t|| and
              ||dL_T/dh_t|| for every t, from the same forward pass; a many-to-one loss such as
              the adding problem's is its own L_T, and its step runs one backward pass);
  nnx.jit     the idiomatic `nnx.jit` step over the module and an `nnx.Optimizer`, which walks
              and re-merges the module graph in Python on every call.
The gap to nnx.jit matters most for small models, where the compiled step is short.

    python -m benchmarks.train_step                  # LSTM hidden 256, batch 32, seq 128 + a tiny model
    python -m benchmarks.train_step --cells rnn,lstm,gru --hidden 128,256 --out bench.json
    python -m benchmarks.train_step --task adding --cells rnn,lstm,gru --seq 100 --no-tiny
"""

from __future__ import annotations

import argparse

import jax
import optax
from flax import nnx

from benchmarks import common
from experiments import gradient_flow
from rnn_jax import SequenceModel, make_cell
from rnn_jax.losses import apply, sequence_cross_entropy
from rnn_jax.tasks import TASKS as TASK_BUILDERS

TASKS = ("charlm", "adding")


def task_parts(task: str, cell: str, hidden: int, batch: int, seq: int):
    """(model, loss function, batch) of one train step: the char-LM (a loss at every step), or
    the adding problem as the main job (`experiments.gradient_flow`) sets it up (real inputs
    (batch, seq, 2), one squared error at the last step)."""
    if task == "charlm":
        return (
            common.char_lm_model(cell, hidden),
            sequence_cross_entropy,
            common.char_lm_batch(common.random_tokens(batch, seq)),
        )
    adding = TASK_BUILDERS["adding"](gradient_flow.Config.create(task="adding", batch=batch, seq_len=seq))
    model = SequenceModel(make_cell(cell), hidden_size=hidden, rngs=nnx.Rngs(0), **adding.model_io)
    return model, adding.loss_fn, adding.batch(jax.random.key(0))


def nnx_jit(model, loss_fn, batch):
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(lambda m: apply(loss_fn, m, batch).loss)(model)
        optimizer.update(model, grads)
        return loss

    return lambda: step(model, optimizer, batch)


VARIANTS = {
    "split-once": lambda *parts: common.stepper(*common.train_step_parts(*parts)),
    "flow": lambda *parts: common.stepper(*common.train_step_parts(*parts, measure_flow=True)),
    "nnx.jit": nnx_jit,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--task", default="charlm", choices=TASKS, help="the step timed: char-LM (default) or adding problem"
    )
    parser.add_argument("--cells", default="lstm", help="comma-separated cells to time (default: lstm)")
    parser.add_argument("--hidden", default="256", help="comma-separated hidden sizes (default: 256)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch (default: 32)")
    parser.add_argument("--seq", type=int, default=128, help="time steps per sequence (default: 128)")
    common.add_timing_flags(parser, repeats=5)
    parser.add_argument(
        "--no-tiny",
        action="store_true",
        help="skip the tiny model (hidden 16, batch 4, seq 8) that isolates per-call overhead",
    )
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--out", help="also write the rows as JSON to this path")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    env = common.prepare_host()

    configs = [(c, int(h), args.batch, args.seq) for c in args.cells.split(",") for h in args.hidden.split(",")]
    if not args.no_tiny:
        configs += [(c, 16, 4, 8) for c in args.cells.split(",")]
    rows = []
    for cell, hidden, batch, seq in configs:
        calls = {
            name: VARIANTS[name](*task_parts(args.task, cell, hidden, batch, seq)) for name in args.variants.split(",")
        }
        timed = common.interleaved(calls, repeats=args.repeats, min_seconds=args.min_seconds)
        base = next(iter(timed.values()))["seconds"]
        for name, t in timed.items():
            rows.append(
                dict(
                    variant=name,
                    task=args.task,
                    cell=cell,
                    hidden=hidden,
                    batch=batch,
                    seq=seq,
                    ms_per_step=1e3 * t["seconds"],
                    tokens_per_s=batch * seq / t["seconds"],
                    vs_first=t["seconds"] / base,
                    first_call_s=t["first_call_s"],
                )
            )

    print(common.describe(env))
    common.print_table(
        rows,
        [
            ("variant", "variant", ""),
            ("task", "task", ""),
            ("cell", "cell", ""),
            ("hidden", "hidden", "d"),
            ("batch", "batch", "d"),
            ("seq", "seq", "d"),
            ("ms_per_step", "ms/step", ".3f"),
            ("tokens_per_s", "tokens/s", ".0f"),
            ("vs_first", "time ratio", ".2f"),
            ("first_call_s", "compile s", ".2f"),
        ],
    )
    print("time ratio: ms/step relative to the first variant of the same configuration")
    common.write_json(args.out, {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
