"""One-to-one: a table's rows, each a sequence of one step (its standardised features), and
their classes."""

from __future__ import annotations

import numpy as np

from rnn_jax.choices import check_choice
from rnn_jax.data import loaders
from rnn_jax.losses import classification_cross_entropy
from rnn_jax.tasks.base import Task, label_entropy, register_task, rows_task, task_option


@register_task("tabular")
def tabular(cfg) -> Task:
    """A dataset shipped in scikit-learn (the tabular experiment's --dataset; elsewhere --data
    breast_cancer | wine | iris | digits) or a table (--data, every column but --label-column a
    numeric feature), split stratified 60/20/20 with --seed, standardised with the training
    split's mean and deviation, each row a sequence of one step; classified from its state."""
    data, dataset = cfg.data, task_option(cfg, "dataset", "breast_cancer")
    if data in loaders.SKLEARN_DATASETS:
        data, dataset = None, data
    if data is None:
        check_choice("--dataset", dataset, loaders.SKLEARN_DATASETS)
    features, labels, names = loaders.load_features(
        data, label_column=task_option(cfg, "label_column", "label"), dataset=dataset
    )
    classes = sorted(set(labels.tolist()))
    if classes != list(range(len(classes))) or len(classes) < 2:
        raise ValueError(f"labels must be 0..K-1 with K >= 2, got {classes}")
    rows = loaders.stratified_split(labels, cfg.seed)
    mean, std = features[rows["train"]].mean(0), features[rows["train"]].std(0)
    scaling = {"features": names, "labels": classes, "mean": mean.tolist(), "std": np.where(std > 0, std, 1.0).tolist()}
    arrays = {s: {"inputs": as_sequences(features[r], scaling), "targets": labels[r]} for s, r in rows.items()}
    counts = np.bincount(arrays["train"]["targets"])
    majority = {f"{s}_majority_accuracy": float(np.mean(arrays[s]["targets"] == counts.argmax())) for s in arrays}
    return rows_task(
        arrays,
        cfg.batch,
        data or dataset,
        loss_fn=classification_cross_entropy,
        model_io=dict(input_size=len(names), output_size=len(classes), readout="final"),
        baseline=label_entropy(counts),
        metric="cross-entropy of the class (nats)",
        info={"sequence_length": 1, "num_features": len(names), "scaling": scaling, **majority},
    )


def as_sequences(features: np.ndarray, scaling: dict) -> np.ndarray:
    """Features standardised with the training split's `scaling` ("mean", "std"), as sequences
    of one step: (n, 1, d)."""
    return ((features - np.asarray(scaling["mean"])) / np.asarray(scaling["std"]))[:, None, :].astype(np.float32)
