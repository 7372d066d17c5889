"""One writer per run folder (`rnn_jax.run_lock`), with real processes: a second writer is
refused with the holder's host and pid; a holder killed with SIGKILL leaves the folder free;
the live holder is read without taking the lock."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from experiments import gradient_flow
from rnn_jax import run_lock

from .conftest import ROOT

# run_lock.py alone (stdlib only), without importing the package and JAX: a process in 50 ms
HOLD = (
    "import sys, time; sys.path.insert(0, 'rnn_jax'); import run_lock; "
    "run_lock.hold(sys.argv[1]); print('held', flush=True); time.sleep(120)"
)


def _holder(folder):
    process = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_writer_is_refused_and_a_killed_holders_folder_is_free(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(ValueError, match=f"host {socket.gethostname()}, pid {holder.pid}, since .*one writer"):
            run_lock.hold(tmp_path / "run")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run_lock.hold(tmp_path / "run")  # the OS released the killed process's lock
    second = subprocess.run([sys.executable, "-c", HOLD, str(tmp_path / "run")], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)  # fmt: skip
    assert second.returncode != 0 and f"pid {os.getpid()}" in second.stderr  # now this process holds it
    run_lock.release_all()
    _holder(tmp_path / "run").kill()  # free again after release_all


def test_the_live_holder_is_read_without_taking_the_lock(tmp_path):
    """What a rerun waits for (`experiments.launch.still_training`): the holder while it runs;
    no one once it is killed (its name stays in the file) or released (the file is emptied)."""
    holder = _holder(tmp_path / "run")
    try:
        assert run_lock.live_holder(tmp_path / "run")["pid"] == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert str(holder.pid) in (tmp_path / "run" / run_lock.LOCK_NAME).read_text()
    assert run_lock.live_holder(tmp_path / "run") is None
    run_lock.hold(tmp_path / "run")
    assert run_lock.live_holder(tmp_path / "run")["pid"] == os.getpid()
    run_lock.release_all()
    assert run_lock.live_holder(tmp_path / "run") is None and run_lock.live_holder(tmp_path / "none") is None


@pytest.mark.slow
def test_resuming_a_folder_that_a_running_process_trains_is_refused(tmp_path):
    out = tmp_path / "run"
    args = ["--quick", "--cells", "gru", "--hidden", "128", "--steps", "100000", "--checkpoint-every", "20"]
    trainer = subprocess.Popen([sys.executable, "-m", "experiments.gradient_flow", *args, "--out", str(out)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out / "checkpoints").is_dir() and time.monotonic() < deadline:
            time.sleep(0.5)
        with pytest.raises(SystemExit, match=f"being written by another process \\(host .*, pid {trainer.pid}, since"):
            gradient_flow.main(["--resume", str(out)])
    finally:
        trainer.kill()
        trainer.wait()
