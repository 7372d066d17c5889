"""Forecasting a time series (the note's stock-price idea): many-to-many next-step prediction.

    python -m experiments.forecast                          # monthly airline passengers, last 24 months held out
    python -m experiments.forecast --series co2 --cell gru  # weekly Mauna Loa CO2 with gaps, last 104 weeks
    python -m experiments.forecast --data my.csv --column value --period 7 --holdout 28
    python -m experiments.forecast --checkpoint runs/forecast/RUN --input "340,318,362,348,363,435,491,505,404,359,310,337"

The model reads the series as its steps' changes d_t = x_t - x_(t-1) (standardised with the
training part) beside the position in the season (sin and cos of 2 pi t / period), and
predicts the next change; x_(t+1) = x_t + predicted change. Working on changes lets the
recurrence follow a trend it never saw in training levels. --log True models log(x) (for series
whose seasonal swing grows with the level, like the airline data). Missing values (co2) are
interpolated in the inputs and left out of the loss and of every metric.

Splits, in time order: the last --holdout points are the test, the --holdout before them the
validation (the best checkpoint by validation loss is tested), the rest trains, in windows of
--window steps. Reported on the test points, in the series' units, RMSE and MAE of
  one-step   each point predicted from the --window true values before it, vs persistence
             (x_(t-1)) and seasonal naive (x_(t-period));
  multi-step all test points predicted from the origin, the model's own predictions fed back,
             vs the last value repeated and the last season repeated.
forecast.png shows the test points with the forecasts.

Prediction: --input takes the latest values of a series (at least 2, e.g. one season; they
are taken to end where the training series ends, which fixes the season position) and prints
the next --holdout values.

Writes to --out: results.json, forecast.png, loss_curves.png, flow_vs_lag.png, logs/, checkpoints/.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
from pathlib import Path
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from experiments import cli
from rnn_jax import plots
from rnn_jax.choices import check_choice
from rnn_jax.data import corpora, loaders
from rnn_jax.data.batches import shuffled_batches
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, load_run
from rnn_jax.layers import SequenceModel
from rnn_jax.losses import sequence_mse
from rnn_jax.options import TaskOptions

# name: (file in --data-dir, value column, season length (0: none), test points, model log(x))
SERIES = {
    "airline": ("airline_passengers.csv", "Passengers", 12, 24, True),
    "co2": ("co2.csv", "co2", 52, 104, False),
    "sunspots": ("sunspots.csv", "SUNACTIVITY", 11, 30, False),
    "nile": ("nile.csv", "volume", 0, 10, False),
    "unemployment": ("macrodata.csv", "unemp", 4, 20, False),
}


@dataclasses.dataclass
class Config(TaskOptions):
    QUICK: ClassVar[dict] = dict(hidden=16, batch=8, steps=40, eval_every=20, checkpoint_every=20, warmup=5)

    series: str = "airline"
    """a built-in series: airline | co2 | sunspots | nile | unemployment (co2, sunspots, nile and unemployment
    from statsmodels's datasets; airline, or any with --data-dir, from the timeseries corpus:
    $RNN_JAX_DATA/timeseries/)"""
    data_dir: str | None = None
    """the folder of the built-in series' CSV files (default: the timeseries corpus)"""
    data: str | None = None
    """instead of --series: a local table (.csv, ...), save_to_disk folder or hub id"""
    column: str | None = None
    """--data: the column of values (in time order)"""
    period: int | None = None
    """season length in steps (0: none; default: the built-in series')"""
    holdout: int | None = None
    """test points at the end, and as many validation points before them (default: the built-in series')"""
    log: bool | None = None
    """model log(x): True | False (default: the built-in series')"""
    window: int = 36
    """steps per training window, and of history before each one-step forecast"""
    batch: int = 16
    steps: int = 800
    hidden: int = 32
    eval_every: int = 50
    checkpoint_every: int = 100
    warmup: int | None = 20

    def __post_init__(self):
        super().__post_init__()
        if self.data is None:
            check_choice("--series", self.series, SERIES)
        if self.data is not None and (self.column is None or self.holdout is None):
            raise ValueError("--data needs --column and --holdout (and --period, if the series has seasons)")
        if self.season < 0:
            raise ValueError(f"--period must be >= 0, got {self.period}")
        if self.test_points < 1 or self.window < 1:
            raise ValueError(f"--holdout and --window must be >= 1, got {self.test_points}, {self.window}")

    def _series_default(self, index: int, given):
        """A flag's value, or the built-in series' own where it is not given."""
        return given if given is not None or self.data is not None else SERIES[self.series][index]

    @property
    def season(self) -> int:
        return self._series_default(2, self.period) or 0

    @property
    def test_points(self) -> int:
        return self._series_default(3, self.holdout)

    @property
    def log_values(self) -> bool:
        return bool(self._series_default(4, self.log))


# the built-in series statsmodels ships: read from it when it is installed and no folder is given
STATSMODELS = {"co2": "co2", "sunspots": "sunspots", "nile": "nile", "unemployment": "macrodata"}


def load_values(cfg: Config) -> np.ndarray:
    if cfg.data is not None:
        values = loaders.load_series(cfg.data, cfg.column)
    elif cfg.data_dir is None and cfg.series in STATSMODELS and importlib.util.find_spec("statsmodels"):
        dataset = importlib.import_module(f"statsmodels.datasets.{STATSMODELS[cfg.series]}")
        values = dataset.load_pandas().data[SERIES[cfg.series][1]].to_numpy(np.float64)
    else:
        file, column, *_ = SERIES[cfg.series]
        folder = corpora.resolve(cfg.data_dir or "timeseries").location
        path = Path(folder) / file
        if not path.exists():
            raise FileNotFoundError(f"{path} not found: pass --data-dir, the folder of the series' CSV files")
        values = loaders.load_series(str(path), column)
    if cfg.log_values:
        if np.nanmin(values) <= 0:
            raise ValueError("--log needs positive values; the series has some <= 0")
        values = np.log(values)
    return values


def features(levels: np.ndarray, start: int, extra: dict) -> np.ndarray:
    """Model inputs of the steps t = start, start+1, ...: (time, 1 + 2 if seasonal) float32."""
    changes = np.diff(levels, prepend=levels[0]) / extra["scale"]
    columns = [changes]
    if extra["period"]:
        phase = 2 * np.pi * (start + np.arange(len(levels))) / extra["period"]
        columns += [np.sin(phase), np.cos(phase)]
    return np.stack(columns, -1).astype(np.float32)


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    return cfg.sequence_model(cfg.cell, cfg.seed, input_size=3 if extra["period"] else 1, output_size=1)


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
    keep = np.isfinite(actual)
    diff = predicted[keep] - actual[keep]
    return {"rmse": float(np.sqrt(np.mean(diff**2))), "mae": float(np.mean(np.abs(diff)))}


def data(cfg: Config) -> tuple[TrainingData, dict]:
    values = load_values(cfg)
    n, holdout, period = len(values), cfg.test_points, cfg.season
    train_end = n - 2 * holdout  # x_0 .. x_(train_end - 1) train
    if train_end - 1 < cfg.window + 1:
        raise ValueError(
            f"{n} points leave {train_end} for training: fewer than --window {cfg.window} + 2; "
            "lower --window or --holdout"
        )
    observed = np.isfinite(values)
    idx = np.arange(n)
    filled = np.interp(idx, idx[observed], values[observed])
    train_changes = np.diff(filled[:train_end])[observed[1:train_end] & observed[: train_end - 1]]
    extra = {"period": period, "scale": float(np.std(train_changes) or 1.0), "series_length": n}
    train = windows(filled, observed, extra, np.arange(cfg.window - 1, train_end - 1), cfg.window, last_only=False)
    validation = windows(filled, observed, extra, np.arange(train_end - 1, n - holdout - 1), cfg.window, last_only=True)
    test = windows(filled, observed, extra, np.arange(n - holdout - 1, n - 1), cfg.window, last_only=True)
    training = TrainingData(
        sequence_mse,
        shuffled_batches(train, min(cfg.batch, len(train["inputs"])), cfg.seed),
        [validation],
        extra=extra,
    )
    return training, {"values": values, "filled": filled, "test": test, "extra": extra}


def report(cfg: Config, model, held: dict, out, fitted) -> tuple[dict, dict]:
    values, filled, test, extra = held["values"], held["filled"], held["test"], held["extra"]
    n, holdout, period = len(values), cfg.test_points, cfg.season
    train_end = n - 2 * holdout

    unlog = np.exp if cfg.log_values else (lambda v: v)
    actual = unlog(values[n - holdout :])
    one_step = unlog(filled[n - holdout - 1 : n - 1] + batched_outputs(model, test)[:, -1, 0] * extra["scale"])
    origin = n - holdout
    multi_step = unlog(roll_out(model, filled[:origin], 0, holdout, extra))
    last = filled[origin - 1]
    metrics = {
        "one_step": errors(one_step, actual),
        "persistence": errors(unlog(filled[origin - 1 : n - 1]), actual),
        "multi_step": errors(multi_step, actual),
        "last_value": errors(unlog(np.full(holdout, last)), actual),
    }
    if period:
        metrics["seasonal_naive"] = errors(unlog(filled[origin - period : n - period]), actual)
        metrics["last_season"] = errors(unlog(filled[origin - period + np.arange(holdout) % period]), actual)
    title = f"forecast: {cfg.data or cfg.series}"
    plots.forecast(
        unlog(values),
        {"one-step": one_step, "multi-step": multi_step},
        origin,
        out / "forecast.png",
        title=f"{title} ({cfg.cell}), last {holdout} points held out",
    )
    info = {
        "points": n,
        "train_points": train_end,
        "validation_points": holdout,
        "test_points": holdout,
        "forecasts": {"actual": actual.tolist(), "one_step": one_step.tolist(), "multi_step": multi_step.tolist()},
    }
    return metrics, info


def predict(run_dir: str, text: str) -> str:
    cfg, extra, model = load_run(run_dir, Config, build_model)
    try:
        values = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        raise ValueError(f"--input must be comma-separated numbers, got {text!r}")
    if values.size < 2 or not np.isfinite(values).all() or (cfg.log_values and values.min() <= 0):
        raise ValueError(
            "--input needs at least 2 finite values"
            + (" (> 0: the model works on log values)" if cfg.log_values else "")
        )
    levels = np.log(values) if cfg.log_values else values
    forecast = roll_out(model, levels, extra["series_length"] - len(levels), cfg.test_points, extra)
    forecast = np.exp(forecast) if cfg.log_values else forecast
    return ", ".join(f"{v:.4g}" for v in forecast)


def summary(cfg: Config, results: dict) -> str:
    lines = [
        f"\nforecast {cfg.cell} on {cfg.data or cfg.series}: {results['steps']} steps in "
        f"{results['wall_time_s']:.0f} s -> {results['out']}"
    ]
    lines += [f"  {name:15s} RMSE {e['rmse']:10.4g}   MAE {e['mae']:10.4g}" for name, e in results["metrics"].items()]
    return "\n".join(lines)


EXPERIMENT = cli.TaskExperiment(
    "forecast",
    Config,
    data,
    build_model,
    report,
    summary,
    predict=predict,
    title=lambda cfg: f"forecast: {cfg.data or cfg.series}",
)
run, main = EXPERIMENT.run, EXPERIMENT.main


if __name__ == "__main__":
    main()
