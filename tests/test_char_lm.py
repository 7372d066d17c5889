"""experiments.char_lm and experiments.sample end to end on tiny settings: outputs, exact
resume after a stop, the Hugging Face path fed a local dataset, sampling and its errors."""

import json
from pathlib import Path

import datasets
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from experiments import char_lm, sample
from rnn_jax import SequenceModel, StackOptions, make_cell
from rnn_jax.checkpoints import Checkpoints
from rnn_jax.config import config_from_json
from rnn_jax.data import text
from rnn_jax.decode import next_token
from rnn_jax.decode import sample as sample_tokens
from rnn_jax.train import init_train_state

from .conftest import assert_tree_close, usage_error

TINY = [
    "--hidden",
    "8",
    "--layers",
    "2",
    "--batch",
    "4",
    "--bptt",
    "8",
    "--steps",
    "6",
    "--warmup",
    "2",
    "--eval-every",
    "3",
    "--checkpoint-every",
    "3",
    "--sample-length",
    "20",
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "input.txt"
    path.write_text(text.builtin_corpus(4000, seed=1))
    return path


@pytest.fixture(scope="module")
def finished(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("clm") / "full"
    char_lm.main([*TINY, "--data", str(corpus), "--out", str(out)])
    return out


def final_state(out):
    """The last checkpoint's TrainState of a char_lm run, restored on the default device."""
    cfg = config_from_json(char_lm.Config, json.loads((out / "config.json").read_text()))
    model = char_lm.build_model(cfg, {"vocab": json.loads((out / "results.json").read_text())["vocab"]})
    stateful_batch = cfg.batch if cfg.tbptt == "stateful" else None
    _, like = init_train_state(model, cfg.make_training()[0], jax.random.key(0), stateful_batch=stateful_batch)
    checkpoints = Checkpoints(out / "checkpoints")
    state, _ = checkpoints.restore(like)
    checkpoints.close()
    return state


def train_records(out):
    return [(r["step"], r["loss"]) for r in json.loads((out / "results.json").read_text())["history"]["train"]]


@pytest.mark.slow
def test_outputs(finished):
    results = json.loads((finished / "results.json").read_text())
    assert results["status"] == "completed" and results["steps"] == 6
    metrics = results["metrics"]
    assert metrics["val_loss_bits"] == pytest.approx(metrics["val_loss_nats"] / np.log(2))
    assert [r["step"] for r in results["history"]["eval"]] == [3, 6]
    assert metrics["tokens_per_s"] > 0 and results["environment"]["jax"] == jax.__version__
    assert (finished / "samples.txt").read_text().startswith("\n")
    assert (finished / "loss_curves.png").stat().st_size > 5_000
    assert (finished / "logs" / "metrics.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stateful", "random"])
def test_stopped_and_resumed_run_equals_uninterrupted(corpus, tmp_path, mode, finished):
    if mode == "stateful":
        reference = finished
    else:
        reference = tmp_path / "full"
        char_lm.main([*TINY, "--tbptt", mode, "--data", str(corpus), "--out", str(reference)])
    out = tmp_path / "stopped"
    char_lm.main(
        [*TINY, "--tbptt", mode, "--data", str(corpus), "--out", str(out), "--minutes", "1e-9"]
    )  # stops after step 1
    assert json.loads((out / "results.json").read_text())["steps"] == 1
    char_lm.main(["--resume", str(out)])
    assert_tree_close(final_state(out), final_state(reference), atol=0, rtol=0)
    assert train_records(out) == train_records(reference)


@pytest.mark.slow
def test_resume_of_a_finished_run_says_so(finished, capsys):
    before = json.loads((finished / "results.json").read_text())
    char_lm.main(["--resume", str(finished)])
    assert "finished: nothing left to train at step 6" in capsys.readouterr().err
    after = json.loads((finished / "results.json").read_text())
    assert (
        after["history"] == before["history"]
        and after["metrics"]["val_loss_nats"] == before["metrics"]["val_loss_nats"]
    )
    char_lm.main(["--checkpoint", str(finished), "--input", "alice"])  # a prediction: the text continued
    assert capsys.readouterr().out.startswith("alice")


@pytest.mark.slow
def test_bfloat16_run(corpus, tmp_path, finished):
    out = tmp_path / "bf16"
    char_lm.main([*TINY, "--data", str(corpus), "--out", str(out), "--dtype", "bfloat16"])
    results, full = (json.loads((d / "results.json").read_text()) for d in (out, finished))
    assert results["config"]["dtype"] == "bfloat16" and results["status"] == "completed"
    assert results["metrics"]["val_loss_nats"] == pytest.approx(
        full["metrics"]["val_loss_nats"], rel=1e-2
    )  # the float32 run's
    state = final_state(out)  # parameters and optimizer state stay float32
    floats = {
        leaf.dtype
        for leaf in jax.tree.leaves((state.params, state.opt_state))
        if jnp.issubdtype(leaf.dtype, jnp.floating)
    }
    assert floats == {jnp.dtype("float32")}


@pytest.mark.slow
def test_hf_dataset_path_with_a_local_dataset(tmp_path):
    lines = text.builtin_corpus(3000, seed=2).splitlines()
    datasets.Dataset.from_dict({"content": lines}).save_to_disk(str(tmp_path / "hf"))
    char_lm.main(
        [*TINY, "--hf-dataset", str(tmp_path / "hf"), "--text-column", "content", "--out", str(tmp_path / "run")]
    )
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--bptt", "0"], "--bptt must be >= 1"),
        (["--hidden", "-3"], "--hidden must be >= 1"),
        (["--cell", "lstmm"], "unknown cell 'lstmm'"),
        (["--tbptt", "sliding"], "unknown --tbptt 'sliding'"),
        (["--schedule", "cosine", "--warmup", "10", "--steps", "5"], "--warmup 10 must be below --steps 5"),
        (["--devices", "0"], "--devices must be >= 1"),
        (["--dtype", "float16"], "unknown --dtype 'float16'"),
        (["--on-nan", "ignore"], "unknown --on-nan 'ignore'; choose one of: stop, skip"),
        (["--coordinator", "localhost:1234"], "needs --num-processes N and --process-id I"),
        (
            ["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
            "--process-id must be in 0..1",
        ),
        (["--process-id", "1"], "go with --coordinator"),
    ],
)
def test_bad_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        char_lm.main(flags)
    assert exit_info.value.code == 2 and message in usage_error(capsys)


def test_corpus_shorter_than_a_window(tmp_path):
    (tmp_path / "short.txt").write_text("tiny text")
    with pytest.raises(SystemExit, match="error: .*too few for 4 streams"):
        char_lm.main([*TINY, "--data", str(tmp_path / "short.txt"), "--out", str(tmp_path / "run")])


@pytest.mark.slow
def test_sample_cli(finished, capsys):
    sample.main(
        ["--checkpoint", str(finished), "--prime", "alice", "--length", "30", "--temperature", "0.7", "--top-k", "3"]
    )
    out = capsys.readouterr().out
    assert out.startswith("alice") and len(out.rstrip("\n")) >= 35
    sample.main(["--checkpoint", str(finished), "--prime", "bob", "--length", "10", "--argmax", "--last"])
    first = capsys.readouterr().out
    sample.main(
        ["--checkpoint", str(finished), "--prime", "bob", "--length", "10", "--argmax", "--last", "--seed", "7"]
    )
    assert capsys.readouterr().out == first  # greedy ignores the seed
    with pytest.raises(SystemExit, match=r"never saw: \['Q', 'Z'\]"):
        sample.main(["--checkpoint", str(finished), "--prime", "QZa"])
    with pytest.raises(SystemExit, match="not a run directory"):
        sample.main(["--checkpoint", str(finished / "logs")])


@pytest.mark.slow
def test_sampling_matches_a_step_by_step_loop():
    model = SequenceModel(
        make_cell("gru"), vocab_size=7, hidden_size=6, output_size=7, stack=StackOptions(num_layers=2), rngs=nnx.Rngs(0)
    )
    graphdef, params = nnx.split(model, nnx.Param)
    prime = jnp.array([[1, 2, 3]])
    greedy = np.asarray(sample_tokens(graphdef, params, prime, jax.random.key(0), length=8, argmax=True))[0]
    tokens = list(np.asarray(prime[0]))
    for _ in range(8):
        logits, _ = model(jnp.asarray(tokens)[None])
        tokens.append(int(jnp.argmax(logits[0, -1])))
    assert greedy.tolist() == tokens[3:]
    top1 = np.asarray(sample_tokens(graphdef, params, prime, jax.random.key(3), length=8, top_k=1))[0]
    assert top1.tolist() == greedy.tolist()
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    draws = jax.vmap(lambda k: next_token(k, logits, top_k=2))(jax.random.split(jax.random.key(1), 400))
    assert set(np.unique(draws).tolist()) == {0, 1}


@pytest.mark.slow
def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(corpus, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "interrupted"
    flags = [*TINY, "--steps", "100000", "--eval-every", "100000", "--checkpoint-every", "100000", "--warmup", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments.char_lm", *flags, "--data", str(corpus), "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    deadline = time.time() + 120
    while not (out / "logs" / "metrics.jsonl").exists() or not (out / "logs" / "metrics.jsonl").read_text():
        assert process.poll() is None and time.time() < deadline, process.communicate()[0]
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 0, output
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "interrupted" and "interrupted at step" in output
    step = Checkpoints(out / "checkpoints").latest_step()
    assert step is not None and step > 0


def _saved_steps(out):
    last = out / "checkpoints" / "last"
    return sorted(int(p.name) for p in last.iterdir() if p.name.isdigit()) if last.is_dir() else []


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_equals_uninterrupted(corpus, tmp_path):
    """SIGKILL (no handler runs) at random moments, including during checkpoint saves; each
    resume starts from the last complete checkpoint, and the final parameters and training
    records equal those of a run that was never interrupted, exactly."""
    import signal
    import subprocess
    import sys
    import time

    flags = [*TINY, "--steps", "120", "--eval-every", "60", "--checkpoint-every", "2", "--data", str(corpus)]
    reference = tmp_path / "reference"
    char_lm.main([*flags, "--out", str(reference)])
    out = tmp_path / "killed"
    rng = np.random.default_rng(0)
    command = [sys.executable, "-m", "experiments.char_lm"]
    for attempt in range(3):
        args = [*flags, "--out", str(out)] if attempt == 0 else ["--resume", str(out)]
        process = subprocess.Popen(
            [*command, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
        )
        if attempt == 2:  # the last one runs to the end
            assert process.wait(timeout=300) == 0, process.stderr.read()
            break
        before = max(_saved_steps(out), default=0)
        deadline = time.time() + 120
        while max(_saved_steps(out), default=0) <= before + 10:  # a few new checkpoints, then a random moment
            assert process.poll() is None and time.time() < deadline, process.stderr.read()
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert process.returncode == -signal.SIGKILL
        assert not (out / "results.json").exists()
    assert_tree_close(final_state(out), final_state(reference), atol=0, rtol=0)
    assert train_records(out) == train_records(reference)


@pytest.mark.slow
def test_a_half_written_checkpoint_is_ignored_with_a_warning(finished, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(finished, out)
    latest = Checkpoints(out / "checkpoints").latest_step()
    half = out / "checkpoints" / "last" / f"{latest + 3}.orbax-checkpoint-tmp-1234"
    half.mkdir()
    (half / "partial").write_text("x")
    with pytest.warns(UserWarning, match="ignoring and removing half-written checkpoint"):
        checkpoints = Checkpoints(out / "checkpoints")
    assert checkpoints.latest_step() == latest and not half.exists()
    checkpoints.close()
    assert_tree_close(final_state(out), final_state(finished), atol=0, rtol=0)


@pytest.fixture(scope="module")
def stopped(corpus, tmp_path_factory):
    """A run stopped by its time budget after step 1, resumable."""
    out = tmp_path_factory.mktemp("clm") / "stopped"
    char_lm.main([*TINY, "--data", str(corpus), "--out", str(out), "--minutes", "1e-9"])
    return out


def _copy(run, tmp_path):
    import shutil

    return Path(shutil.copytree(run, tmp_path / "copy"))


@pytest.mark.parametrize(
    "content, message",
    [(None, "error: no text file matches"), (b"", "is empty"), (b"caf\xe9 \xff\xfe bytes", "is not UTF-8 text")],
    ids=["missing", "empty", "undecodable"],
)
def test_bad_corpus_is_a_message_not_a_traceback(tmp_path, content, message):
    path = tmp_path / "corpus.txt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        char_lm.main([*TINY, "--data", str(path), "--out", str(tmp_path / "run")])


@pytest.mark.slow
def test_resume_without_checkpoints(stopped, tmp_path):
    import shutil

    run = _copy(stopped, tmp_path)
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(SystemExit, match="error: no checkpoint in .*nothing to restore or resume from"):
        char_lm.main(["--resume", str(run)])
    with pytest.raises(SystemExit, match="no config.json there"):
        char_lm.main(["--resume", str(tmp_path / "nowhere")])


@pytest.mark.slow
def test_resume_from_a_corrupt_checkpoint(stopped, tmp_path):
    """Both of the run's checkpoints (last/1, best/1) overwritten: one error naming both (one
    damaged beside an intact one is resumed from: tests/test_checkpoint_damage.py)."""
    run = _copy(stopped, tmp_path)
    for kind in ("last", "best"):
        for file in (run / "checkpoints" / kind / "1" / "state").rglob("*"):
            if file.is_file():
                file.write_bytes(b"\0garbage")
    with pytest.raises(SystemExit, match="error: no intact checkpoint .* last/1: .* best/1: .* damaged, or were"):
        char_lm.main(["--resume", str(run)])


@pytest.mark.slow
def test_resume_with_a_checkpoint_of_another_cell(stopped, tmp_path):
    run = _copy(stopped, tmp_path)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "cell": "gru"}))
    with pytest.raises(SystemExit, match="different model configuration"):
        char_lm.main(["--resume", str(run)])


@pytest.mark.slow
def test_resume_with_other_data(stopped, tmp_path):
    run = _copy(stopped, tmp_path)
    (tmp_path / "other.txt").write_text("QXZ" + text.builtin_corpus(4000, seed=9))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": str(tmp_path / "other.txt")}))
    with pytest.raises(SystemExit, match="the data gives a different vocab than the checkpoint's"):
        char_lm.main(["--resume", str(run)])


@pytest.mark.parametrize("mode", ["stateful", "random"])
def test_the_validation_text_is_read_with_the_state_carried_in_both_modes(corpus, mode):
    """The data is the registered `charlm` task: --tbptt stateful trains on parallel streams
    with the state carried, random on windows from a zero state; both evaluate the whole
    validation text window by window with the state carried (one per-character loss)."""
    import jax.numpy as jnp

    from rnn_jax.data import text

    cfg = char_lm.Config.create(data=str(corpus), batch=4, bptt=8, tbptt=mode)
    data, task = char_lm.data(cfg)
    assert (data.stateful, data.eval_carried) == (mode == "stateful", True)
    batches = list(data.eval_batches)
    train_text, val_text = text.split_text(corpus.read_text())
    streams, windows = text.stream_layout(jnp.asarray(text.CharVocab(task.vocab).encode(val_text)), 4, 8)
    assert len(batches) == windows
    for k in (0, windows - 1):  # window k of every stream, in order
        np.testing.assert_array_equal(batches[k]["inputs"], text.stream_window(streams, k, 8)["inputs"])
