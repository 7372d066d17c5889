"""Data-parallel checks on 4 CPU devices, run by tests/test_parallel.py in a subprocess,
since the device count is fixed when JAX starts:

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.multi_device CORPUS WORKDIR

1. char_lm (stateful truncated BPTT: the carried state is split by stream across devices)
   trained on 4 devices equals the 1-device run with the same global batch: training losses,
   validation losses and final parameters, to float32 tolerance.
2. A run stopped on 4 devices resumes on 1, and one stopped on 1 resumes on 4 (orbax reshards
   the checkpoint into the placement of the restoring run), and both end where the
   uninterrupted run ends.
3. The gradient-flow profiles measured inside the data-parallel step equal the 1-device ones,
   also with gradient_flow's seeds stacked in one vmapped step.
"""

import json
import sys
from pathlib import Path

import jax
import numpy as np
import optax
from flax import nnx

from experiments import char_lm, gradient_flow
from rnn_jax import (
    LoopConfig,
    LoopHooks,
    SequenceModel,
    StepOptions,
    init_train_state,
    make_cell,
    make_train_step,
    train_loop,
)
from rnn_jax.parallel import DataParallel

from .test_char_lm import TINY, final_state
from .test_train_loop import get_batch

TOLERANCE = dict(atol=2e-5, rtol=2e-5)


def close(a, b):
    jax.tree.map(lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOLERANCE), a, b)


def history(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["history"]


def check_char_lm(corpus: str, work: Path) -> None:
    runs = {}
    for devices in (1, 4):
        runs[devices] = work / f"full{devices}"
        char_lm.main([*TINY, "--data", corpus, "--out", str(runs[devices]), "--devices", str(devices)])
    one, four = history(runs[1]), history(runs[4])
    close([r["loss"] for r in four["train"]], [r["loss"] for r in one["train"]])
    close([r["loss"] for r in four["eval"]], [r["loss"] for r in one["eval"]])
    close(final_state(runs[4]).params, final_state(runs[1]).params)
    print("char_lm: 4 devices == 1 device")

    for first, then in ((4, 1), (1, 4)):
        out = work / f"stopped{first}to{then}"
        char_lm.main([*TINY, "--data", corpus, "--out", str(out), "--devices", str(first), "--minutes", "1e-9"])
        assert history(out)["status"] == "stopped"
        char_lm.main(["--resume", str(out), "--devices", str(then)])
        assert history(out)["status"] == "completed"
        close(final_state(out).params, final_state(runs[1]).params)
        print(f"char_lm: stopped on {first} device(s), resumed on {then}: equals the uninterrupted run")


def check_flow() -> None:
    runs = {}
    for devices in (1, 4):
        model = SequenceModel(make_cell("gru"), vocab_size=6, hidden_size=8, output_size=6, rngs=nnx.Rngs(0))
        optimizer = optax.adam(1e-2)
        graphdef, state = init_train_state(model, optimizer, jax.random.key(0))
        runs[devices] = train_loop(
            state,
            train_step=make_train_step(graphdef, optimizer),
            get_batch=get_batch,
            loop=LoopConfig(steps=3, log_every=1, flow_every=1),
            hooks=LoopHooks(
                flow_step=make_train_step(graphdef, optimizer, StepOptions(measure_flow=True)),
                parallel=DataParallel(devices),
            ),
        )
    (state1, history1), (state4, history4) = runs[1], runs[4]
    assert jax.tree.leaves(state4.params)[0].sharding.num_devices == 4
    close(state4.params, state1.params)
    close(history4.flow, history1.flow)
    print("flow profiles: 4 devices == 1 device")


def check_stacked_seeds(work: Path) -> None:
    """gradient_flow's seeds stacked in one vmapped step, the batch axis (behind the seed
    axis) split over 4 devices."""
    flags = [
        "--seq-len",
        "6",
        "--hidden",
        "4",
        "--batch",
        "8",
        "--steps",
        "4",
        "--flow-every",
        "2",
        "--eval-every",
        "2",
        "--eval-batches",
        "1",
        "--cells",
        "lstm",
        "--seeds",
        "2",
    ]
    results = {}
    for devices in (1, 4):
        gradient_flow.main([*flags, "--devices", str(devices), "--out", str(work / f"seeds{devices}")])
        results[devices] = json.loads((work / f"seeds{devices}" / "results.json").read_text())["cells"]["lstm"]
    close(results[4]["grad_norm_by_lag"], results[1]["grad_norm_by_lag"])
    close(results[4]["final_eval_loss"]["per_seed"], results[1]["final_eval_loss"]["per_seed"])
    print("stacked seeds: 4 devices == 1 device")


if __name__ == "__main__":
    assert jax.device_count() == 4, "run with XLA_FLAGS=--xla_force_host_platform_device_count=4"
    check_flow()
    check_stacked_seeds(Path(sys.argv[2]))
    check_char_lm(sys.argv[1], Path(sys.argv[2]))
