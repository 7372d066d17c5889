"""Forecasting a time series (the note's stock-price idea): many-to-many next-step prediction.

    python -m experiments.forecast                          # monthly airline passengers, last 24 months held out
    python -m experiments.forecast --series co2 --cell gru  # weekly Mauna Loa CO2 with gaps, last 104 weeks
    python -m experiments.forecast --data my.csv --column value --period 7 --holdout 28
    python -m experiments.forecast --checkpoint runs/forecast/RUN --input "340,318,362,348,363,435,491,505,404,359,310,337"

The model and the splits are `rnn_jax.forecasting`'s: it reads the series' changes (standardised
with the training part) beside the season's position and predicts the next change; --log True
models log(x) (for series whose seasonal swing grows with the level, like the airline data);
missing values (co2) are interpolated in the inputs and left out of the loss and every metric.
The last --holdout points are the test, the --holdout before them the validation (the best
checkpoint by validation loss is tested), the rest trains, in windows of --window steps.
Reported on the test points, in the series' units, RMSE and MAE of
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
from typing import ClassVar

import numpy as np

from experiments import cli
from rnn_jax import forecasting, plots
from rnn_jax.config import require_at_least_one
from rnn_jax.decode import batched_outputs
from rnn_jax.experiment import TrainingData, load_run, single_task_data
from rnn_jax.layers import SequenceModel
from rnn_jax.options import TaskOptions
from rnn_jax.tasks import Task, make_task
from rnn_jax.tasks.forecast import series_of


@dataclasses.dataclass
class Config(TaskOptions):
    TASK: ClassVar[str] = "forecast"  # the registered task (rnn_jax.tasks) it trains on
    QUICK: ClassVar[dict] = dict(hidden=16, batch=8, steps=40, eval_every=20, checkpoint_every=20, warmup=5)
    DEFAULTS: ClassVar[dict] = dict(batch=16, steps=800, hidden=32, eval_every=50, checkpoint_every=100, warmup=20)

    series: str = "airline"
    """a built-in series: airline | co2 | sunspots | nile | unemployment (co2, sunspots, nile and unemployment
    from statsmodels's datasets; airline, or any with --data-dir, from the timeseries corpus:
    $RNN_JAX_DATA/timeseries/)"""
    data_dir: str | None = None
    """the folder of the built-in series' CSV files (None: the timeseries corpus)"""
    data: str | None = None
    """instead of --series: a local table (.csv, ...), save_to_disk folder or hub id"""
    column: str | None = None
    """--data: the column of values (in time order)"""
    period: int | None = None
    """season length in steps (0: none; default: the built-in series')"""
    holdout: int | None = None
    """test points at the end, and as many validation points before them (None: the built-in series')"""
    log: bool | None = None
    """model log(x): True | False (None: the built-in series')"""
    window: int = 36
    """steps per training window, and of history before each one-step forecast"""

    def __post_init__(self):
        super().__post_init__()
        require_at_least_one(self, ("window",))
        series_of(self)  # a built-in series, or a table with its column and holdout

    @property
    def seq_len(self) -> int:  # the tasks' name for --window
        return self.window


def build_model(cfg: Config, extra: dict) -> SequenceModel:
    return cfg.sequence_model(cfg.cell, cfg.seed, input_size=forecasting.feature_size(extra["period"]), output_size=1)


def data(cfg: Config) -> tuple[TrainingData, Task]:
    """The registered task `forecast` (`rnn_jax.tasks.forecast`), one model's batches."""
    task = make_task(cfg.TASK, cfg)
    extra = {k: task.info[k] for k in ("period", "scale", "series_length")}
    return single_task_data(task, cfg.seed, extra=extra), task


def report(cfg: Config, model, task: Task, out, fitted) -> tuple[dict, dict]:
    series = series_of(cfg)
    values, n, holdout = series.values(), task.info["points"], series.holdout
    splits = forecasting.split(values, holdout=holdout, period=series.period, window=cfg.window)
    unlog = np.exp if series.log else (lambda v: v)
    actual, origin = unlog(values[n - holdout :]), n - holdout
    shift = batched_outputs(model, splits.test)[:, -1, 0] * splits.extra["scale"]
    one_step = unlog(splits.filled[origin - 1 : n - 1] + shift)
    multi_step = unlog(forecasting.roll_out(model, splits.filled[:origin], 0, holdout, splits.extra))
    metrics = forecasting.test_errors(one_step, multi_step, unlog(splits.filled), actual, series.period)
    forecasts = {"one-step": one_step, "multi-step": multi_step}
    title = f"forecast: {cfg.data or cfg.series} ({cfg.cell}), last {holdout} points held out"
    plots.forecast(unlog(values), forecasts, origin, out / "forecast.png", title=title)
    points = {"points": n, "train_points": n - 2 * holdout, "validation_points": holdout, "test_points": holdout}
    forecasts = {"actual": actual.tolist(), "one_step": one_step.tolist(), "multi_step": multi_step.tolist()}
    return metrics, {**points, "forecasts": forecasts}


def predict(run_dir: str, text: str) -> str:
    cfg, extra, model = load_run(run_dir, Config, build_model)
    series = series_of(cfg)
    try:
        values = np.array([float(v) for v in text.split(",")], np.float64)
    except ValueError:
        raise ValueError(f"--input must be comma-separated numbers, got {text!r}")
    if values.size < 2 or not np.isfinite(values).all() or (series.log and values.min() <= 0):
        raise ValueError(
            "--input needs at least 2 finite values" + (" (> 0: the model works on log values)" if series.log else "")
        )
    levels = np.log(values) if series.log else values
    forecast = forecasting.roll_out(model, levels, extra["series_length"] - len(levels), series.holdout, extra)
    return ", ".join(f"{v:.4g}" for v in (np.exp(forecast) if series.log else forecast))


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
