"""The recurrences linear in h_{t-1} trained with a parallel scan against the step-by-step scan
of the same cell, and against the LSTM and GRU at an equal parameter count: train-step
throughput (tokens/s, interleaved medians) and XLA's temporary memory of the compiled step;
and the recurrence alone (forward and backward of one layer's `run`, no embedding, head or
optimizer), parallel against sequential, and the same layer without its recurrence (input
projection, gates and output only: what no scan can make faster, so sequential / that bounds
any scan's gain).

The step is the char-LM step of `benchmarks/common.py` (one recurrent layer, no residual
block, embedding of size --hidden, head to 65 classes, Adam). The LSTM's and GRU's hidden sizes
are chosen so that their recurrent layer has as many parameters as the first cell's.

    python -m benchmarks.parallel_scan                                   # minGRU, minLSTM, LRU at hidden 256
    python -m benchmarks.parallel_scan --cells mingru --seq 4096 --batch 8 --out scan.json
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp

from benchmarks import common
from rnn_jax import make_cell, run

BASELINES = ("lstm", "gru")


def recurrent_parameters(cell: str, hidden: int, embed: int) -> int:
    """Parameters of one recurrent layer of `cell` at `hidden` reading inputs of size `embed`."""
    import jax

    shapes = jax.eval_shape(lambda: make_cell(cell).init(jax.random.key(0), embed, hidden))
    return sum(math.prod(s.shape) for s in jax.tree.leaves(shapes))


def recurrence_call(cell: str, hidden: int, batch: int, seq: int, scan: str | None):
    """`call()`: the gradient of one layer's recurrence alone (inputs and parameters), no
    embedding, head or optimizer. `scan=None`: the same layer with the recurrence itself left out
    (carry_t = b_t: the input projection, gates and output only), the floor under any scan."""
    recurrence = make_cell(cell)
    params = recurrence.init(jax.random.key(0), hidden, hidden)
    xs = jax.random.normal(jax.random.key(1), (batch, seq, hidden))

    def outputs(params, xs):
        if scan is not None:
            return run(recurrence, params, xs, scan=scan)[1]
        xw = recurrence.project_inputs(params, xs)
        return recurrence.output(params, recurrence.coefficients(params, xw)[1], xw)

    grad = jax.jit(jax.grad(lambda p, xs: jnp.sum(outputs(p, xs) ** 2), argnums=(0, 1)))
    return lambda: grad(params, xs)


def equal_parameter_hidden(cell: str, parameters: int, embed: int) -> int:
    """The hidden size of `cell` whose layer has the parameter count closest to `parameters`."""
    return min(range(1, 4 * embed), key=lambda h: abs(recurrent_parameters(cell, h, embed) - parameters))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="mingru,minlstm,lru", help="comma-separated linear recurrences")
    parser.add_argument("--hidden", type=int, default=256, help="their hidden size, = the embedding size (256)")
    parser.add_argument("--seq", default="128,512,4096", help="comma-separated sequence lengths (128,512,4096)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per batch (8)")
    common.add_timing_flags(parser)
    parser.add_argument("--no-baselines", action="store_true", help="leave out the LSTM and GRU")
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    cells = args.cells.split(",")
    env = common.prepare_host()
    print(common.describe(env))
    parameters = recurrent_parameters(cells[0], args.hidden, args.hidden)
    sizes = {cell: args.hidden for cell in cells}
    if not args.no_baselines:
        sizes.update({cell: equal_parameter_hidden(cell, parameters, args.hidden) for cell in BASELINES})
    rows = []
    for seq in map(int, args.seq.split(",")):
        tokens = common.random_tokens(args.batch, seq)
        parts = {}
        for cell in cells:
            for scan in ("parallel", "sequential"):
                parts[f"{cell} {scan}"] = common.rnn_jax_parts(cell, args.hidden, tokens, scan=scan)
        for cell in BASELINES if not args.no_baselines else ():
            parts[f"{cell} (hidden {sizes[cell]})"] = common.rnn_jax_parts(cell, sizes[cell], tokens, embed=args.hidden)
        temp = {
            name: step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes / 2**20
            for name, (step, state, batch) in parts.items()
        }
        timings = common.interleaved(
            {name: common.stepper(*p) for name, p in parts.items()}, repeats=args.repeats, min_seconds=args.min_seconds
        )
        alone = common.interleaved(
            {
                f"{cell} {scan}": recurrence_call(cell, args.hidden, args.batch, seq, None if scan == "floor" else scan)
                for cell in cells
                for scan in ("parallel", "sequential", "floor")
            },
            repeats=args.repeats,
            min_seconds=args.min_seconds,
        )
        for name, timing in timings.items():
            cell = name.split()[0]
            sequential = timings.get(f"{cell} sequential")
            rows.append(
                {
                    "impl": name,
                    "cell": cell,
                    "seq": seq,
                    "batch": args.batch,
                    "hidden": sizes[cell],
                    "parameters": recurrent_parameters(cell, sizes[cell], args.hidden),
                    "tokens_per_s": args.batch * seq / timing["seconds"],
                    "seconds": timing["seconds"],
                    "first_call_s": timing["first_call_s"],
                    "temp_mib": temp[name],
                    "vs_sequential": sequential["seconds"] / timing["seconds"] if sequential else float("nan"),
                    "recurrence_ms": 1e3 * alone[name]["seconds"] if name in alone else float("nan"),
                    "recurrence_vs_sequential": (
                        alone[f"{cell} sequential"]["seconds"] / alone[name]["seconds"]
                        if name in alone
                        else float("nan")
                    ),
                    "floor_ms": 1e3 * alone[f"{cell} floor"]["seconds"] if name in alone else float("nan"),
                    "bound_vs_sequential": (
                        alone[f"{cell} sequential"]["seconds"] / alone[f"{cell} floor"]["seconds"]
                        if name in alone
                        else float("nan")
                    ),
                }
            )
    common.print_table(
        rows,
        [
            ("impl", "implementation", "s"),
            ("seq", "seq", "d"),
            ("hidden", "hidden", "d"),
            ("parameters", "layer params", "d"),
            ("tokens_per_s", "tokens/s", ".0f"),
            ("vs_sequential", "vs own sequential", ".2f"),
            ("temp_mib", "XLA temp MiB", ".1f"),
            ("recurrence_ms", "recurrence alone ms", ".1f"),
            ("recurrence_vs_sequential", "vs sequential", ".2f"),
            ("floor_ms", "without the recurrence ms", ".1f"),
            ("bound_vs_sequential", "sequential / that", ".2f"),
        ],
    )
    common.write_json(args.out, {"environment": env, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
