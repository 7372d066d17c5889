"""Data parallel over 4 CPU devices equals 1 device (tests/multi_device.py, in a subprocess
because the device count is fixed when JAX starts), and the placement errors."""

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from rnn_jax.data import text
from rnn_jax.parallel import DataParallel

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_four_devices_equal_one_and_checkpoints_move_between_them(tmp_path):
    corpus = tmp_path / "input.txt"
    corpus.write_text(text.builtin_corpus(4000, seed=1))
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        [sys.executable, "-m", "tests.multi_device", str(corpus), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in (
        "flow profiles: 4 devices == 1 device",
        "stacked seeds: 4 devices == 1 device",
        "char_lm: 4 devices == 1 device",
        "stopped on 4 device(s), resumed on 1",
        "stopped on 1 device(s), resumed on 4",
    ):
        assert line in result.stdout, result.stdout


def test_placement_errors():
    with pytest.raises(ValueError, match=f"--devices {jax.device_count() + 1}: this run sees {jax.device_count()}"):
        DataParallel(jax.device_count() + 1)
    single = DataParallel(1)
    batch = {"inputs": jax.numpy.zeros((3, 5))}
    assert single.place_batch(batch) is batch and single.replicate(batch) is batch  # one device: nothing moves


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    """Two processes on loopback (jax.distributed, CPU devices, gloo collectives), each reading
    its half of every batch, train exactly what one process trains with the same global batch."""
    import socket

    from experiments import char_lm

    from .test_char_lm import TINY, final_state

    corpus = tmp_path / "input.txt"
    corpus.write_text(text.builtin_corpus(4000, seed=1))
    flags = [*TINY, "--data", str(corpus)]
    char_lm.main([*flags, "--out", str(tmp_path / "one")])
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "experiments.char_lm",
                *flags,
                "--out",
                str(tmp_path / "two"),
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(i),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], "\n".join(outputs)
    two, one = final_state(tmp_path / "two"), final_state(tmp_path / "one")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=2e-5, rtol=2e-5), two.params, one.params)
