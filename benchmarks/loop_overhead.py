"""The training loop's own cost: steps/s of `rnn_jax.loop.train_loop` on a tiny model (where
the step costs little, so any host work or device synchronisation per step shows) against the
same jitted step called in a bare Python for-loop, at several --log-every settings (how often
the loop reads the steps' metrics on the host). Interleaved rounds, medians. Timings of a step
this small move by 10-20% between rounds on a shared 2-core machine, more than the loop costs;
so the loop's own host time per step is also measured apart, with a no-op step (it returns a
fixed output at once): that is what the loop adds to every step, whatever the model.

    python -m benchmarks.loop_overhead
    python -m benchmarks.loop_overhead --steps 2000 --log-every 1,10,100 --out loop.json
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from benchmarks import common
from rnn_jax import LoopConfig, SequenceModel, init_train_state, make_cell, make_train_step, train_loop
from rnn_jax.train import StepOutput


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="steps per timed run (1000)")
    parser.add_argument("--log-every", default="1,10,100", help="comma-separated --log-every settings (1,10,100)")
    parser.add_argument("--hidden", type=int, default=8, help="hidden size of the tiny GRU (8)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--out", help="also write the rows and the environment as JSON to this path")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    env = common.prepare_host()
    print(common.describe(env))
    model = SequenceModel(
        make_cell("gru"), vocab_size=common.VOCAB, hidden_size=args.hidden, output_size=common.VOCAB, rngs=nnx.Rngs(0)
    )
    optimizer = optax.adam(1e-3)
    graphdef, initial = init_train_state(model, optimizer, jax.random.key(0))
    step = make_train_step(graphdef, optimizer)
    tokens = common.random_tokens(4, 10)
    batch = common.char_lm_batch(tokens)

    def fresh():
        return jax.tree.map(jnp.copy, initial)

    def bare():
        state = fresh()
        for _ in range(args.steps):
            state, out = step(state, batch)
        common.wait(out.loss)

    def looped(log_every):
        def call():
            train_loop(
                fresh(),
                train_step=step,
                get_batch=lambda _: batch,
                loop=LoopConfig(steps=args.steps, log_every=log_every),
            )

        return call

    calls = {"bare for-loop": bare, **{f"train_loop, log every {n}": looped(int(n)) for n in args.log_every.split(",")}}
    for call in calls.values():  # compile and warm up
        call()
    seconds = {name: [] for name in calls}
    for _ in range(args.repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            seconds[name].append(time.perf_counter() - start)
    bare_s = sorted(seconds["bare for-loop"])[len(seconds["bare for-loop"]) // 2]
    rows = []
    for name, times in seconds.items():
        median = sorted(times)[len(times) // 2]
        row = {"impl": name, "steps_per_s": args.steps / median, "time_vs_bare": median / bare_s}
        row.update(host_us_per_step=float("nan"), host_share=float("nan"))  # the bare loop: none
        if name != "bare for-loop":
            host_s = _host_seconds_per_step(initial, args.steps, int(name.rsplit(" ", 1)[-1]), args.repeats)
            row.update(host_us_per_step=1e6 * host_s, host_share=host_s / (bare_s / args.steps))
        rows.append(row)
    common.print_table(
        rows,
        [
            ("impl", "loop", "s"),
            ("steps_per_s", "steps/s", ".0f"),
            ("time_vs_bare", "time vs bare", ".3f"),
            ("host_us_per_step", "loop's host time/step (us)", ".1f"),
            ("host_share", "of the bare step", ".1%"),
        ],
    )
    common.write_json(args.out, {"environment": env, "args": vars(args), "rows": rows})


def _host_seconds_per_step(state, steps: int, log_every: int, repeats: int) -> float:
    """The loop's own time per step: `train_loop` around a no-op step (median of `repeats`)."""
    scalar = jnp.float32(1.0)
    output = StepOutput(scalar, scalar, scalar, {}).with_packed()
    times = []
    for _ in range(repeats + 1):  # the first warms up
        start = time.perf_counter()
        train_loop(
            state,
            train_step=lambda s, _: (s, output),
            get_batch=lambda _: None,
            loop=LoopConfig(steps=steps, log_every=log_every),
        )
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2] / steps


if __name__ == "__main__":
    main()
