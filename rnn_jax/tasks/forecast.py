"""Forecasting a real series: the next change, in windows (`rnn_jax.forecasting`)."""

from __future__ import annotations

import numpy as np

from rnn_jax import forecasting
from rnn_jax.choices import check_choice
from rnn_jax.losses import sequence_mse
from rnn_jax.tasks.base import Task, register_task, rows_task


@register_task("forecast")
def forecast(cfg) -> Task:
    """Next-step changes of a built-in series (--data: airline, the default, | co2 | sunspots |
    nile | unemployment; its own season, holdout and log setting) in windows of --seq-len steps,
    every step scored; evaluated on the one-step forecast of each validation point. The baseline
    is persistence (no change). The experiment `experiments.forecast` adds files, test errors
    and multi-step forecasts."""
    series = cfg.data or "airline"
    check_choice("series (--data)", series, forecasting.SERIES)
    _, _, period, holdout, log = forecasting.SERIES[series]
    values = forecasting.load_values(series, log=log)
    splits = forecasting.split(values, holdout=holdout, period=period, window=cfg.seq_len)
    held = splits.validation
    return rows_task(
        {"train": splits.train, "validation": held, "test": splits.test},
        cfg.batch,
        series,
        loss_fn=sequence_mse,
        model_io=dict(input_size=forecasting.feature_size(period), output_size=1),
        baseline=float(np.sum(held["weights"] * held["targets"] ** 2) / np.sum(held["weights"])),
        metric="MSE of the standardised next change",
        info={"points": len(values), "period": period, "holdout": holdout, "log": log, **splits.extra},
    )
