"""One-to-many: an image sets the initial state, the RNN writes its caption word by word.

    python -m experiments.caption                     # scikit-learn's 8x8 handwritten digits
    python -m experiments.caption --cell gru --layers 2
    python -m experiments.caption --checkpoint runs/caption/RUN --input 1796         # a digit of the dataset
    python -m experiments.caption --checkpoint runs/caption/RUN --input "0,0,5,13,9,1,0,0,..."   # 64 pixels, 0-16

The images are the 1,797 digits shipped inside scikit-learn (no download). Their captions are
generated from each image, so that every word must be read off it: the digit (from the
label), its stroke weight and its lean, e.g. "a thin seven leaning right". Weight: the ink
(sum of pixels) above or below the median ink of that digit; lean: the sign of the
row-column covariance of the ink, above or below that digit's median. The image (pixels / 16)
goes through h_0 = tanh(W x + b) into every decoder layer's initial state (c_0 as well for the
LSTM); the decoder is trained teacher-forced and decodes greedily. Split: stratified 60/20/20.
Reported on the test images: exact caption match, character accuracy (1 - edit distance /
reference length) and the accuracy of each attribute (digit, weight, lean), beside the most
frequent caption.

Writes to --out: results.json (with sample captions), loss_curves.png, flow_vs_lag.png, logs/,
checkpoints/.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax.config import require_at_least_one
from rnn_jax.data.captions import CAPTION_LEN, describe, load_digits
from rnn_jax.data.vocab import Vocab
from rnn_jax.decode import generate
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.metrics import edit_distance
from rnn_jax.options import TaskOptions
from rnn_jax.seq2seq import Captioner
from rnn_jax.tasks import Task, make_task
from rnn_jax.tasks.caption import caption_splits, captioner


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "caption"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(hidden=32, embed=16, batch=16, steps=60, eval_every=30, checkpoint_every=30)
    DEFAULTS: ClassVar[dict] = dict(hidden=128, steps=1500, eval_every=100)

    embed: int = 32
    """word embedding size"""

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, ("embed",))


def build_model(cfg: Config, extra: dict) -> Captioner:
    return captioner(cfg, cfg.cell, cfg.seed, feature_size=64, vocab_size=len(extra["vocab"]))


def caption(model: Captioner, vocab: Vocab, images: np.ndarray) -> list[list[str]]:
    return generate(model, {"inputs": images / 16.0}, vocab, max_len=CAPTION_LEN + 1)


def caption_metrics(predicted: list[list[str]], reference: list[list[str]]) -> dict[str, float]:
    metrics = {
        "exact_match": float(np.mean([p == r for p, r in zip(predicted, reference)])),
        "char_accuracy": float(
            np.mean(
                [
                    max(0.0, 1 - edit_distance(" ".join(p), " ".join(r)) / len(" ".join(r)))
                    for p, r in zip(predicted, reference)
                ]
            )
        ),
    }
    for name, position in (("digit", 2), ("weight", 1), ("lean", 4)):
        metrics[f"{name}_accuracy"] = float(
            np.mean([len(p) > position and p[position] == r[position] for p, r in zip(predicted, reference)])
        )
    return metrics


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `caption` (`rnn_jax.tasks.caption`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    return single_task_data(task, cfg.seed, extra={"vocab": list(task.vocab)}), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    images, captions, rows = caption_splits(cfg.seed)
    test = rows["test"]
    predicted = caption(model, Vocab(task.vocab), images[test])
    reference = [captions[i] for i in test]
    metrics = {f"test_{k}": v for k, v in caption_metrics(predicted, reference).items()}
    most_common = collections.Counter(" ".join(captions[i]) for i in rows["train"]).most_common(1)[0][0].split()
    baseline = caption_metrics([most_common] * len(test), reference)
    metrics.update({f"test_most_frequent_caption_{k}": v for k, v in baseline.items()})
    samples = [
        {"index": int(i), "reference": " ".join(r), "caption": " ".join(p)}
        for i, r, p in zip(test[:20], reference, predicted)
    ]
    return metrics, {"examples": {s: len(r) for s, r in rows.items()}, "samples": samples}


def predict(run_dir: str, image: str) -> str:
    cfg, extra, model = load_run(run_dir, Config, build_model)
    images, labels = load_digits()
    if image.strip().isdigit():
        index = int(image)
        if index >= len(images):
            raise ValueError(f"--input {index}: the digits dataset has images 0..{len(images) - 1}")
        pixels, note = images[index], f"image {index} (its own caption: {' '.join(describe(images, labels)[index])})"
    else:
        try:
            pixels = np.array([float(v) for v in image.split(",")], np.float32)
        except ValueError:
            raise ValueError("--input must be an image index or 64 comma-separated pixel values (0-16)")
        if pixels.size != 64:
            raise ValueError(f"--input has {pixels.size} values; an image is 8x8 = 64 pixels (0-16)")
        note = "the given image"
    return f"{note}\n{' '.join(caption(model, Vocab(extra['vocab']), pixels[None])[0])}"


def summary(cfg: Config, results: dict) -> str:
    m = results["metrics"]
    lines = [
        f"\ncaption {cfg.cell}: {results['steps']} steps in {results['wall_time_s']:.0f} s -> {results['out']}",
        f"test exact match {m['test_exact_match']:.4f}, character accuracy {m['test_char_accuracy']:.4f}, "
        f"digit {m['test_digit_accuracy']:.4f}, weight {m['test_weight_accuracy']:.4f}, lean "
        f"{m['test_lean_accuracy']:.4f} (most frequent caption: exact {m['test_most_frequent_caption_exact_match']:.4f})",
    ]
    lines += [f"  image {s['index']}: {s['caption']!r}  (reference {s['reference']!r})" for s in results["samples"][:5]]
    return "\n".join(lines)


EXPERIMENT = cli.TaskExperiment(
    "caption", Config, data, build_model, report, summary, predict=predict, title=lambda cfg: "caption: sklearn digits"
)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
