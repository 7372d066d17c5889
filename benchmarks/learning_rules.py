"""What a learning rule costs per training step against full BPTT (`--gradient`,
`rnn_jax.learning_rules`): the char-LM step of one cell at several hidden sizes, plain and
gradient-flow measuring (which also computes full BPTT's gradient for the alignment), with
XLA's compiled temporary memory of each step.

    python -m benchmarks.learning_rules                                   # GRU, hidden 16-128
    python -m benchmarks.learning_rules --rules bptt,truncated:10,truncated:1 --out rules.json
"""

from __future__ import annotations

import argparse

import jax

from benchmarks import common
from rnn_jax.losses import sequence_cross_entropy


def step_parts(cell: str, hidden: int, tokens, rule: str, measure_flow: bool):
    model = common.char_lm_model(cell, hidden)
    batch = common.char_lm_batch(tokens)
    return common.train_step_parts(model, sequence_cross_entropy, batch, measure_flow=measure_flow, gradient=rule)


def temporary_mib(step, state, batch) -> float:
    """XLA's temporary buffers of the compiled step (activations kept for the backward pass)."""
    analysis = step.lower(state, batch).compile().memory_analysis()
    return float("nan") if analysis is None else analysis.temp_size_in_bytes / 2**20


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="gru", help="the cell (default: gru)")
    parser.add_argument("--hidden", default="16,32,64,128", help="comma-separated hidden sizes (default: 16,32,64,128)")
    parser.add_argument(
        "--rules", default="bptt,truncated:10", help="comma-separated learning rules (first: the reference)"
    )
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch (default: 32)")
    parser.add_argument("--seq", type=int, default=128, help="time steps per sequence (default: 128)")
    common.add_timing_flags(parser)
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    env = common.prepare_host()
    print(common.describe(env))
    rules, rows = args.rules.split(","), []
    for hidden in map(int, args.hidden.split(",")):
        tokens = common.random_tokens(args.batch, args.seq)
        for measure_flow in (False, True):
            parts = {rule: step_parts(args.cell, hidden, tokens, rule, measure_flow) for rule in rules}
            timed = common.interleaved(
                {rule: common.stepper(*p) for rule, p in parts.items()},
                repeats=args.repeats,
                min_seconds=args.min_seconds,
            )
            for rule, t in timed.items():
                rows.append(
                    dict(
                        hidden=hidden,
                        step="flow-measuring" if measure_flow else "plain",
                        rule=rule,
                        ms_per_step=1e3 * t["seconds"],
                        vs_first=t["seconds"] / timed[rules[0]]["seconds"],
                        temp_mib=temporary_mib(*parts[rule]),
                    )
                )
    common.print_table(
        rows,
        [
            ("hidden", "hidden", "d"),
            ("step", "step", ""),
            ("rule", "rule", ""),
            ("ms_per_step", "ms/step", ".2f"),
            ("vs_first", f"vs {rules[0]}", ".2f"),
            ("temp_mib", "XLA temp MiB", ".1f"),
        ],
    )
    common.write_json(args.out, {"environment": env, "args": vars(args), "rows": rows, "jax": jax.__version__})


if __name__ == "__main__":
    main()
