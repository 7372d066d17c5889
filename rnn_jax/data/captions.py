"""A captioning dataset made from scikit-learn's 8x8 digits (shipped with it: no download):
each image's caption names its digit, its weight (ink) and its lean, the last two split at the
median of the image's own digit class, so every word must be read from the pixels."""

from __future__ import annotations

import numpy as np

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
CAPTION_LEN = 5  # a {thin|thick} {digit} leaning {left|right}


def describe(images: np.ndarray, labels: np.ndarray) -> list[list[str]]:
    """The caption of every image: weight and lean split at each digit's median."""
    ink = images.sum(1)
    grid = images.reshape(-1, 8, 8)
    rows, cols = np.mgrid[0:8, 0:8]
    total = np.maximum(grid.sum((1, 2)), 1e-9)
    mean_r, mean_c = (grid * rows).sum((1, 2)) / total, (grid * cols).sum((1, 2)) / total
    # rows grow downwards: ink further right at the top than at the bottom leans right
    lean = -(grid * (rows - mean_r[:, None, None]) * (cols - mean_c[:, None, None])).sum((1, 2)) / total
    captions = []
    for i, digit in enumerate(labels):
        same = labels == digit
        weight = "thick" if ink[i] > np.median(ink[same]) else "thin"
        side = "right" if lean[i] > np.median(lean[same]) else "left"
        captions.append(["a", weight, DIGITS[digit], "leaning", side])
    return captions


def load_digits():
    """(images (1797, 64) float32 in 0..16, labels (1797,) int32)."""
    import sklearn.datasets

    digits = sklearn.datasets.load_digits()
    return digits.data.astype(np.float32), digits.target.astype(np.int32)
