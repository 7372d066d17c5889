"""Peak memory (RSS) and time of a long-sequence train step, with and without rematerialisation.

Each configuration runs in its own process (peak RSS is per process): the char-LM train step
of `benchmarks/common.py` at --hidden, for each sequence length and remat setting, one
compile + warm-up step then --steps timed steps. Remat settings (`rnn_jax.recurrence.run`):
off; per-step (each step's activations recomputed); segments (only every K-th carry kept,
K = sqrt(seq), each segment recomputed with its input projection). Reported: XLA's buffer
assignment for the compiled step (temporaries: the activations kept for the backward pass and
the working memory; exact, independent of the allocator), the peak RSS of the process
(compilation and the runtime included), and seconds per step.

    python -m benchmarks.memory                                   # LSTM hidden 256, seq 512/2048/8192
    python -m benchmarks.memory --cell gru --seq 2048 --out memory.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time

from benchmarks import common
from rnn_jax import keep_freed_memory

# the `remat` option of rnn_jax.layers.Recurrent for a sequence of `seq` steps
REMAT = {
    "off": lambda seq: False,
    "per-step": lambda seq: True,
    "segments": lambda seq: max(2, round(math.sqrt(seq))),  # sqrt(T)-step segments need the least memory
}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(cell: str, hidden: int, batch: int, seq: int, remat: str, steps: int, flow: bool = False) -> dict:
    tokens = common.random_tokens(batch, seq)
    step, state, batch_arrays = common.rnn_jax_parts(cell, hidden, tokens, remat=REMAT[remat](seq))
    start = time.perf_counter()
    compiled = step.lower(state, batch_arrays).compile()
    compile_s = time.perf_counter() - start
    buffers = compiled.memory_analysis()
    flow_temp = float("nan")
    if flow:  # the step that also measures the gradient flow: compiled for its buffers, not run
        flow_step, _, _ = common.rnn_jax_parts(cell, hidden, tokens, remat=REMAT[remat](seq), measure_flow=True)
        flow_temp = flow_step.lower(state, batch_arrays).compile().memory_analysis().temp_size_in_bytes / 2**20
    seconds = float("nan")
    for i in range(steps + 1 if steps else 0):  # the first call is the warm-up
        if i == 1:
            start = time.perf_counter()
        state, out = compiled(state, batch_arrays)
        common.wait(out.loss)
        seconds = (time.perf_counter() - start) / steps
    return dict(
        cell=cell,
        hidden=hidden,
        batch=batch,
        seq=seq,
        remat=remat,
        remat_option=REMAT[remat](seq),
        temp_mib=buffers.temp_size_in_bytes / 2**20,
        flow_temp_mib=flow_temp,
        arguments_mib=buffers.argument_size_in_bytes / 2**20,
        peak_rss_mib=_peak_rss_mib(),
        s_per_step=seconds,
        compile_s=compile_s,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="lstm", help="rnn | lstm | gru (default: lstm)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (default: 256)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch (default: 32)")
    parser.add_argument(
        "--seq", default="512,2048,8192", help="comma-separated sequence lengths (default: 512,2048,8192)"
    )
    parser.add_argument("--remat", default=",".join(REMAT), help=f"comma-separated subset of {', '.join(REMAT)}")
    parser.add_argument(
        "--steps", type=int, default=2, help="timed steps after the first (default: 2; 0: compile only, no timing)"
    )
    parser.add_argument(
        "--flow", action="store_true", help="also compile the step that measures the gradient flow (its temporaries)"
    )
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one configuration, as JSON, in this process
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:  # one configuration's own process: set up as the parent, nothing else imported
        keep_freed_memory()
        print(json.dumps(child(**json.loads(args.child))))
        return

    env = common.prepare_host()
    print(common.describe(env))
    rows = []
    for seq in map(int, args.seq.split(",")):
        for remat in args.remat.split(","):
            if remat not in REMAT:
                parser.error(f"unknown --remat {remat!r}; choose from {', '.join(REMAT)}")
            config = dict(
                cell=args.cell,
                hidden=args.hidden,
                batch=args.batch,
                seq=seq,
                remat=remat,
                steps=args.steps,
                flow=args.flow,
            )
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.memory", "--child", json.dumps(config)],
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                print(f"{config} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"seq {seq:>5} remat {remat:<8} temporaries {r['temp_mib']:>7.0f} MiB (flow step "
                f"{r['flow_temp_mib']:.0f}), peak RSS "
                f"{r['peak_rss_mib']:>7.0f} MiB, {r['s_per_step']:>6.2f} s/step",
                flush=True,
            )
    for r in rows:
        off = next((o for o in rows if o["seq"] == r["seq"] and o["remat"] == "off"), None)
        r["memory_vs_off"] = r["temp_mib"] / off["temp_mib"] if off else float("nan")
        r["time_vs_off"] = r["s_per_step"] / off["s_per_step"] if off else float("nan")
    print()
    common.print_table(
        rows,
        [
            ("cell", "cell", ""),
            ("hidden", "hidden", "d"),
            ("batch", "batch", "d"),
            ("seq", "seq", "d"),
            ("remat", "remat", ""),
            ("temp_mib", "temporaries MiB", ".0f"),
            ("flow_temp_mib", "flow step MiB", ".0f"),
            ("memory_vs_off", "vs off", ".2f"),
            ("peak_rss_mib", "peak RSS MiB", ".0f"),
            ("s_per_step", "s/step", ".2f"),
            ("time_vs_off", "time vs off", ".2f"),
        ],
    )
    print(
        "temporaries: XLA's buffers of the compiled step beyond its arguments (state, batch); "
        "peak RSS includes compilation and the runtime"
    )
    common.write_json(args.out, {"environment": env, "rows": rows})


if __name__ == "__main__":
    main()
