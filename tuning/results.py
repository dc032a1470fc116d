"""What a search leaves behind: a trials table (``trials.csv``), the objective per trial
(``objective.png``) and the best trial as a fine-tuning config (``best.yaml``).

Example:
    >>> result = tuning.search("digits", {"backbone": ["resnet_tiny", "mlp_small"]}, max_trials=3)
    >>> print(result.table())
    >>> result.best_config["model"]
"""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keras_tuner.engine.trial import Trial
from matplotlib.figure import Figure

from zoo.config import RunConfig
from zoo.files import atomic_save, atomic_write
from zoo.text import table


def row(trial: Trial) -> dict[str, Any]:
    """One trial as a table row: id, status, score, hyperparameters (None where inactive), metrics, error
    (the last line of the trial's traceback)."""
    hp = trial.hyperparameters
    values = {p.name: hp.values.get(p.name) for p in hp.space if not p.name.startswith("tuner/")}
    if "tuner/epochs" in hp.values:  # Hyperband's budget for the trial, and the trial it goes on from
        values["epochs"] = hp.values["tuner/epochs"]
        values["continues"] = hp.values.get("tuner/trial_id")
    metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
    error = trial.message.strip().splitlines()[-1] if trial.message else ""
    return {"trial": trial.trial_id, "status": trial.status, "score": trial.score, **values, **metrics,
            "error": error}


def _columns(rows: list[dict]) -> list[str]:
    columns = {}
    for r in rows:
        columns.update(dict.fromkeys(r))
    columns.pop("error", None)
    return [*columns, "error"] if rows else []


def format_table(rows: list[dict]) -> str:
    """Rows as an aligned text table (floats to 4 significant digits, None as empty)."""
    columns = _columns(rows)
    return table([[r.get(c) for c in columns] for r in rows], columns) if columns else ""


def write_csv(rows: list[dict], path: Path) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=_columns(rows))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def plot(rows: list[dict], objective: str, direction: str, path: Path) -> None:
    """Each completed trial's score, and the best so far."""
    fig = Figure(figsize=(6, 3.5))  # no pyplot: the caller's matplotlib backend stays as it is
    ax = fig.subplots()
    done = [(i, r["score"]) for i, r in enumerate(rows) if r["status"] == "COMPLETED" and _finite(r["score"])]
    if done:
        x, y = zip(*done)
        pick = max if direction == "max" else min
        best = [pick(y[: k + 1]) for k in range(len(y))]
        ax.plot(x, y, "o", label="trial")
        ax.step(x, best, where="post", label="best so far")
        ax.legend()
    failed = [i for i, r in enumerate(rows) if r["status"] == "FAILED"]
    for i in failed:
        ax.axvline(i, color="red", alpha=0.3, linewidth=1)
    ax.set_xlabel("trial" + (" (red: failed)" if failed else ""))
    ax.set_ylabel(objective)
    fig.tight_layout()
    atomic_save(path, lambda tmp: fig.savefig(tmp, dpi=100))


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@dataclass
class SearchResult:
    """A search's trials (table rows), its best trial as a fine-tuning config, and where it wrote them.

    On a distributed worker, ``trials`` are the trials it ran, without scores (the chief keeps those),
    and nothing is written.
    """

    trials: list[dict]
    best_config: dict | None
    objective: str
    directory: str | None = None
    files: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """The trials as an aligned text table."""
        return format_table(self.trials)


def write(trials: Iterable[Trial], best_config: dict | None, objective: str, direction: str,
          directory: Path) -> SearchResult:
    """Write trials.csv, objective.png and (if a trial completed) best.yaml under ``directory``."""
    rows = [row(t) for t in sorted(trials, key=lambda t: int(t.trial_id))]
    files = {"trials": directory / "trials.csv", "plot": directory / "objective.png"}
    write_csv(rows, files["trials"])
    plot(rows, objective, direction, files["plot"])
    if best_config is not None:
        files["best"] = directory / "best.yaml"
        # every option, as a run's config.yaml: `keras-zoo finetune --config best.yaml` retrains the trial
        atomic_write(files["best"], RunConfig.from_dict(best_config).to_yaml())
    return SearchResult(rows, best_config, objective, str(directory), {k: str(v) for k, v in files.items()})
