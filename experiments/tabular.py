"""One-to-one: a feature vector in, a class out, through a recurrence of a single step.

    python -m experiments.tabular                          # scikit-learn's breast cancer data (569 x 30)
    python -m experiments.tabular --dataset wine --cell gru
    python -m experiments.tabular --data my_table.csv --label-column y
    python -m experiments.tabular --checkpoint runs/tabular/RUN --input "13.2,1.78,2.14,11.2,100,2.65,..."

With one step and a zero initial state, the vanilla RNN is exactly a one-hidden-layer MLP,
y = W_hy tanh(x W_xh + b) + b_y (W_hh multiplies zeros; tests/test_loaders.py checks it); the
LSTM and GRU are gated variants of it. This is the note's one-to-one shape, and the baseline
the other shapes add time to.

Data: a dataset shipped inside scikit-learn (--dataset, no download), or a local table /
hub dataset with numeric feature columns and an integer --label-column. Split: stratified
60/20/20 train/validation/test with --seed; features standardised with the training split's
mean and standard deviation (saved with the checkpoint, applied to --input). Reported: test
accuracy of the best checkpoint by validation loss (--best-by), beside the majority class and
scikit-learn's logistic regression on the same split.

Writes to --out: results.json, loss_curves.png, logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax.choices import check_choice
from rnn_jax.data.loaders import SKLEARN_DATASETS
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, class_probabilities, load_run, single_task_data
from rnn_jax.layers import SequenceModel
from rnn_jax.options import TaskOptions
from rnn_jax.tasks import Task, make_task
from rnn_jax.tasks.tabular import as_sequences


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "tabular"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(hidden=16, batch=16, steps=40, eval_every=20, checkpoint_every=20, warmup=5)
    DEFAULTS: ClassVar[dict] = dict(steps=600, warmup=20, eval_every=50, checkpoint_every=100)

    dataset: str = "breast_cancer"
    """a dataset shipped in scikit-learn: breast_cancer | wine | iris | digits"""
    data: str | None = None
    """instead of --dataset: a local .csv/.tsv/.jsonl/.parquet table, save_to_disk folder or hub id"""
    label_column: str = "label"
    """--data: the integer class column (every other column is a feature)"""

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            check_choice("--dataset", self.dataset, SKLEARN_DATASETS)


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    sizes = dict(input_size=len(extra["features"]), output_size=len(extra["labels"]), readout="final")
    return cfg.sequence_model(cfg.cell, cfg.seed, **sizes)


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `tabular` (`rnn_jax.tasks.tabular`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    return single_task_data(task, cfg.seed, chunk=4096, extra=task.info["scaling"]), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    arrays = {"train": task.data[0], "validation": task.eval_data[0], "test": task.test_data[0]}
    arrays = {s: {k: np.asarray(v) for k, v in rows.items()} for s, rows in arrays.items()}
    metrics = {
        f"{s}_accuracy": float(
            np.mean(np.asarray(batched_outputs(model, arrays[s]).argmax(-1)) == arrays[s]["targets"])
        )
        for s in ("validation", "test")
    }
    metrics["test_majority_baseline"] = task.info["test_majority_accuracy"]
    metrics["test_logistic_regression"] = logistic_regression(arrays)
    return metrics, {"examples": task.info["examples"], "num_features": task.info["num_features"]}


def logistic_regression(data: dict) -> float:
    from sklearn.linear_model import LogisticRegression

    fit_on = data["train"]["inputs"][:, 0], data["train"]["targets"]
    model = LogisticRegression(max_iter=5000).fit(*fit_on)
    return float(model.score(data["test"]["inputs"][:, 0], data["test"]["targets"]))


def predict(run_dir: str, values: str) -> str:
    """Class probabilities of one comma-separated feature vector."""
    cfg, extra, model = load_run(run_dir, Config, build_model)
    try:
        x = np.array([float(v) for v in values.split(",")], np.float32)
    except ValueError:
        raise ValueError(f"--input must be {len(extra['features'])} comma-separated numbers, got {values!r}")
    if x.size != len(extra["features"]):
        raise ValueError(
            f"--input has {x.size} values; the model takes {len(extra['features'])}: {', '.join(extra['features'])}"
        )
    logits = batched_outputs(model, {"inputs": as_sequences(x[None], extra)})[0]
    return "\n".join(class_probabilities(logits, extra["labels"]))


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    return (
        f"\ntabular {cfg.cell}: {results['steps']} steps in {results['wall_time_s']:.0f} s -> {results['out']}\n"
        f"test accuracy {m['test_accuracy']:.4f} (majority class {m['test_majority_baseline']:.4f}, logistic "
        f"regression {m['test_logistic_regression']:.4f}); validation {m['validation_accuracy']:.4f}"
    )


EXPERIMENT = cli.TaskExperiment(
    "tabular",
    Config,
    data,
    build_model,
    report,
    summary,
    predict=predict,
    title=lambda cfg: f"tabular: {cfg.data or cfg.dataset}",
)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
