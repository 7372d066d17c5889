"""N seeds of one model in one vmapped train step vs N sequential runs.

Error bars need several seeds; on a small model each step leaves most of the machine idle,
so `jax.vmap` over the parameters (and the batches: each seed its own data) trains N models
in one step. Compares tokens/s of all N seeds together: one jitted `vmap`-ed step, against
the same single-seed step called N times (N runs one after another cost the same per token).

    python -m benchmarks.seeds                             # LSTM, 8 seeds, hidden 128 and 256
    python -m benchmarks.seeds --cells rnn,lstm,gru --seeds 8 --out seeds.json
"""

from __future__ import annotations

import argparse

import jax
import numpy as np
import optax
from flax import nnx

from benchmarks import common
from rnn_jax import SequenceModel, StepOptions, init_train_state, make_cell, make_train_step, stack_seeds


def vmapped_step(cell: str, hidden: int, tokens: np.ndarray):
    """tokens (seeds, batch, seq + 1): one model per seed, all trained by one jitted step."""
    optimizer = optax.adam(1e-3)
    states = []
    for seed in range(tokens.shape[0]):
        model = SequenceModel(
            make_cell(cell), vocab_size=common.VOCAB, hidden_size=hidden, output_size=common.VOCAB, rngs=nnx.Rngs(seed)
        )
        graphdef, state = init_train_state(model, optimizer, jax.random.key(seed))
        states.append(state)
    step = make_train_step(graphdef, optimizer, StepOptions(seeds=True))  # what experiments.gradient_flow --seeds runs
    return common.stepper(step, stack_seeds(states), common.char_lm_batch(tokens))


def sequential_steps(cell: str, hidden: int, tokens: np.ndarray):
    """The single-seed step, once per seed (as N separate runs would)."""
    calls = [common.rnn_jax_step(cell, hidden, seed_tokens) for seed_tokens in tokens]
    return lambda: [call() for call in calls][-1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="lstm", help="comma-separated cells (default: lstm)")
    parser.add_argument("--hidden", default="128,256", help="comma-separated hidden sizes (default: 128,256)")
    parser.add_argument("--seeds", type=int, default=8, help="models trained together (default: 8)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch and seed (default: 32)")
    parser.add_argument("--seq", type=int, default=128, help="time steps per sequence (default: 128)")
    common.add_timing_flags(parser)
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    env = common.prepare_host()
    print(common.describe(env))
    rows = []
    for cell in args.cells.split(","):
        for hidden in map(int, args.hidden.split(",")):
            tokens = np.stack([common.random_tokens(args.batch, args.seq, seed) for seed in range(args.seeds)])
            timed = common.interleaved(
                {"vmap": vmapped_step(cell, hidden, tokens), "sequential": sequential_steps(cell, hidden, tokens)},
                repeats=args.repeats,
                min_seconds=args.min_seconds,
            )
            for name, t in timed.items():
                rows.append(
                    dict(
                        cell=cell,
                        hidden=hidden,
                        seeds=args.seeds,
                        mode=name,
                        ms_per_step_of_all=1e3 * t["seconds"],
                        tokens_per_s=args.seeds * args.batch * args.seq / t["seconds"],
                        speedup=timed["sequential"]["seconds"] / t["seconds"],
                        first_call_s=t["first_call_s"],
                    )
                )
    common.print_table(
        rows,
        [
            ("cell", "cell", ""),
            ("hidden", "hidden", "d"),
            ("seeds", "seeds", "d"),
            ("mode", "mode", ""),
            ("ms_per_step_of_all", "ms per step of all seeds", ".1f"),
            ("tokens_per_s", "tokens/s", ".0f"),
            ("speedup", "vs sequential", ".2f"),
            ("first_call_s", "compile s", ".1f"),
        ],
    )
    common.write_json(args.out, {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
