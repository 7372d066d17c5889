"""The benchmark scripts run end to end (tiny shapes) and write their JSON; the FLOP count
they divide by is the one of the step they time."""

import json
import math

import pytest

from benchmarks import common, memory, seeds, throughput, train_step

TINY = ["--hidden", "8", "--repeats", "1", "--min-seconds", "0"]


def _rows(path):
    return json.loads(path.read_text())["rows"]


@pytest.mark.slow
def test_throughput_compares_implementations(tmp_path):
    out = tmp_path / "a folder not yet made" / "throughput.json"
    throughput.main(
        [
            "--cells",
            "gru",
            "--seq",
            "4",
            "--batch",
            "2",
            "--impls",
            "rnn_jax,rnn_jax-autodiff,flax,rnn_jax-bf16,rnn_jax-untransposed",
            "--out",
            str(out),
            *TINY,
        ]
    )
    rows = _rows(out)
    assert [r["impl"] for r in rows] == ["rnn_jax", "rnn_jax-autodiff", "flax", "rnn_jax-bf16", "rnn_jax-untransposed"]
    assert all(r["tokens_per_s"] > 0 and 0 < r["ceiling"] for r in rows)
    assert next(r for r in rows if r["impl"] == "flax")["vs_flax"] == pytest.approx(1.0)
    # set up as the experiments are: the compilation cache on (the test session's folder)
    assert json.loads(out.read_text())["environment"]["compilation_cache"]["state"] == "on"


def test_throughput_rejects_an_unknown_implementation():
    with pytest.raises(SystemExit):
        throughput.main(["--impls", "cudnn", *TINY])


@pytest.mark.slow
def test_memory_reports_buffers_and_rss_per_process(tmp_path):
    out = tmp_path / "memory.json"
    memory.main(
        [
            "--seq",
            "16",
            "--batch",
            "2",
            "--remat",
            "off,per-step,segments",
            "--steps",
            "1",
            "--out",
            str(out),
            "--hidden",
            "8",
        ]
    )
    rows = _rows(out)
    assert [r["remat"] for r in rows] == ["off", "per-step", "segments"]
    assert all(r["temp_mib"] > 0 and r["peak_rss_mib"] > r["temp_mib"] for r in rows)
    # compile only, the flow step beside: what docs/scaling.md's remat table runs
    memory.main(["--seq", "16", "--batch", "2", "--remat", "off,segments", "--steps", "0", "--flow", "--out", str(out)])
    rows = _rows(out)
    assert all(r["flow_temp_mib"] > r["temp_mib"] > 0 and math.isnan(r["s_per_step"]) for r in rows)


@pytest.mark.slow
def test_seeds_and_train_step_benchmarks(tmp_path):
    seeds.main(["--seeds", "2", "--seq", "4", "--batch", "2", "--out", str(tmp_path / "seeds.json"), *TINY])
    assert [r["mode"] for r in _rows(tmp_path / "seeds.json")] == ["vmap", "sequential"]
    for task in train_step.TASKS:
        out = tmp_path / f"{task}.json"
        train_step.main(["--task", task, "--seq", "4", "--batch", "2", "--no-tiny", "--out", str(out), *TINY])
        rows = _rows(out)
        assert [r["variant"] for r in rows] == ["split-once", "flow", "nnx.jit"]
        assert all(r["task"] == task and r["ms_per_step"] > 0 for r in rows)


def test_flop_count():
    # LSTM, embed = hidden = 2: forward 2 (2 + 2) (4 * 2) + 2 * 2 * 65 = 64 + 260, train step 3x
    assert common.flops_per_token("lstm", 2) == 3 * (64 + 260)


@pytest.mark.slow
def test_parallel_scan_benchmark(tmp_path):
    from benchmarks import parallel_scan

    parallel_scan.main(["--cells", "mingru", "--seq", "8", "--batch", "2", "--out", str(tmp_path / "scan.json"), *TINY])
    rows = _rows(tmp_path / "scan.json")
    assert [r["impl"] for r in rows][:2] == ["mingru parallel", "mingru sequential"]
    lstm = next(r for r in rows if r["cell"] == "lstm")  # at the minGRU's parameter count
    assert abs(lstm["parameters"] - rows[0]["parameters"]) <= 0.2 * rows[0]["parameters"]
    assert all(r["tokens_per_s"] > 0 and r["temp_mib"] >= 0 for r in rows)
    assert rows[1]["recurrence_vs_sequential"] == 1.0 and rows[0]["recurrence_ms"] > 0  # the recurrence alone
    assert rows[0]["floor_ms"] > 0 and rows[0]["bound_vs_sequential"] > 0  # without the recurrence


@pytest.mark.slow
def test_loop_overhead_benchmark(tmp_path):
    from benchmarks import loop_overhead

    loop_overhead.main(["--steps", "20", "--log-every", "1,10", "--repeats", "1", "--out", str(tmp_path / "loop.json")])
    rows = _rows(tmp_path / "loop.json")
    assert [r["impl"] for r in rows] == ["bare for-loop", "train_loop, log every 1", "train_loop, log every 10"]
    assert all(r["steps_per_s"] > 0 for r in rows) and all(r["host_us_per_step"] > 0 for r in rows[1:])


@pytest.mark.slow
def test_time_to_result_benchmark(tmp_path):
    from benchmarks import time_to_result

    time_to_result.main(["--only", "gradient_flow", "--quick", "--out", str(tmp_path / "ttr.json")])
    (row,) = _rows(tmp_path / "ttr.json")
    assert row["command"] == "python -m experiments.gradient_flow --quick"
    # warm: every program read back from the cache the cold run filled
    assert 0 < row["warm_s"] < row["cold_s"]


@pytest.mark.slow
def test_learning_rules_cost_beside_bptt(tmp_path):
    from benchmarks import learning_rules

    out = tmp_path / "rules.json"
    learning_rules.main(
        ["--hidden", "8", "--seq", "8", "--batch", "2", "--repeats", "1", "--min-seconds", "0", "--out", str(out)]
    )
    rows = _rows(out)
    assert [(r["step"], r["rule"]) for r in rows] == [
        ("plain", "bptt"),
        ("plain", "truncated:10"),
        ("flow-measuring", "bptt"),
        ("flow-measuring", "truncated:10"),
    ]
    assert all(r["ms_per_step"] > 0 for r in rows) and rows[0]["vs_first"] == 1.0
