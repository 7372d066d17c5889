"""Forecasting a real series: the next change, in windows (`rnn_jax.forecasting`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from rnn_jax import forecasting
from rnn_jax.choices import check_choice
from rnn_jax.losses import sequence_mse
from rnn_jax.tasks.base import Task, register_task, rows_task, task_option


@dataclasses.dataclass(frozen=True)
class Series:
    """Which series and how it is cut: a built-in one (`forecasting.SERIES`, its own season,
    holdout and log setting unless given) or a `file` and its `column`."""

    name: str
    file: str | None
    column: str | None
    data_dir: str | None
    period: int
    holdout: int | None
    log: bool

    def values(self) -> np.ndarray:
        return forecasting.load_values(
            self.name, data=self.file, column=self.column, data_dir=self.data_dir, log=self.log
        )


def series_of(cfg) -> Series:
    """The series `cfg` names: --data, a built-in series' name or a table, else the forecast
    experiment's --series (default airline); its --period, --holdout and --log where given."""
    built_in = cfg.data is None or cfg.data in forecasting.SERIES
    name = (cfg.data or task_option(cfg, "series", "airline")) if built_in else cfg.data
    if built_in:
        check_choice("series (--series, or --data)", name, forecasting.SERIES)
    _, _, period, holdout, log = forecasting.SERIES[name] if built_in else (None, None, 0, None, False)

    def given(option, default):
        value = task_option(cfg, option, None)
        return default if value is None else value

    column, holdout, period = task_option(cfg, "column", None), given("holdout", holdout), given("period", period)
    if period < 0:
        raise ValueError(f"--period must be >= 0, got {period}")
    if holdout is not None and holdout < 1:
        raise ValueError(f"--holdout must be >= 1, got {holdout}")
    if not built_in and (column is None or holdout is None):
        raise ValueError(
            f"--data {cfg.data!r} is not a built-in series ({', '.join(forecasting.SERIES)}); a table of your own "
            "needs --column and --holdout (and --period if it has seasons): use experiments.forecast"
        )
    return Series(
        name,
        None if built_in else cfg.data,
        column,
        task_option(cfg, "data_dir", None),
        period,
        holdout,
        bool(given("log", log)),
    )


@register_task("forecast")
def forecast(cfg) -> Task:
    """Next-step changes of a series (`series_of`: airline, the default, | co2 | sunspots | nile
    | unemployment, or a table) in windows of --seq-len steps, every step scored; evaluated on
    the one-step forecast of each validation point, the last --holdout points the test.
    The baseline is persistence (no change). The experiment `experiments.forecast` adds files,
    test errors in the series' units and multi-step forecasts."""
    series = series_of(cfg)
    values = series.values()
    splits = forecasting.split(values, holdout=series.holdout, period=series.period, window=cfg.seq_len)
    held = splits.validation
    return rows_task(
        {"train": splits.train, "validation": held, "test": splits.test},
        min(cfg.batch, len(splits.train["inputs"])),  # a short series has fewer windows than a batch
        series.name,
        loss_fn=sequence_mse,
        model_io=dict(input_size=forecasting.feature_size(series.period), output_size=1),
        baseline=float(np.sum(held["weights"] * held["targets"] ** 2) / np.sum(held["weights"])),
        metric="MSE of the standardised next change",
        info={"points": len(values), "holdout": series.holdout, "log": series.log, **splits.extra},
    )
