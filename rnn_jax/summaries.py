"""What a set of runs measured, over cells and seeds: the flow profiles averaged over seeds, their
decay rates, the final metrics, Lyapunov spectra and what they say, gate statistics and time
constants (`summarise_cells`, results.json's `cells`), and the profiles in long form
(`write_flow_csv`)."""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import numpy as np

from rnn_jax.gradflow import decay_rate, top_state
from rnn_jax.history import History
from rnn_jax.statistics import compare, seed_summary, solved_fraction

CONVERGED = 0.05  # lambda_1's standard error below this fraction of |lambda_1|: converged


def summarise_cells(cfg, histories: dict[str, dict[int, History]], *, solved_below: float | None = None) -> dict:
    """results.json's `cells` section: per cell, profiles averaged over seeds (the top layer's
    h), decay rates, the final metric over seeds with its intervals (`rnn_jax.statistics`), the
    fraction of seeds whose final loss is below `solved_below` (with its exact binomial
    interval); each seed's full record under `seeds`. `cfg`: the run's options (layers,
    spectrum, seq_len)."""
    cells = {}
    for cell, by_seed in histories.items():
        steps = sorted(set.intersection(*(set(h.flow) for h in by_seed.values())))
        top = top_state(next(iter(by_seed.values())).flow[steps[0]]["by_lag"], cfg.layers) if steps else None
        by_lag = {s: np.array([h.flow[s]["by_lag"][top] for h in by_seed.values()]) for s in steps}
        by_step = {s: np.array([h.flow[s]["by_step"][top] for h in by_seed.values()]) for s in steps}
        rates = {s: [decay_rate(p) for p in by_lag[s]] for s in steps}
        finals = [h.eval[-1]["loss"] if h.eval else float("nan") for h in by_seed.values()]
        accuracies = [h.eval[-1].get("accuracy", float("nan")) if h.eval else float("nan") for h in by_seed.values()]
        cells[cell] = {
            "grad_norm_by_lag": {str(s): by_lag[s].mean(0).tolist() for s in steps},
            "grad_norm_by_step": {str(s): by_step[s].mean(0).tolist() for s in steps},
            "decay_rate": {str(s): seed_summary(r) for s, r in rates.items()},
            "final_eval_loss": seed_summary(finals),
            **({"solved": solved_fraction([f < solved_below for f in finals])} if solved_below is not None else {}),
            **(
                {"final_eval_accuracy": seed_summary(accuracies)}
                if any(h.eval and "accuracy" in h.eval[-1] for h in by_seed.values())
                else {}
            ),
            **test_summary(list(by_seed.values()), best_by=getattr(cfg, "best_by", "loss")),
            **measurement_summary([{s: h.flow[s].get("measurements", {}) for s in steps} for h in by_seed.values()]),
            "status": {str(seed): h.status for seed, h in by_seed.items()},
            **summarise_dynamics(cfg, [{s: h.flow[s].get("dynamics", {}) for s in steps} for h in by_seed.values()]),
            "seeds": {str(seed): h.to_json() for seed, h in by_seed.items()},
        }
    return cells


def test_summary(histories: list[History], *, best_by: str = "loss") -> dict:
    """For runs scored on test rows beside the validation ones: ``test_at_best_validation``, each
    seed's test metrics at its own evaluation with the best validation `best_by` (lowest loss,
    highest accuracy: the model a researcher would choose without seeing the test), with the
    step chosen; and ``final_test``, at the last evaluation. Seed summaries per metric."""
    if not histories or not all(h.eval and "test_loss" in h.eval[-1] for h in histories):
        return {}
    sign = -1.0 if best_by == "accuracy" else 1.0
    chosen = [min(h.eval, key=lambda r: sign * r.get(best_by, np.nan)) for h in histories]
    names = [k[len("test_") :] for k in histories[0].eval[-1] if k.startswith("test_")]
    at = lambda records: {n: seed_summary([r[f"test_{n}"] for r in records]) for n in names}  # noqa: E731
    return {
        "test_at_best_validation": {
            **at(chosen),
            "chosen_by": f"validation {best_by}",
            "step": [r["step"] for r in chosen],
        },
        "final_test": at([h.eval[-1] for h in histories]),
    }


def measurement_summary(by_seed: list[dict[int, dict]]) -> dict:
    """``measurements``: {name: {path: {step: summary}}} of the registered measurements recorded
    at each measured step (`by_seed`: per seed, {step: {name: {path: value}}}): a number per seed
    summarised like every metric (`seed_summary`: mean, 95% interval, each seed), an array per
    seed as its elementwise mean over the seeds beside each seed's."""
    steps = sorted(by_seed[0]) if by_seed else []
    out: dict = {}
    for step in steps:
        for name, record in by_seed[0][step].items():
            for path, first in record.items():
                values = [seed[step][name][path] for seed in by_seed]
                summary = (
                    seed_summary(values)
                    if np.ndim(first) == 0
                    else {"mean": np.mean(np.asarray(values, np.float64), axis=0).tolist(), "per_seed": values}
                )
                out.setdefault(name, {}).setdefault(path, {})[str(step)] = summary
    return {"measurements": out} if out else {}


def summarise_dynamics(cfg, by_seed: list[dict[int, dict]]) -> dict:
    """Seed means of the Lyapunov spectra (``lyapunov``: layer 0; ``lyapunov_layer1``, ...), what
    they say (`spectrum_summary`), and layer 0's gate statistics and time constant, by measured
    step."""
    out = {}
    steps = sorted(by_seed[0])
    for layer in by_seed[0][steps[0]] if steps else []:
        suffix = "" if layer == "layer0" else "_" + layer.replace("/", "_")

        def seed_mean(step, key, layer=layer):  # NaN where a run recorded before the key existed
            return np.mean([seed[step][layer].get(key, np.nan) for seed in by_seed], axis=0)

        if cfg.spectrum:
            out["lyapunov" + suffix] = {str(s): seed_mean(s, "lyapunov").tolist() for s in steps}
            out["lyapunov_summary" + suffix] = {
                str(s): spectrum_summary(
                    seed_mean(s, "lyapunov"),
                    cfg.seq_len,
                    stderr=seed_mean(s, "lyapunov_stderr"),
                    participation=seed_mean(s, "participation_ratio"),
                )
                for s in steps
            }
        if layer == "layer0":
            out.update(gate_summary([{s: seed[s][layer] for s in steps} for seed in by_seed]))
    return out


def gate_summary(by_seed: list[dict[int, dict]]) -> dict:
    """Seed means of one layer's gate statistics (``gates.<step>.<gate>.{mean,low,high}``) and
    time constants (``time_constant``, ``time_constant_of_mean_keep``, ``_median``, ``_p90``:
    seed means; ``time_constant_max``: the largest over seeds), by step."""
    steps, first = sorted(by_seed[0]), by_seed[0]

    def mean(step, get):
        return float(np.mean([get(seed[step]) for seed in by_seed]))

    if not steps or not first[steps[0]]["gates"]:
        return {}
    out = {
        "gates": {
            str(s): {
                gate: {stat: mean(s, lambda d, g=gate, k=stat: d["gates"][g][k]) for stat in ("mean", "low", "high")}
                for gate in first[s]["gates"]
            }
            for s in steps
        }
    }
    for key in ("time_constant", "time_constant_of_mean_keep", "time_constant_median", "time_constant_p90"):
        if steps and key in first[steps[0]]:  # see `rnn_jax.diagnostics.time_constants`
            out[key] = {str(s): mean(s, lambda d, k=key: d[k]) for s in steps}
    if steps and "time_constant_max" in first[steps[0]]:
        out["time_constant_max"] = {
            str(s): float(np.max([seed[s]["time_constant_max"] for seed in by_seed])) for s in steps
        }
    return out


def spectrum_summary(exponents, time: int, *, stderr=np.nan, participation=np.nan) -> dict:
    """What a spectrum says: the leading exponent (and its standard error across sequences:
    ``converged`` when below `CONVERGED` of |lambda_1| or 1e-3), the directions above -0.01
    (memory), the log condition number of the T-step Jacobian, and the leading Lyapunov vector's
    participation ratio (how many state coordinates carry the slowest direction)."""
    exponents = np.asarray(exponents, np.float64)
    leading_stderr = float(np.ravel(stderr)[0])
    return {
        "leading": float(exponents[0]),
        "leading_stderr": leading_stderr,
        "converged": bool(leading_stderr <= max(CONVERGED * abs(exponents[0]), 1e-3)),
        "memory_directions": int(np.sum(exponents > -0.01)),
        "log_condition": float(time * (exponents[0] - exponents[-1])),
        "leading_participation": float(np.ravel(participation)[0]),
    }


def unconverged(cells: dict) -> list[str]:
    """One line per cell and layer whose last measured lambda_1 had not converged (see
    `spectrum_summary`): the sequences are too short for a finite-time exponent to settle."""
    lines = []
    for cell, record in cells.items():
        for key, by_step in record.items():
            if key.startswith("lyapunov_summary") and by_step:
                step, last = max(by_step.items(), key=lambda item: int(item[0]))
                if not last["converged"] and np.isfinite(last["leading_stderr"]):
                    lines.append(
                        f"{cell} {key.removeprefix('lyapunov_summary').lstrip('_') or 'layer0'}, step {step}: "
                        f"lambda_1 = {last['leading']:+.4f} +- {last['leading_stderr']:.4f} (standard error over "
                        "the batch's sequences) has not converged; measure on longer sequences (--seq-len)"
                    )
    return lines


def write_flow_csv(path: Path, histories: dict[str, dict[int, History]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["cell", "seed", "training_step", "profile", "component", "index", "grad_norm"])
        for cell, by_seed in histories.items():
            for seed, history in by_seed.items():
                for step, flow in sorted(history.flow.items()):
                    for profile, by_key in ((p, flow[p]) for p in ("by_step", "by_lag")):
                        for component, norms in by_key.items():
                            for index, norm in enumerate(norms):
                                writer.writerow([cell, seed, step, profile, component, index, norm])


def cells_table(cfg, results: dict) -> str:
    """The printed table: per cell, decay rate and leading Lyapunov exponent at initialisation
    and after training, the final evaluation (seed mean with its 95% t-interval, then each seed),
    the seeds that solved the task (with the exact binomial interval) and the status."""
    task, last = results["task"], str(max(0, cfg.steps - 1))
    lines = [
        f"\n{cfg.task}: T={task.get('sequence_length', cfg.seq_len)}, hidden {cfg.hidden}, {cfg.steps} steps, "
        f"{cfg.seeds} seed(s) -> "
        f"{results['out']}",
        f"{'cell':<8} {'decay/step @0':>16} {'@' + last:>16} {'lambda_1 @0':>11} {'@' + last:>8}  "
        f"final eval {task['metric']}",
    ]
    for cell, record in results["cells"].items():
        rate = functools.partial(_rate_text, record["decay_rate"])
        spectra = record.get("lyapunov_summary", {})
        lead = lambda s: f"{spectra[s]['leading']:+.4f}" if s in spectra else "-"  # noqa: E731
        final = record["final_eval_loss"]
        per_seed = " ".join(f"{v:.4g}" for v in final["per_seed"])
        low, high = final.get("interval", [float("nan")] * 2)
        line = f"{final['mean']:.4g} [{low:.3g}, {high:.3g}] ({per_seed})" if cfg.seeds > 1 else f"{final['mean']:.4g}"
        if "solved" in record:
            solved = record["solved"]
            line += (
                f", solved {solved['solved']}/{solved['n']} [{solved['interval'][0]:.2f}, {solved['interval'][1]:.2f}]"
            )
        if "final_eval_accuracy" in record:
            accuracy = record["final_eval_accuracy"]
            line += f", accuracy {accuracy['mean']:.4f}"
            if cfg.seeds > 1:
                line += " [{:.3f}, {:.3f}]".format(*accuracy["interval"])
        if "test_at_best_validation" in record:
            test = record["test_at_best_validation"].get("accuracy") or record["test_at_best_validation"]["loss"]
            line += f"; test {test['mean']:.4f}" + (
                " [{:.3f}, {:.3f}]".format(*test["interval"]) if cfg.seeds > 1 else ""
            )
        status = ",".join(sorted(set(record["status"].values())))
        lines.append(f"{cell:<8} {rate('0'):>16} {rate(last):>16} {lead('0'):>11} {lead(last):>8}  {line}  [{status}]")
    lines.append(f"baseline {task['metric']}: {task['baseline']:.4g}; solved: below {task.get('solved_below', 0):.4g}")
    if any("test_at_best_validation" in r for r in results["cells"].values()):
        lines.append(f"[final eval: the validation data; test: at each seed's best validation {cfg.best_by}]")
    if cfg.seeds > 1:
        lines.append(
            "[intervals: 95% t-interval of the seed mean (decay: mean ± its half-width); "
            "solved: exact binomial 95% interval]"
        )
    return "\n".join(lines)


def _rate_text(rates: dict, step: str) -> str:
    """A measured step's decay rate: the seed mean, with the half-width of its 95% t-interval
    from 2 seeds on (the interval is symmetric); "-" where the step was not measured."""
    if step not in rates:
        return "-"
    low, high = rates[step].get("interval", [float("nan")] * 2)
    half = "" if np.isnan(low) else f"±{(high - low) / 2:.4f}"
    return f"{rates[step]['mean']:+.4f}{half}"


def _stat_columns(name: str, summary: dict | None) -> dict:
    """A seed summary as flat columns: `name` (the mean), `name`_std, and its 95% t-interval as
    `name`_low and `name`_high (NaN where not measured)."""
    summary = summary or {}
    low, high = summary.get("interval", [float("nan")] * 2)
    return {
        name: summary.get("mean", float("nan")),
        f"{name}_std": summary.get("std", float("nan")),
        f"{name}_low": low,
        f"{name}_high": high,
    }


def _alignment_columns(record: dict) -> dict:
    """A learning rule's cosine, norm ratio (and, stochastic, variance) against full BPTT at the
    last measured step (`rnn_jax.learning_rules.alignment`, overall); nothing under bptt."""
    alignment = record.get("measurements", {}).get("alignment", {})
    columns = {}
    for name in ("cosine", "norm_ratio", "variance"):
        by_step = alignment.get(f"['all']['{name}']")
        if by_step:
            columns.update(_stat_columns(f"alignment_{name}", by_step[max(by_step, key=int)]))
    return columns


def grid_rows(points: list[tuple[dict, dict]]) -> list[dict]:
    """The rows of an ablation grid (`experiments.ablate`), `points` its (grid point, results)
    pairs: one row per (grid point, cell): final loss, decay rates and, for a classification task,
    the final evaluation's accuracy (mean, std, 95% t-interval over seeds), and where the task has
    test rows, the test metrics at each seed's best validation (``test_loss``, ``test_accuracy``),
    under a learning rule other than bptt its alignment with BPTT at the last measured step
    (``alignment_cosine``, ...), the seeds that solved the task (with the exact binomial interval), and the final
    loss against the first grid point's for the same cell (Welch's t-test and a permutation test:
    `rnn_jax.statistics.compare`)."""
    rows = []
    base = {cell: record["final_eval_loss"]["per_seed"] for cell, record in points[0][1]["cells"].items()}
    for point, results in points:
        last = str(max(0, results["config"]["steps"] - 1))
        for cell, record in results["cells"].items():
            statuses = list(record["status"].values())
            solved = record.get("solved", {})
            rows.append(
                {
                    **point,
                    "cell": cell,
                    **_stat_columns("final_eval_loss", record["final_eval_loss"]),
                    "solved": solved.get("solved", float("nan")),
                    "solved_low": solved.get("interval", [float("nan")] * 2)[0],
                    "solved_high": solved.get("interval", [float("nan")] * 2)[1],
                    **{
                        f"{k}_vs_first": v
                        for k, v in compare(record["final_eval_loss"]["per_seed"], base.get(cell, [])).items()
                        if k in ("p_welch", "p_permutation")
                    },
                    **_stat_columns("decay_rate_init", record["decay_rate"].get("0")),
                    **_stat_columns("decay_rate_trained", record["decay_rate"].get(last)),
                    **_alignment_columns(record),
                    **(
                        _stat_columns("final_eval_accuracy", record["final_eval_accuracy"])
                        if "final_eval_accuracy" in record
                        else {}
                    ),
                    **{
                        k: v
                        for metric, summary in record.get("test_at_best_validation", {}).items()
                        if isinstance(summary, dict)
                        for k, v in _stat_columns(f"test_{metric}", summary).items()
                    },
                    "diverged": statuses.count("diverged"),
                    "seeds": len(statuses),
                    "baseline": results["task"]["baseline"],
                }
            )
    return rows
