"""A damaged checkpoint is never fatal while an intact one exists (issue 29): a 60-step run
with checkpoints at 20, 40 and 60, its newest checkpoint damaged four ways, resumed in a fresh
process as a user would (`--resume`). Each resumes from step 40, reproduces the undamaged run's
losses and profiles exactly, and tells the user in one line, with no traceback; with every
checkpoint damaged, one clear error that lists what was tried."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ["--cells", "gru", "--steps", "60", "--checkpoint-every", "20", "--eval-every", "20"]
RUN += ["--seq-len", "20", "--hidden", "16", "--flow-every", "20", "--spectrum", "4"]

pytestmark = pytest.mark.slow


def gradient_flow(*arguments) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "experiments.gradient_flow", *arguments],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("damage") / "run"
    done = gradient_flow(*RUN, "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def overwrite_array_data(step: Path) -> None:
    for path in (step / "state").rglob("d/*"):
        path.write_bytes(os.urandom(path.stat().st_size))


def empty_metadata(step: Path) -> None:
    (step / "_CHECKPOINT_METADATA").write_text("")


def delete_half(step: Path) -> None:  # the arrays' store gone, the rest of the folder there
    shutil.rmtree(next((step / "state").glob("ocdbt.process_*")))


def remove_json(step: Path) -> None:
    shutil.rmtree(step / "extra")


@pytest.mark.parametrize("damage", [overwrite_array_data, empty_metadata, delete_half, remove_json])
def test_a_damaged_newest_checkpoint_falls_back_to_the_one_before(finished_run, tmp_path, damage):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    damage(run / "checkpoints" / "gru" / "last" / "60")
    done = gradient_flow("--resume", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [line for line in done.stderr.replace("\r", "\n").splitlines() if line.strip() and "it/s" not in line]
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "checkpoint step 60" in warnings[0] and "last is damaged (" in warnings[0]
    assert any("resuming at step 40" in line for line in lines)
    assert "Traceback" not in done.stderr and "TensorStore" not in done.stderr and "ERROR:absl" not in done.stderr
    original = json.loads((finished_run / "results.json").read_text())["cells"]["gru"]["seeds"]["0"]
    resumed = json.loads((run / "results.json").read_text())["cells"]["gru"]["seeds"]["0"]
    assert resumed["train"] == original["train"] and resumed["eval"] == original["eval"]  # bit-exact
    assert resumed["flow"] == original["flow"]
    assert list((run / "checkpoints" / "gru" / "damaged").iterdir())  # kept, out of the way
    assert (run / "checkpoints" / "gru" / "last" / "60").is_dir()  # written anew
    assert "Traceback" in (run / "logs" / "gru" / "checkpoint_errors.log").read_text()  # the full cause


def test_every_checkpoint_damaged_is_one_clear_error(finished_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    steps = [*(run / "checkpoints" / "gru" / "last").iterdir(), *(run / "checkpoints" / "gru" / "best").iterdir()]
    for step in steps:
        empty_metadata(step)
    done = gradient_flow("--resume", str(run))
    assert done.returncode == 1
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no intact checkpoint" in errors[0]
    assert "last/60" in errors[0] and "last/40" in errors[0] and "best/60" in errors[0]
    assert "Traceback" not in done.stderr
    assert not (run / "checkpoints" / "gru" / "damaged").exists()  # nothing moved when nothing is intact
