"""Forecasting a series from its changes: loading, windows, splits, roll-outs and errors.

The model reads the series as its steps' changes d_t = x_t - x_(t-1) (standardised with the
training part) beside the position in the season (sin and cos of 2 pi t / period), and predicts
the next change; x_(t+1) = x_t + predicted change. Working on changes lets the recurrence follow
a trend it never saw in training levels. Missing values (co2) are interpolated in the inputs and
left out of the loss (weight 0) and of every error.

Splits, in time order: the last `holdout` points are the test, the `holdout` before them the
validation, the rest trains, in windows of `window` steps. Used by ``--task forecast``
(`rnn_jax.tasks`) and by ``python -m experiments.forecast``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rnn_jax.data import corpora, loaders

# name: (file in the timeseries corpus, value column, season length (0: none), test points, model log(x))
SERIES = {
    "airline": ("airline_passengers.csv", "Passengers", 12, 24, True),
    "co2": ("co2.csv", "co2", 52, 104, False),
    "sunspots": ("sunspots.csv", "SUNACTIVITY", 11, 30, False),
    "nile": ("nile.csv", "volume", 0, 10, False),
    "unemployment": ("macrodata.csv", "unemp", 4, 20, False),
}
# the built-in series statsmodels ships: read from it when it is installed and no folder is given
STATSMODELS = {"co2": "co2", "sunspots": "sunspots", "nile": "nile", "unemployment": "macrodata"}


def load_values(series: str, *, data: str | None = None, column: str | None = None, data_dir=None, log=False):
    """The series' values in time order (NaN where missing), log(x) with `log`: `data` (a local
    table, save_to_disk folder or hub id) and its `column`, else the built-in `series` from
    statsmodels (where installed and no `data_dir` is given), else from `data_dir` or the
    timeseries corpus of $RNN_JAX_DATA."""
    if data is not None:
        values = loaders.load_series(data, column)
    elif data_dir is None and series in STATSMODELS and importlib.util.find_spec("statsmodels"):
        dataset = importlib.import_module(f"statsmodels.datasets.{STATSMODELS[series]}")
        values = dataset.load_pandas().data[SERIES[series][1]].to_numpy(np.float64)
    else:
        file, column, *_ = SERIES[series]
        path = Path(corpora.resolve(data_dir or "timeseries").location) / file
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass --data-dir, the folder of the series' CSV files")
        values = loaders.load_series(str(path), column)
    if log:
        if np.nanmin(values) <= 0:
            raise ValueError("--log needs positive values; the series has some <= 0")
        values = np.log(values)
    return values


def feature_size(period: int) -> int:
    """Inputs per step: the change, and the season's sin and cos when there is a season."""
    return 3 if period else 1


def features(levels: np.ndarray, start: int, extra: dict) -> np.ndarray:
    """Model inputs of the steps t = start, start+1, ...: (time, 1 + 2 if seasonal) float32."""
    changes = np.diff(levels, prepend=levels[0]) / extra["scale"]
    columns = [changes]
    if extra["period"]:
        phase = 2 * np.pi * (start + np.arange(len(levels))) / extra["period"]
        columns += [np.sin(phase), np.cos(phase)]
    return np.stack(columns, -1).astype(np.float32)


def windows(filled: np.ndarray, observed: np.ndarray, extra: dict, ends: np.ndarray, length: int, *, last_only: bool):
    """Windows of `length` steps whose last input is at each of `ends`; the target of step t is
    the standardised change to t+1 (weight 0 where x_t or x_(t+1) is missing; with
    `last_only`, on the last step alone: a one-step forecast of x_(end+1))."""
    x = features(filled, 0, extra)
    change = np.diff(filled, append=filled[-1]) / extra["scale"]  # change[t] = x_(t+1) - x_t
    valid = observed & np.append(observed[1:], False)
    steps = ends[:, None] - length + 1 + np.arange(length)[None]
    weights = valid[steps].astype(np.float32)
    if last_only:
        weights[:, :-1] = 0.0
    return {"inputs": x[steps], "targets": change[steps].astype(np.float32), "weights": weights}


class Splits(NamedTuple):
    """Training windows (every step scored), validation and test windows (their last step
    scored: the one-step forecast of each held-out point), the interpolated series and `extra`
    (period, the changes' scale, the series' length: saved with the checkpoint)."""

    train: dict
    validation: dict
    test: dict
    filled: np.ndarray
    extra: dict


def split(values: np.ndarray, *, holdout: int, period: int, window: int) -> Splits:
    """The series cut in time order: train, `holdout` validation points, `holdout` test points."""
    n = len(values)
    train_end = n - 2 * holdout  # x_0 .. x_(train_end - 1) train
    if train_end - 1 < window + 1:
        raise ValueError(
            f"{n} points leave {train_end} for training: fewer than --window {window} + 2; lower --window or --holdout"
        )
    observed = np.isfinite(values)
    idx = np.arange(n)
    filled = np.interp(idx, idx[observed], values[observed])
    train_changes = np.diff(filled[:train_end])[observed[1:train_end] & observed[: train_end - 1]]
    extra = {"period": period, "scale": float(np.std(train_changes) or 1.0), "series_length": n}
    cut = functools.partial(windows, filled, observed, extra, length=window)
    return Splits(
        cut(np.arange(window - 1, train_end - 1), last_only=False),
        cut(np.arange(train_end - 1, n - holdout - 1), last_only=True),
        cut(np.arange(n - holdout - 1, n - 1), last_only=True),
        filled,
        extra,
    )


@functools.partial(jax.jit, static_argnums=(0, 3))
def _roll_out(graphdef, params, history, horizon, future_phase):
    """Feed `history` (1, time, features), then `horizon` of the model's own predicted changes."""
    model = nnx.merge(graphdef, params)
    outputs, carries = model(history)

    def step(state, phase):
        carries, change = state
        x = jnp.concatenate([change, phase], -1)[None, None]
        out, carries = model(x, initial_carries=carries)
        return (carries, out[0, 0]), out[0, 0, 0]

    _, changes = jax.lax.scan(step, (carries, outputs[0, -1]), future_phase[:horizon])
    return jnp.concatenate([outputs[0, -1, :1], changes[:-1]])


def roll_out(model, levels: np.ndarray, start: int, horizon: int, extra: dict) -> np.ndarray:
    """The next `horizon` levels after `levels` (whose first step has time index `start`),
    each prediction fed back as the next input."""
    graphdef, params = nnx.split(model)
    t = start + len(levels) + np.arange(horizon)
    phase = (
        np.stack([np.sin(2 * np.pi * t / extra["period"]), np.cos(2 * np.pi * t / extra["period"])], -1)
        if extra["period"]
        else np.zeros((horizon, 0))
    )
    changes = np.asarray(
        _roll_out(graphdef, params, features(levels, start, extra)[None], horizon, jnp.asarray(phase, jnp.float32))
    )
    return levels[-1] + np.cumsum(changes * extra["scale"])


def errors(predicted, actual) -> dict[str, float]:
    """RMSE and MAE over the points where `actual` is known."""
    keep = np.isfinite(actual)
    diff = predicted[keep] - actual[keep]
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}


def test_errors(one_step, multi_step, levels: np.ndarray, actual: np.ndarray, period: int) -> dict[str, dict]:
    """RMSE and MAE on the last len(actual) points of `levels` (the interpolated series in its
    units): the model's one-step and multi-step forecasts beside persistence (x_(t-1)) and the
    last value repeated, and with seasons the seasonal naive (x_(t-period)) and the last
    season repeated."""
    n, holdout = len(levels), len(actual)
    origin = n - holdout
    metrics = {
        "one_step": errors(one_step, actual),
        "persistence": errors(levels[origin - 1 : n - 1], actual),
        "multi_step": errors(multi_step, actual),
        "last_value": errors(np.full(holdout, levels[origin - 1]), actual),
    }
    if period:
        metrics["seasonal_naive"] = errors(levels[origin - period : n - period], actual)
        metrics["last_season"] = errors(levels[origin - period + np.arange(holdout) % period], actual)
    return metrics
