"""After a sweep (`dlrun -m ...`): one row per job, printed and written beside the jobs.

A Hydra callback, so it runs in the process that launched the sweep whichever launcher ran the
jobs (in this process, joblib workers, or SLURM). It reads what each job left in its folder:
metrics.json when it finished, error.txt when it failed.
"""

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from rich.table import Table
from rich.text import Text

from dlrun import metrics
from dlrun.config.resolvers import rounded
from dlrun.config.schema import own_key
from dlrun.runs.folder import RECORD, RunFolder
from dlrun.runs.results import read_results

COLUMNS = ("job", "overrides", "status", "metric", "value", "seconds", "folder", "error")


@dataclass
class Summary:
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)
    resume_command: str = ""  # finishes the sweep: its unfinished jobs only

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != "ok"]


# the summary of the last sweep this process ran, for the command's exit code
latest: Optional[Summary] = None


class SweepSummary(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        global latest
        from dlrun.runs.commands import sweep_resume_command

        latest = Summary(Path(config.hydra.sweep.dir), resume_command=sweep_resume_command(config.hydra))
        _quiet_optuna(config.hydra)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        conclude(latest)


def _quiet_optuna(hydra: DictConfig) -> None:
    """Optuna says "A new study created in memory" in colour, and the alembic it imports logs a
    line per plugin it sets up: neither helps a user of the sweep, whose trials dlrun reports."""
    import logging

    if "optuna" not in str(hydra.sweeper.get("_target_", "")):
        return
    try:
        import optuna
    except ImportError:
        return  # the sweeper itself says what to install

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def conclude(started: Summary) -> None:
    """Fill in the rows of a sweep that has ended, write them and show them."""
    started.rows = summarize(started.folder).rows
    write(started)
    show(started)


def abandoned(started: Summary, reason: str) -> None:
    """A launcher that gave up the sweep (joblib, when one of its workers dies): each job that
    started but did not end gets an error.txt with the reason, and the summary is written."""
    for record in started.folder.glob(f"*/{RECORD}"):
        job = RunFolder(record.parent)
        if not job.finished() and not job.error.is_file():
            job.error.write_text(f"{reason}\n")
    conclude(started)


def summarize(sweep_dir: Path) -> Summary:
    jobs = [RunFolder(path.parent) for path in sweep_dir.glob(f"*/{RECORD}")]
    return Summary(sweep_dir, sorted((_row(job, sweep_dir) for job in jobs), key=lambda row: row["job"]))


def _row(job: RunFolder, sweep_dir: Path) -> dict[str, Any]:
    hydra = yaml.safe_load(job.hydra_record.read_text())["hydra"]
    row = {
        "job": hydra["job"]["num"],
        # as typed: dlrun's own keys lose the `++` the command line gave them (cli.py)
        "overrides": [
            item.removeprefix("++") if own_key(item) else item for item in hydra["overrides"]["task"]
        ],
        "status": "incomplete",
        "metric": "",
        "value": None,
        "seconds": None,
        "folder": str(job.path.relative_to(sweep_dir)),
        "error": "",
    }
    if job.finished():
        results = read_results(job)
        row.update(
            status="ok", metric=results["monitor"], value=results["best_value"], seconds=results["seconds"]
        )
    elif job.error.is_file():
        row.update(status="failed", error=job.error.read_text().strip().splitlines()[-1])
    return row


def write(summary: Summary) -> None:
    rows = [{**row, "overrides": " ".join(row["overrides"])} for row in summary.rows]
    (summary.folder / "sweep_summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    with open(summary.folder / "sweep_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def show(summary: Summary) -> None:
    """The table shows what differs between the jobs; what they share is said once above it (the
    CSV and JSON keep every job's whole command line)."""
    from dlrun.quoting import shell_path
    from dlrun.reporting.terminal import make_console

    shared = _shared_overrides(summary.rows)
    console = make_console()
    if shared:
        console.print(Text("every job: " + " ".join(rounded(item) for item in shared)), soft_wrap=True)
    console.print(_table(summary, shared))
    best = _best(summary.rows)
    if best is not None:
        chosen = " ".join(rounded(item) for item in best["overrides"] if item not in shared)
        figure = metrics.shown(best["metric"], best["value"])
        console.print(
            Text(f"best: job {best['job']} ({best['metric']} {figure})" + (chosen and f": {chosen}")),
            soft_wrap=True,
        )
    for row in summary.failed:  # why, one line each, cut to the terminal (whole in the CSV)
        reason = row["error"] or "no result, no error.txt"
        console.print(Text(f"job {row['job']} {row['status']}: {reason}"), no_wrap=True, overflow="ellipsis")
    console.print(
        f"summary: {shell_path(summary.folder / 'sweep_summary.csv')} (and .json); "
        f"compare: tensorboard --logdir {shell_path(summary.folder)}",
        markup=False,
        soft_wrap=True,
    )


def _table(summary: Summary, shared: list[str]) -> Table:
    monitored = {row["metric"] for row in summary.rows if row["metric"]}
    # one metric (the usual case) names the value column instead of filling a column of its own
    single = monitored.pop() if len(monitored) == 1 else None
    value = single or "value"
    table = Table(title=f"sweep: {len(summary.rows)} jobs, {len(summary.failed)} failed", title_style="bold")
    for column in ("job", "overrides", "status", *([] if single else ["metric"]), value, "seconds", "folder"):
        table.add_column(column, justify="right" if column in ("job", value, "seconds") else "left")
    for row in summary.rows:
        status = Text(row["status"], style=None if row["status"] == "ok" else "red")
        # Text: an override such as `transforms=[Resize]` is not rich markup
        differs = Text(" ".join(rounded(item) for item in row["overrides"] if item not in shared))
        table.add_row(
            str(row["job"]),
            differs,
            status,
            *([] if single else [row["metric"]]),
            "" if row["value"] is None else metrics.shown(row["metric"], row["value"]),
            "" if row["seconds"] is None else f"{row['seconds']:.1f}",
            Text(row["folder"]),
        )
    return table


def _best(rows: list[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The finished job with the best value, when there are two or more to choose between and they
    all report the same metric of dlrun's (which way a user's metric is better is in each job's
    config, not here)."""
    scored = [row for row in rows if row["status"] == "ok" and row["value"] is not None]
    names = {row["metric"].rsplit("/", 1)[-1] for row in scored}
    if len(scored) < 2 or len(names) != 1 or not names <= set(metrics.BUILT_IN):
        return None
    sign = 1 if metrics.better_of(scored[0]["metric"]) == "max" else -1
    return max(scored, key=lambda row: sign * row["value"])


def _shared_overrides(rows: list[dict[str, Any]]) -> list[str]:
    """The overrides every job has, in the first job's order; none for a single job (its row
    shows them all)."""
    if len(rows) < 2:
        return []
    return [item for item in rows[0]["overrides"] if all(item in row["overrides"] for row in rows)]
