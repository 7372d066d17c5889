"""The task experiments end to end on tiny generated data in the real formats: each trains,
writes results.json with its metric and baseline, and predicts from its checkpoint."""

import json

import numpy as np
import pytest

from experiments import caption, forecast, sentiment, tabular, tagging, translate
from rnn_jax import forecasting
from rnn_jax.data import captions as captions_data

from .conftest import needs_data

FAST = ["--steps", "12", "--warmup", "2", "--eval-every", "6", "--checkpoint-every", "6", "--hidden", "8"]


def _results(out):
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def sentiment_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sentiment")
    rng = np.random.default_rng(0)
    words = {0: ["dull", "boring", "bad"], 1: ["great", "fun", "good"]}
    rows = [
        f"{y}\tthe film was {rng.choice(words[y])} and {rng.choice(['long', 'short'])} ."
        for y in rng.integers(0, 2, 120)
    ]
    (root / "s.tsv").write_text("label\ttext\n" + "\n".join(rows) + "\n")
    out = root / "run"
    sentiment.main(
        [
            *FAST,
            "--data",
            str(root / "s.tsv"),
            "--embed",
            "8",
            "--batch",
            "8",
            "--max-len",
            "10",
            "--best-by",
            "accuracy",
            "--out",
            str(out),
        ]
    )
    return out


@pytest.mark.slow
def test_sentiment_results_and_prediction(sentiment_run, capsys):
    results = _results(sentiment_run)
    metrics = results["metrics"]
    assert results["status"] == "completed" and results["steps"] == 12
    assert 0 <= metrics["test_accuracy"] <= 1 and 0 < metrics["test_majority_baseline"] < 1
    assert results["examples"] == {"train": 96, "validation": 12, "test": 12}
    assert set(results["flow_decay_rates"]) == {"0", "11"}  # gradient flow at the first and last step
    best = max(results["history"]["eval"], key=lambda r: r["accuracy"])  # --best-by accuracy: the one tested
    assert metrics["validation_accuracy"] == pytest.approx(best["accuracy"])
    assert (sentiment_run / "flow_vs_lag.png").exists() and (sentiment_run / "loss_curves.png").exists()
    saved = json.loads((sentiment_run / "config.json").read_text())
    assert (saved["experiment"], saved["task"]) == ("sentiment", "sentiment")  # the registered task it ran
    assert "test_accuracy" in results["history"]["eval"][-1]  # the test rows scored beside, never chosen on
    capsys.readouterr()
    sentiment.main(["--checkpoint", str(sentiment_run), "--input", "A great, fun film! unheardofword"])
    out = capsys.readouterr().out
    assert "class 0: p = " in out and "class 1: p = " in out and "unheardofword" in out


def test_prediction_flags_go_together(capsys):
    with pytest.raises(SystemExit):
        sentiment.main(["--checkpoint", "somewhere"])
    assert "prediction needs both --checkpoint RUN_DIR and --input" in capsys.readouterr().err


@pytest.mark.slow
def test_tagging_end_to_end(tmp_path, capsys):
    sentences = []
    rng = np.random.default_rng(0)
    for i in range(40):
        words = [
            ("the", "DET"),
            (rng.choice(["dog", "cat", "bird"]), "NOUN"),
            (rng.choice(["runs", "sleeps"]), "VERB"),
            (".", "PUNCT"),
        ]
        sentences.append(
            f"# sent_id = {i}\n"
            + "".join(f"{k}\t{w}\t{w}\t{t}\t_\t_\t0\t_\t_\t_\n" for k, (w, t) in enumerate(words, 1))
        )
    for split in ("train", "dev", "test"):
        (tmp_path / f"tiny-ud-{split}.conllu").write_text("\n".join(sentences) + "\n")
    out = tmp_path / "run"
    tagging.main(
        [
            *FAST,
            "--data",
            str(tmp_path),
            "--embed",
            "8",
            "--batch",
            "8",
            "--max-len",
            "6",
            "--bidirectional",
            "--out",
            str(out),
        ]
    )
    results = _results(out)
    assert results["metrics"]["test_most_frequent_tag_baseline"] == 1.0  # every word has one tag here
    assert 0 <= results["metrics"]["test_accuracy"] <= 1
    assert "layer0/forward/h" in results["flow_decay_rates"]["0"]
    capsys.readouterr()
    tagging.main(["--checkpoint", str(out), "--input", "the cat zebra ."])
    assert capsys.readouterr().out.strip().startswith("the/")


def test_tagging_needs_the_three_files(tmp_path):
    with pytest.raises(SystemExit, match="train.conllu"):
        tagging.main(["--data", str(tmp_path), "--out", str(tmp_path / "run")])


@pytest.mark.slow
@needs_data
def test_tabular_end_to_end(quick_runs, capsys):
    """On the --quick run (breast cancer: 569 x 30, 212 / 357 per class)."""
    out = quick_runs["tabular"]
    metrics = _results(out)["metrics"]
    assert metrics["test_majority_baseline"] == pytest.approx(0.623, abs=0.01)
    assert metrics["test_logistic_regression"] > 0.9
    capsys.readouterr()
    tabular.main(["--checkpoint", str(out), "--input", ",".join(["1.0"] * 30)])
    assert capsys.readouterr().out.count("p = ") == 2
    with pytest.raises(SystemExit, match="takes 30"):
        tabular.main(["--checkpoint", str(out), "--input", "5.1,3.5"])


@pytest.mark.slow
def test_forecast_end_to_end(tmp_path, capsys):
    t = np.arange(120)
    values = 100 + t + 10 * np.sin(2 * np.pi * t / 12)
    lines = [f"{i},{'' if i == 30 else f'{v:.3f}'}" for i, v in zip(t, values)]  # one gap
    (tmp_path / "s.csv").write_text("t,value\n" + "\n".join(lines) + "\n")
    out = tmp_path / "run"
    forecast.main(
        [
            *FAST,
            "--data",
            str(tmp_path / "s.csv"),
            "--column",
            "value",
            "--period",
            "12",
            "--holdout",
            "12",
            "--window",
            "24",
            "--batch",
            "8",
            "--log",
            "True",
            "--out",
            str(out),
        ]
    )
    results = _results(out)
    metrics = results["metrics"]
    assert set(metrics) == {"one_step", "persistence", "multi_step", "last_value", "seasonal_naive", "last_season"}
    assert metrics["seasonal_naive"]["rmse"] == pytest.approx(12.0, rel=1e-6)  # trend of 1 per step x 12
    assert len(results["forecasts"]["multi_step"]) == 12 and (out / "forecast.png").exists()
    capsys.readouterr()
    forecast.main(["--checkpoint", str(out), "--input", ",".join(f"{v:.2f}" for v in values[-12:])])
    assert len(capsys.readouterr().out.split(",")) == 12
    with pytest.raises(SystemExit):
        forecast.main(["--data", str(tmp_path / "s.csv"), "--column", "value"])  # --holdout missing


@pytest.mark.slow
def test_translate_end_to_end_with_attention(tmp_path, capsys):
    rng = np.random.default_rng(0)
    nouns = {"cat": "chat", "dog": "chien", "house": "maison", "car": "voiture"}
    adjectives = {"big": "grand", "small": "petit", "old": "vieux", "new": "nouveau", "red": "rouge"}
    lines = []
    for _ in range(200):
        adjective, noun = rng.choice(list(adjectives)), rng.choice(list(nouns))
        lines.append(f"The {adjective} {noun}.\tLe {nouns[noun]} {adjectives[adjective]} !")
    lines.append("The cat.\tLe chat.\tattribution columns are ignored")
    (tmp_path / "pairs.tsv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    translate.main(
        [
            *FAST,
            "--data",
            str(tmp_path / "pairs.tsv"),
            "--embed",
            "8",
            "--batch",
            "4",
            "--max-len",
            "6",
            "--attention",
            "--beam",
            "2",
            "--out",
            str(out),
        ]
    )
    results = _results(out)
    assert results["source_sentences"] == {"train": 19, "validation": 1, "test": 1}  # 21 distinct, by sentence
    assert {"test_bleu_greedy", "test_bleu_beam", "test_bleu_copy_source"} <= set(results["metrics"])
    assert {"encoder/layer0/c", "decoder/layer0/h"} <= set(results["flow_decay_rates"]["0"])
    assert (out / "attention.png").exists()
    capsys.readouterr()
    translate.main(["--checkpoint", str(out), "--input", "The big dog."])
    printed = capsys.readouterr().out
    assert printed.startswith("greedy: ") and "beam 2: " in printed


@pytest.mark.slow
@needs_data
def test_caption_end_to_end(quick_runs, capsys):
    """On the --quick run (scikit-learn's digits, as by default)."""
    out = quick_runs["caption"]
    results = _results(out)
    assert results["examples"] == {"train": 1078, "validation": 359, "test": 360}
    assert 0.09 < results["metrics"]["test_most_frequent_caption_digit_accuracy"] < 0.11
    assert all(len(s["reference"].split()) == 5 for s in results["samples"])
    capsys.readouterr()
    caption.main(["--checkpoint", str(out), "--input", "7"])
    assert capsys.readouterr().out.startswith("image 7 (its own caption: a ")
    with pytest.raises(SystemExit, match="64 pixels"):
        caption.main(["--checkpoint", str(out), "--input", "1,2,3"])


def test_describe_reads_weight_and_lean_off_the_image():
    slash = np.zeros((8, 8), np.float32)
    for r in range(8):
        slash[r, 7 - r] = 16  # a stroke from the top right to the bottom left: "/" leans right
    backslash = slash[:, ::-1]
    bold = slash.copy()
    bold[:, :-1] = np.maximum(slash[:, :-1], slash[:, 1:])  # the same stroke, twice as wide
    images = np.stack([slash, backslash, slash, bold]).reshape(4, 64)
    # each attribute is split at the median of its digit: class 1 differs in lean, class 2 in weight
    captions = captions_data.describe(images, np.array([1, 1, 2, 2]))
    assert [c[4] for c in captions[:2]] == ["right", "left"]
    assert [c[1] for c in captions[2:]] == ["thin", "thick"]
    assert captions[0][:3] == ["a", "thin", "one"]


@needs_data
@pytest.mark.parametrize("series", sorted(forecasting.STATSMODELS))
def test_a_series_statsmodels_ships_is_read_from_it_and_equals_the_corpus_file(series):
    """Without --data-dir, co2, sunspots, nile and unemployment come from statsmodels's datasets:
    the same numbers as the timeseries corpus's CSV files (copies of them), gaps included."""
    import os

    from rnn_jax.data import loaders

    file, column, *_ = forecasting.SERIES[series]
    from_statsmodels = forecasting.load_values(series)
    from_file = loaders.load_series(os.path.join(os.environ["RNN_JAX_DATA"], "timeseries", file), column)
    np.testing.assert_array_equal(from_statsmodels, from_file)
