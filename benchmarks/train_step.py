"""Train-step throughput of a char-level LM, and what NNX's Python overhead costs per call.

Compares, on identical models and batches:
  split-once  rnn_jax.make_train_step: the NNX graph is split once; the jitted step is a pure
              function of (TrainState, batch), so a call is an XLA dispatch and nothing more;
  flow        the same step with gradient-flow measurement on (probes: ||dL/dh_t|| and
              ||dL_T/dh_t|| for every t, from the same forward pass);
  nnx.jit     the idiomatic `nnx.jit` step over the module and an `nnx.Optimizer`, which walks
              and re-merges the module graph in Python on every call.
The gap to nnx.jit matters most for small models, where the compiled step is short.

    python -m benchmarks.train_step                  # LSTM hidden 256, batch 32, seq 128 + a tiny model
    python -m benchmarks.train_step --cells rnn,lstm,gru --hidden 128,256 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import flax
import jax
import optax
from flax import nnx

from rnn_jax import SequenceModel, init_train_state, make_cell, make_train_step
from rnn_jax.losses import sequence_cross_entropy

VOCAB = 65


def _model(cell, hidden):
    return SequenceModel(make_cell(cell), vocab_size=VOCAB, hidden_size=hidden, output_size=VOCAB, rngs=nnx.Rngs(0))


def _batch(batch, seq):
    tokens = jax.random.randint(jax.random.key(0), (batch, seq + 1), 0, VOCAB)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


def _seconds_per_call(call, calls):
    """Mean seconds of `calls` back-to-back calls (async dispatch overlaps them, as in training)."""
    start = time.perf_counter()
    for _ in range(calls):
        out = call()
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def split_once(cell, hidden, batch, measure_flow=False):
    optimizer = optax.adam(1e-3)
    graphdef, state = init_train_state(_model(cell, hidden), optimizer, jax.random.key(0))
    step = make_train_step(graphdef, optimizer, measure_flow=measure_flow)
    holder = [state]

    def call():
        holder[0], metrics = step(holder[0], batch)
        return metrics["loss"]

    return call


def nnx_jit(cell, hidden, batch):
    model = _model(cell, hidden)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, batch):
        loss, grads = nnx.value_and_grad(lambda m: sequence_cross_entropy(m, batch)[0])(model)
        optimizer.update(model, grads)
        return loss

    return lambda: step(model, optimizer, batch)


VARIANTS = {
    "split-once": split_once,
    "flow": lambda cell, hidden, batch: split_once(cell, hidden, batch, measure_flow=True),
    "nnx.jit": nnx_jit,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", default="lstm", help="comma-separated cells to time (default: lstm)")
    parser.add_argument("--hidden", default="256", help="comma-separated hidden sizes (default: 256)")
    parser.add_argument("--batch", type=int, default=32, help="sequences per batch (default: 32)")
    parser.add_argument("--seq", type=int, default=128, help="time steps per sequence (default: 128)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats, median reported (default: 5)")
    parser.add_argument("--calls", type=int, default=10, help="back-to-back calls per repeat (default: 10)")
    parser.add_argument("--no-tiny", action="store_true", help="skip the tiny model (hidden 16, batch 4, seq 8) "
                        "that isolates per-call overhead")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    parser.add_argument("--out", help="also write the rows as JSON to this path")
    args = parser.parse_args(argv)

    configs = [(c, int(h), args.batch, args.seq) for c in args.cells.split(",") for h in args.hidden.split(",")]
    if not args.no_tiny:
        configs += [(c, 16, 4, 8) for c in args.cells.split(",")]
    rows = []
    for cell, hidden, batch_size, seq in configs:
        batch = _batch(batch_size, seq)
        calls = {}
        for name in args.variants.split(","):
            call = VARIANTS[name](cell, hidden, batch)
            start = time.perf_counter()
            jax.block_until_ready(call())
            calls[name] = (call, time.perf_counter() - start)
        timings = {name: [] for name in calls}
        for _ in range(args.repeats):  # interleaved, so drifts in machine load hit both alike
            for name, (call, _) in calls.items():
                timings[name].append(_seconds_per_call(call, args.calls))
        base = statistics.median(timings[next(iter(calls))])
        for name, (_, compile_s) in calls.items():
            seconds = statistics.median(timings[name])
            rows.append(dict(variant=name, cell=cell, hidden=hidden, batch=batch_size, seq=seq,
                             ms_per_step=1e3 * seconds, tokens_per_s=batch_size * seq / seconds,
                             vs_first=seconds / base, first_call_s=compile_s))

    print(f"jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
          f"{jax.devices()[0].device_kind}, {platform.processor() or platform.machine()}")
    print(f"{'variant':<11} {'cell':<5} {'hidden':>6} {'batch':>5} {'seq':>4} {'ms/step':>9} {'tokens/s':>10} "
          f"{'time ratio':>10} {'compile s':>9}")
    for r in rows:
        print(f"{r['variant']:<11} {r['cell']:<5} {r['hidden']:>6} {r['batch']:>5} {r['seq']:>4} "
              f"{r['ms_per_step']:>9.3f} {r['tokens_per_s']:>10.0f} {r['vs_first']:>10.2f} {r['first_call_s']:>9.2f}")
    print("time ratio: ms/step relative to the first variant of the same configuration")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"jax": jax.__version__, "flax": flax.__version__, "device": str(jax.devices()[0]), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
