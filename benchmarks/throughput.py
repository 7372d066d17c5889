"""Train-step throughput of a char-level LM: rnn_jax against PyTorch's fused modules and
Flax's `nn.RNN` cells with identical shapes, and against the measured matmul ceiling.

For each cell x hidden x seq: tokens/s of one train step (forward + backward + Adam; see
`benchmarks/common.py`) of
  rnn_jax           the library's step (hand-written backward pass, `backprop="fused"`)
  rnn_jax-autodiff  the same with JAX differentiating the scan (the reference path)
  flax              flax.linen nn.RNN(OptimizedLSTMCell | GRUCell | SimpleCell)
  torch             torch.nn.LSTM | GRU | RNN (oneDNN on CPU), if torch is installed
timed interleaved (medians of --repeats rounds), compile time (first call) reported apart;
"ceiling" is the fraction of the measured float32 matmul GFLOP/s that the step's matmul FLOPs
reach. Levers of the core can be timed beside them: --impls rnn_jax,rnn_jax-unroll2,rnn_jax-bf16,
rnn_jax-untransposed (W_hh not transposed before the loop, as below hidden 1024), and
on an NVIDIA GPU rnn_jax-cudnn (the LSTM as one cuDNN call, `scan="cudnn"`).

    python -m benchmarks.throughput                                   # the full grid (tens of minutes on 2 cores)
    python -m benchmarks.throughput --cells lstm --hidden 256 --seq 128 --out throughput.json
"""

from __future__ import annotations

import argparse
import functools
import math
from unittest import mock

import jax.numpy as jnp

from benchmarks import common
from rnn_jax import fused

IMPLEMENTATIONS = {
    "rnn_jax": common.rnn_jax_step,
    "rnn_jax-autodiff": functools.partial(common.rnn_jax_step, backprop="autodiff"),
    "flax": common.flax_linen_step,
    "torch": common.torch_step,
}


def untransposed_step(cell: str, hidden: int, tokens, **options):
    """The library's step with W_hh never transposed before the forward loop (the default does
    it from hidden `fused.TRANSPOSE_FROM_HIDDEN` on), for timing the two side by side."""
    call = common.rnn_jax_step(cell, hidden, tokens, **options)

    def untransposed():
        with mock.patch.object(fused, "TRANSPOSE_FROM_HIDDEN", math.inf):  # read when the step is traced
            return call()

    return untransposed


# levers of the core, timed on request (--impls): not the library's defaults
LEVERS = {
    "rnn_jax-untransposed": untransposed_step,
    "rnn_jax-unroll2": functools.partial(common.rnn_jax_step, unroll=2),
    "rnn_jax-unroll4": functools.partial(common.rnn_jax_step, unroll=4),
    "rnn_jax-bf16": functools.partial(common.rnn_jax_step, compute_dtype=jnp.bfloat16),
    "rnn_jax-cudnn": functools.partial(common.rnn_jax_step, scan="cudnn"),  # the LSTM on a GPU
}
ONLY_FOR = {"rnn_jax-cudnn": ("lstm",)}  # implementations that exist for some cells only


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="rnn,lstm,gru", help="comma-separated cells (default: rnn,lstm,gru)")
    parser.add_argument(
        "--hidden", default="128,256,512,1024", help="comma-separated hidden sizes (default: 128,256,512,1024)"
    )
    parser.add_argument("--seq", default="128,512", help="comma-separated sequence lengths (default: 128,512)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch (default: 32)")
    parser.add_argument(
        "--impls",
        default=",".join(IMPLEMENTATIONS),
        help=f"comma-separated, of {', '.join(IMPLEMENTATIONS)} (torch is skipped when absent) and "
        f"the levers {', '.join(LEVERS)} (default: {','.join(IMPLEMENTATIONS)})",
    )
    common.add_timing_flags(parser)
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave the C allocator as it is (by default the process keeps freed memory for reuse, as "
        "the experiments do: rnn_jax.keep_freed_memory); to measure what that setting buys",
    )
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)

    impls = [name for name in args.impls.split(",") if name != "torch" or common.torch_available()]
    choices = {**IMPLEMENTATIONS, **LEVERS}
    unknown = sorted(set(impls) - set(choices))
    if unknown:
        parser.error(f"unknown --impls {unknown}; choose from {', '.join(choices)}")
    env = common.prepare_host(args.default_malloc)
    ceiling = common.matmul_ceiling()
    print(f"{common.describe(env)}\nmeasured float32 matmul ceiling: {ceiling:.0f} GFLOP/s\n")

    rows = []
    for cell in args.cells.split(","):
        for hidden in map(int, args.hidden.split(",")):
            for seq in map(int, args.seq.split(",")):
                tokens = common.random_tokens(args.batch, seq)
                calls = {
                    name: choices[name](cell, hidden, tokens) for name in impls if cell in ONLY_FOR.get(name, (cell,))
                }
                timed = common.interleaved(calls, repeats=args.repeats, min_seconds=args.min_seconds)
                flops = common.flops_per_token(cell, hidden)
                for name, t in timed.items():
                    tokens_per_s = args.batch * seq / t["seconds"]
                    rows.append(
                        dict(
                            cell=cell,
                            hidden=hidden,
                            seq=seq,
                            impl=name,
                            ms_per_step=1e3 * t["seconds"],
                            tokens_per_s=tokens_per_s,
                            ceiling=tokens_per_s * flops / (ceiling * 1e9),
                            first_call_s=t["first_call_s"],
                            all_s=t["all"],
                        )
                    )
                base = {r["impl"]: r["ms_per_step"] for r in rows[-len(timed) :]}
                for r in rows[-len(timed) :]:
                    r["vs_torch"] = base["torch"] / r["ms_per_step"] if "torch" in base else float("nan")
                    r["vs_flax"] = base["flax"] / r["ms_per_step"] if "flax" in base else float("nan")
                    print(
                        f"{cell} {hidden:>4} {seq:>4} {r['impl']:<17} {r['tokens_per_s']:>9.0f} tok/s "
                        f"{r['vs_torch']:>5.2f}x torch {r['vs_flax']:>5.2f}x flax {100 * r['ceiling']:>4.0f}% ceiling",
                        flush=True,
                    )
    print()
    common.print_table(
        rows,
        [
            ("cell", "cell", ""),
            ("hidden", "hidden", "d"),
            ("seq", "seq", "d"),
            ("impl", "implementation", ""),
            ("ms_per_step", "ms/step", ".1f"),
            ("tokens_per_s", "tokens/s", ".0f"),
            ("vs_torch", "x torch", ".2f"),
            ("vs_flax", "x flax", ".2f"),
            ("ceiling", "of ceiling", ".0%"),
            ("first_call_s", "compile s", ".1f"),
        ],
    )
    print("x torch / x flax: speed relative to that implementation at the same shape (higher is faster)")
    common.write_json(args.out, {"environment": env, "matmul_gflops": ceiling, "batch": args.batch, "rows": rows})


if __name__ == "__main__":
    main()
