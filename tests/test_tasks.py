"""The registry of tasks (`rnn_jax.tasks`): the built-in tasks' batches and held-out data, the
real-data ones against the corpora read independently, and the errors a user meets."""

import types

import jax
import numpy as np
import pytest

from rnn_jax import Task, batches, make_task, register_task
from rnn_jax.data import corpora, loaders
from rnn_jax.losses import final_step_mse
from rnn_jax.tasks import TASKS, label_entropy, random_rows

from .conftest import needs_data

MQAR_DEFAULTS = {"mqar_pairs": 4, "mqar_vocab": 64, "mqar_power_a": 1.0, "mqar_noise": False}


def options(**values):
    return types.SimpleNamespace(
        **{"batch": 4, "seq_len": 12, "seed": 0, "data": None, "tokens": 3, **MQAR_DEFAULTS, **values}
    )


@pytest.mark.parametrize("name", ["adding", "copy", "bit_copy", "selective_copy", "charlm"])
def test_a_built_in_task_gives_batches_its_model_reads(name):
    task = make_task(name, options())
    batch = task.batch(jax.random.key(0), *task.data)
    assert len(batch["inputs"]) == 4
    if "vocab_size" in task.model_io:
        assert int(batch["inputs"].max()) < task.model_io["vocab_size"]
    else:
        assert batch["inputs"].shape[-1] == task.model_io["input_size"]
    assert task.baseline > 0 and task.metric
    again = task.batch(jax.random.key(0), *task.data)  # a pure function of the key
    assert all(np.array_equal(batch[k], again[k]) for k in batch)


def test_charlm_holds_out_the_end_of_the_text_and_decodes_it():
    task = make_task("charlm", options())
    (held_out,) = task.eval_data
    assert len(held_out) < len(task.data[0]) / 8  # the last 10%
    assert task.decode(task.data[0][:20]) == "".join(task.vocab[int(i)] for i in task.data[0][:20])


def test_rows_are_drawn_uniformly_with_replacement():
    arrays = {"x": np.arange(10), "y": np.arange(10) * 2}
    rows = random_rows(jax.random.key(0), arrays, batch=20_000)
    assert np.array_equal(rows["y"], rows["x"] * 2)
    assert np.abs(np.bincount(np.asarray(rows["x"]), minlength=10) / 20_000 - 0.1).max() < 0.01


def test_label_entropy_is_the_score_of_predicting_the_frequencies():
    np.testing.assert_allclose(label_entropy([1, 1]), np.log(2))
    np.testing.assert_allclose(label_entropy([3, 1, 0]), -(0.75 * np.log(0.75) + 0.25 * np.log(0.25)))


@needs_data
def test_sentiment_is_the_corpus_left_padded_with_its_held_out_split():
    task = make_task("sentiment", options(seq_len=20))
    splits = corpora.read("rt_sentence_polarity", lambda s: loaders.load_sentiment(s.location, seed=0))
    (train,), (validation,) = task.data, task.eval_data
    assert len(train["targets"]) == len(splits["train"][1]) and len(validation["targets"]) == len(
        splits["validation"][1]
    )
    np.testing.assert_array_equal(validation["targets"], splits["validation"][1])
    tokens = splits["train"][0][0][-20:]  # the last 20 words of the first text, at the last steps
    ids = np.asarray(train["inputs"][0])[np.asarray(train["mask"][0])]
    assert [task.vocab[i] if task.vocab[i] != "<unk>" else w for i, w in zip(ids, tokens)] == tokens
    assert bool(train["mask"][:, -1].all())  # every text ends at the last step: the final readout reads it
    np.testing.assert_allclose(task.baseline, label_entropy(np.bincount(splits["train"][1])))
    assert task.model_io["readout"] == "final" and task.info["examples"]["test"] == len(splits["test"][1])


@needs_data
def test_tagging_is_the_treebank_right_padded_with_its_held_out_split():
    task = make_task("tagging", options(seq_len=30))
    splits = corpora.read("ud_english_ewt", lambda s: loaders.load_treebank(s.location))
    (train,), (validation,) = task.data, task.eval_data
    assert len(validation["inputs"]) == len(splits["validation"])
    words, tags = splits["train"][0]
    n = min(len(words), 30)
    assert int(train["mask"][0].sum()) == n
    assert [task.info["tags"][t] for t in np.asarray(train["targets"][0][:n])] == tags[:n]
    batch = task.batch.draw(jax.random.key(1), 0, *task.data)
    assert batch["inputs"].shape == (4, 30) and batch["mask"].dtype == bool
    assert len(task.eval_data[0]["inputs"][0]) == max(len(w) for w, _ in splits["validation"])  # every word scored


def test_rows_tasks_train_in_epochs_each_row_once_per_epoch():
    """`epoch_rows`: 10 rows in batches of 3 make epochs of 3 batches (the tenth row of each
    epoch's permutation is left out), each row at most once per epoch, a fresh order every
    epoch, each batch a function of (key, step) only, and the same in a stacked seed stream."""
    from rnn_jax.tasks import epoch_rows, rows_task

    rows = {"x": np.arange(10)}
    key = jax.random.key(0)
    epochs = [
        np.concatenate([np.asarray(epoch_rows(key, e * 3 + i, rows, 3)["x"]) for i in range(3)]) for e in range(2)
    ]
    assert all(len(set(e.tolist())) == 9 for e in epochs) and not np.array_equal(epochs[0], epochs[1])
    np.testing.assert_array_equal(epoch_rows(key, 4, rows, 3)["x"], epochs[1][3:6])
    task = rows_task(
        {"train": rows, "validation": rows}, 3, "ten rows", loss_fn=None, model_io={}, metric="", baseline=0
    )
    stacked = task.training_batch(jax.random.key(0)[None], 4)
    np.testing.assert_array_equal(stacked["x"][0], epochs[1][3:6])
    with pytest.raises(ValueError, match="fewer than one batch of 12; lower --batch"):
        rows_task({"train": rows, "validation": rows}, 12, "ten rows", loss_fn=None, model_io={}, metric="", baseline=0)


def test_a_task_is_registered_by_name_and_checked():
    @register_task("test_constant")
    def constant(cfg) -> Task:
        return Task(
            batch=batches(lambda key, batch: {"inputs": np.zeros((batch, 3, 1)), "targets": np.zeros(batch)}, batch=2),
            loss_fn=final_step_mse,
            model_io=dict(input_size=1, output_size=1),
            metric="MSE",
            baseline=0.0,
        )

    try:
        assert make_task("test_constant", options()).model_io["input_size"] == 1
        with pytest.raises(ValueError, match="unknown task 'parityy'.*test_constant"):
            make_task("parityy", options())
        register_task("test_not_a_task")(lambda cfg: {"batch": None})
        with pytest.raises(ValueError, match="returned a dict, not an rnn_jax.Task"):
            make_task("test_not_a_task", options())
    finally:
        TASKS.pop("test_constant"), TASKS.pop("test_not_a_task", None)


def test_an_unknown_task_is_a_usage_error_naming_the_choices(capsys):
    from experiments import gradient_flow

    with pytest.raises(SystemExit):
        gradient_flow.main(["--task", "parityy", "--steps", "0"])
    err = capsys.readouterr().err
    assert "unknown task 'parityy'" in err and "sentiment" in err and "Traceback" not in err


def write_idx(path, array):
    """An IDX file as LeCun's MNIST ships them (magic 0x00000800 + ndim, big-endian sizes, bytes)."""
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_reads_idx_files_and_a_csv(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    for split in ("train", "t10k"):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte", labels)
    loaded = loaders.load_mnist(str(tmp_path))
    assert set(loaded) == {"train", "test"}
    np.testing.assert_array_equal(loaded["train"][0], images.reshape(7, 784))
    np.testing.assert_array_equal(loaded["test"][1], labels)
    rows = np.concatenate([images.reshape(7, 784), labels[:, None]], axis=1)
    np.savetxt(tmp_path / "digits.csv", rows, fmt="%d", delimiter=",")
    ((x, y),) = loaders.load_mnist(str(tmp_path / "digits.csv")).values()
    np.testing.assert_array_equal(x, images.reshape(7, 784)) and np.testing.assert_array_equal(y, labels)
    with pytest.raises(ValueError, match="784 pixel values and the label"):
        np.savetxt(tmp_path / "bad.csv", rows[:, :100], fmt="%d", delimiter=",")
        loaders.load_mnist(str(tmp_path / "bad.csv"))


@needs_data
def test_sequential_mnist_holds_out_fixed_test_and_validation_digits():
    """1,000 test digits and 500 validation digits (of the 4,000 others) fixed whatever the seed,
    disjoint from the 3,500 left for training; rows and pixels are the same digits."""
    tasks = {
        name: make_task(name, options(seed=seed, batch=8)) for name, seed in [("mnist_rows", 0), ("mnist_pixels", 1)]
    }
    (test_rows,), (test_pixels,) = tasks["mnist_rows"].test_data, tasks["mnist_pixels"].test_data
    assert test_rows["inputs"].shape == (1000, 28, 28) and test_pixels["inputs"].shape == (1000, 784, 1)
    np.testing.assert_array_equal(test_rows["targets"], test_pixels["targets"])  # the same digits, whatever the seed
    np.testing.assert_array_equal(
        np.asarray(test_rows["inputs"]).reshape(1000, 784), np.asarray(test_pixels["inputs"])[..., 0]
    )
    (train,), (validation,) = tasks["mnist_pixels"].data, tasks["mnist_pixels"].eval_data
    assert len(train["targets"]) == 3500 and len(validation["targets"]) == 500
    np.testing.assert_array_equal(validation["inputs"], tasks["mnist_rows"].eval_data[0]["inputs"].reshape(500, 784, 1))
    digits = lambda a: {np.asarray(row).tobytes() for row in np.asarray(a["inputs"]).reshape(len(a["inputs"]), 784)}  # noqa: E731
    assert not digits(train) & digits(validation) and not digits(validation) & digits(test_pixels)
    assert not digits(train) & digits(test_pixels) and tasks["mnist_rows"].eval_in_order
    assert np.bincount(np.asarray(test_rows["targets"]), minlength=10).min() > 60  # every class held out
    assert np.bincount(np.asarray(validation["targets"]), minlength=10).min() > 30


@needs_data
def test_permuted_mnist_gives_each_seed_its_own_order_in_training_validation_and_test():
    """--seed 3 --seeds 2: seeds 3 and 4 each see the digits in default_rng(seed)'s order, in
    every training batch, every validation and every test chunk, and results record both;
    a one-seed run of seed 4 sees the same order as seed 4 of the pair."""
    from rnn_jax.tasks import held_out_batches, test_batches

    task = make_task("mnist_permuted", options(seed=3, seeds=2, batch=8))
    order = {s: np.random.default_rng(s).permutation(784) for s in (3, 4)}
    assert task.info["permutations"] == {str(s): p.tolist() for s, p in order.items()}
    (train,), (validation,), (test,) = task.data, task.eval_data, task.test_data
    keys = jax.random.split(jax.random.key(0), 2)
    drawn = task.training_batch(keys, 5)
    for i, seed in enumerate((3, 4)):
        plain = task.batch(jax.random.fold_in(keys[i], 5), train)
        np.testing.assert_array_equal(drawn["inputs"][i], np.asarray(plain["inputs"])[:, order[seed]])
        np.testing.assert_array_equal(drawn["targets"][i], plain["targets"])
    first_validation = held_out_batches(task, keys, batch=8, draws=1)[0]
    first_test = test_batches(task, seeds=2, batch=8)[0]
    for i, seed in enumerate((3, 4)):
        np.testing.assert_array_equal(first_validation["inputs"][i], np.asarray(validation["inputs"])[:8, order[seed]])
        np.testing.assert_array_equal(first_test["inputs"][i], np.asarray(test["inputs"])[:8, order[seed]])
    alone = make_task("mnist_permuted", options(seed=4, batch=8))
    assert alone.info["permutations"] == {"4": order[4].tolist()}
    with pytest.raises(ValueError, match="built for 2 seed"):
        held_out_batches(task, keys[:1], batch=8, draws=1)


def test_mqar_asks_every_key_once_after_its_pairs():
    """Zoology's layout: D distinct keys (1..V/2-1) and D distinct values (V/2..V-1) in the
    context; key j asked at step 2D + 2 g_j, each key once; the target there its value; only
    queries scored; blanks elsewhere (or random tokens with noise). Baselines exact."""
    task = make_task("mqar", options(batch=64, seq_len=32))
    batch = {k: np.asarray(v) for k, v in task.batch(jax.random.key(3)).items()}
    repeated_values = 0
    for tokens, targets, weights in zip(batch["inputs"], batch["targets"], batch["weights"]):
        pairs = dict(zip(tokens[0:8:2], tokens[1:8:2]))
        assert len(pairs) == 4 and all(1 <= k <= 31 and 32 <= v <= 63 for k, v in pairs.items())
        repeated_values += len(set(pairs.values())) < 4
        asked = np.flatnonzero(weights)
        assert asked.min() >= 8 and np.all((asked - 8) % 2 == 0) and sorted(tokens[asked]) == sorted(pairs)
        assert [targets[t] for t in asked] == [pairs[tokens[t]] for t in asked]
        assert np.all(tokens[8:][weights[8:] == 0] == 0)  # blanks between the queries
    assert repeated_values == 0  # values without replacement, as Zoology draws them
    assert task.baseline == pytest.approx(np.log(32)) and task.model_io["vocab_size"] == 64
    assert task.info["baselines"]["values_without_binding"] == {"nats": pytest.approx(np.log(4)), "accuracy": 0.25}
    noisy = make_task("mqar", options(batch=64, seq_len=32, mqar_noise=True, mqar_vocab=256, mqar_pairs=2))
    batch = {k: np.asarray(v) for k, v in noisy.batch(jax.random.key(3)).items()}
    filler = batch["inputs"][:, 4:][batch["weights"][:, 4:] == 0]
    assert 0 <= filler.min() and filler.max() < 256 and len(np.unique(filler)) > 200  # uniform over the vocabulary
    with pytest.raises(ValueError, match="MQAR needs"):
        make_task("mqar", options(seq_len=12, mqar_pairs=4))  # 4 pairs need T >= 16


def test_mqar_query_gaps_follow_zoologys_power_law():
    """The gaps' distribution against Zoology's own draw written in NumPy (np.random.choice of D
    gaps without replacement, p proportional to i^(a-1), i = 1..space): each key's gap has the
    same distribution (two samples of 4,000 rows, not told apart by a chi-square test)."""
    from scipy import stats

    from rnn_jax.data.synthetic import mqar_batch

    rows, length, pairs, a = 4000, 64, 4, 0.01
    space = (length - 2 * pairs) // 2
    p = a * np.arange(1, space + 1) ** (a - 1)
    p = p / p.sum()
    rng = np.random.default_rng(0)
    theirs = np.stack([rng.choice(space, size=pairs, replace=False, p=p) for _ in range(rows)])
    batch = mqar_batch(jax.random.key(0), rows, length, pairs=pairs, power_a=a)
    tokens, weights = np.asarray(batch["inputs"]), np.asarray(batch["weights"])
    ours = np.zeros((rows, pairs), int)
    for r in range(rows):
        position = {k: t for t, k in enumerate(tokens[r]) if weights[r, t]}  # key -> the step asking it
        ours[r] = [(position[k] - 2 * pairs) // 2 for k in tokens[r, 0 : 2 * pairs : 2]]
    for j in range(pairs):  # a chi-square test of the two samples of gap j (a uniform draw gives p ~ 1e-300)
        counts = np.stack([np.bincount(g[:, j], minlength=space) for g in (ours, theirs)])
        assert stats.chi2_contingency(counts).pvalue > 1e-3, j
    assert np.mean(ours[:, 0]) < space / 4  # short gaps favoured


@needs_data
def test_forecast_windows_the_series_changes_and_holds_out_its_validation_points():
    """The airline series (log levels, season 12, 24 validation points): training windows score
    every step, validation windows their last (each validation point once, in order); targets
    are the standardised next changes, read against NumPy on the raw CSV; the baseline is the
    persistence forecast's MSE."""
    import os

    task = make_task("forecast", options(seq_len=12))
    values = np.log(
        loaders.load_series(
            os.path.join(os.environ["RNN_JAX_DATA"], "timeseries", "airline_passengers.csv"), "Passengers"
        )
    )
    (train,), (held,) = task.data, task.eval_data
    scale = task.info["scale"]
    assert scale == pytest.approx(np.std(np.diff(values[: len(values) - 48])))
    train_end = len(values) - 48
    assert len(held["inputs"]) == 24 and np.asarray(held["weights"])[:, :-1].sum() == 0
    # validation window i ends at input train_end - 1 + i; its target is the change to the next point
    expected = (values[train_end : train_end + 24] - values[train_end - 1 : train_end + 23]) / scale
    np.testing.assert_allclose(np.asarray(held["targets"])[:, -1], expected, rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(held["inputs"])[:, -1, 0], np.diff(values)[train_end - 2 : train_end + 22] / scale, rtol=1e-5
    )
    assert np.asarray(train["weights"]).all() and task.model_io == {"input_size": 3, "output_size": 1}
    assert task.baseline == pytest.approx(np.mean(expected**2), rel=1e-5)
    with pytest.raises(ValueError, match="'dow_jones' is not a built-in series"):
        make_task("forecast", options(data="dow_jones"))


def test_the_add_task_labels_follow_its_definition_and_its_floors():
    """Marschall et al.'s Add task: P(label 1) = 1/2 + x(t - t1)/2 - x(t - t2)/4, measured on
    200k scored steps for each of the four cases (within 4 standard errors); steps before t2 are
    not scored; the floors are the conditional entropies 0.662 / 0.519 / 0.454 nats."""
    task = make_task("add", options(seq_len=40, batch=5000))
    batch = {k: np.asarray(v) for k, v in task.batch(jax.random.key(0), *task.data).items()}
    bits, labels, weights = batch["inputs"][..., 0], batch["targets"], batch["weights"]
    assert np.array_equal(batch["inputs"][..., 1], 1 - bits) and not weights[:, :10].any() and weights[:, 10:].all()
    first, second = bits[:, 4:-6], bits[:, :-10]  # x(t - 6), x(t - 10) for t = 10 ... 39
    scored = labels[:, 10:]
    for a in (0, 1):
        for b in (0, 1):
            chosen = scored[(first == a) & (second == b)]
            p = 0.5 + 0.5 * a - 0.25 * b
            assert abs(chosen.mean() - p) <= 4 * np.sqrt(max(p * (1 - p), 1e-4) / chosen.size), (a, b)
    floors = task.info["floors"]
    assert floors["no_memory"] == pytest.approx(-(5 / 8) * np.log(5 / 8) - (3 / 8) * np.log(3 / 8))
    assert floors["both_lags"] == pytest.approx(
        (np.log(2) + 2 * (-(1 / 4) * np.log(1 / 4) - (3 / 4) * np.log(3 / 4))) / 4
    )
    assert task.baseline == floors["no_memory"] and floors["both_lags"] < task.solved_threshold < floors["first_lag"]
    with pytest.raises(ValueError, match="need 1 <= t1 < t2 < --seq-len"):
        make_task("add", options(seq_len=8))


def test_bit_copy_is_zucchets_copy_task_as_their_setup_runs_it():
    """Zucchet et al. 2023's dataloaders/copy.py with the padding its setup() reads (7): the
    pattern at steps 0 ... P-1 on channels 0-6, the marker on channel 7 at step P + 7, and the
    pattern again as the target of the last P steps, the only ones scored; T = 2P + 8 (48 at P = 20)."""
    from rnn_jax.losses import sequence_bits_cross_entropy

    task = make_task("bit_copy", options(seq_len=20, batch=6))
    batch = {k: np.asarray(v) for k, v in task.batch(jax.random.key(0), *task.data).items()}
    pattern = batch["inputs"][:, :20, :7]
    expected = np.zeros((6, 48, 8))
    expected[:, :20, :7], expected[:, 27, 7] = pattern, 1.0
    np.testing.assert_array_equal(batch["inputs"], expected)
    np.testing.assert_array_equal(batch["targets"][:, 28:], pattern)
    assert not batch["targets"][:, :28].any() and set(np.unique(pattern)) == {0.0, 1.0}
    np.testing.assert_array_equal(batch["weights"], np.broadcast_to(np.arange(48) >= 28, (6, 48)))
    assert task.info["length"] == 48 and task.baseline == pytest.approx(np.log(2))
    logits = np.random.default_rng(0).normal(size=(6, 48, 7))
    out = sequence_bits_cross_entropy(logits, batch)
    p = 1 / (1 + np.exp(-logits[:, 28:]))
    t = batch["targets"][:, 28:]
    by_hand = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    assert float(out.loss) == pytest.approx(by_hand, rel=1e-5)
    assert float(out.metrics["accuracy"]) == pytest.approx(((p > 0.5) == (t > 0.5)).mean(), rel=1e-6)


def test_the_teacher_is_a_linear_system_on_its_ring():
    """Zucchet & Orvieto's teacher: real A whose eigenvalues keep the phases of a Gaussian
    matrix's and have moduli in [nu_0, 1); targets equal a step-by-step NumPy simulation; the
    impulse response equals its eigen form C V diag(lambda^(k-1)) V^-1 B; the baseline (predicting
    zero) equals a Monte Carlo E[y^2] over the steps within 4 standard errors."""
    from rnn_jax.tasks.teacher import impulse_response, make_teacher

    a, b, c, d = make_teacher(42, 10, 0.9)
    values, vectors = np.linalg.eig(a)
    assert np.all(np.abs(values) >= 0.9) and np.all(np.abs(values) < 1.0) and np.isrealobj(a)
    raw = np.linalg.eigvals(np.random.default_rng(42).normal(size=(10, 10)) / np.sqrt(10))
    np.testing.assert_allclose(np.sort(np.angle(values)), np.sort(np.angle(raw)), atol=1e-9)
    response = impulse_response(a, b, c, d, 50)
    eigen_form = [d.item()] + [
        (c @ vectors @ np.diag(values ** (k - 1)) @ np.linalg.inv(vectors) @ b).real.item() for k in range(1, 50)
    ]
    np.testing.assert_allclose(response, eigen_form, rtol=1e-9, atol=1e-12)
    task = make_task("teacher", options(seq_len=30, batch=4000, teacher_nu=0.9))
    batch = {k: np.asarray(v, np.float64) for k, v in task.batch(jax.random.key(0), *task.data).items()}
    h, ys = np.zeros((4000, 10)), []
    for t in range(30):
        h = h @ a.T + batch["inputs"][:, t] @ b.T
        ys.append(h @ c.T + batch["inputs"][:, t] @ d.T)
    np.testing.assert_allclose(batch["targets"], np.stack(ys, 1), rtol=1e-4, atol=1e-4)
    squared = (batch["targets"][..., 0] ** 2).mean(1)
    assert abs(squared.mean() - task.baseline) < 4 * squared.std() / np.sqrt(4000)
    assert task.info["memory_lag"] > 10 and len(task.info["eigenvalues"]["real"]) == 10
    with pytest.raises(ValueError, match=r"--teacher-nu 1.0: the ring's inner radius nu_0 must be in \[0, 1\)"):
        make_task("teacher", options(teacher_nu=1.0))
