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

COLUMNS = ("job", "overrides", "status", "metric", "value", "seconds", "folder", "error")


@dataclass
class Summary:
    folder: Path
    rows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [row for row in self.rows if row["status"] != "ok"]


# the summary of the last sweep this process ran, for the command's exit code
latest: Optional[Summary] = None


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global latest
        latest = summarize(Path(config.hydra.sweep.dir))
        write(latest)
        show(latest)


def summarize(sweep_dir: Path) -> Summary:
    jobs = [path.parent for path in sweep_dir.glob("*/.hydra")]
    return Summary(sweep_dir, sorted((_row(job, sweep_dir) for job in jobs), key=lambda row: row["job"]))


def _row(job: Path, sweep_dir: Path) -> dict[str, Any]:
    hydra = yaml.safe_load((job / ".hydra" / "hydra.yaml").read_text())["hydra"]
    row = {
        "job": hydra["job"]["num"],
        "overrides": " ".join(hydra["overrides"]["task"]),
        "status": "incomplete",
        "metric": "",
        "value": None,
        "seconds": None,
        "folder": str(job.relative_to(sweep_dir)),
        "error": "",
    }
    if (job / "metrics.json").is_file():
        metrics = json.loads((job / "metrics.json").read_text())
        row.update(
            status="ok", metric=metrics["monitor"], value=metrics["best_value"], seconds=metrics["seconds"]
        )
    elif (job / "error.txt").is_file():
        row.update(status="failed", error=(job / "error.txt").read_text().strip().splitlines()[-1])
    return row


def write(summary: Summary) -> None:
    (summary.folder / "sweep_summary.json").write_text(json.dumps(summary.rows, indent=2) + "\n")
    with open(summary.folder / "sweep_summary.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(summary.rows)


def show(summary: Summary) -> None:
    from dlrun.reporting.terminal import make_console

    table = Table(title=f"sweep: {len(summary.rows)} jobs, {len(summary.failed)} failed", title_style="bold")
    for column in ("job", "overrides", "status", "metric", "value", "seconds", "folder"):
        table.add_column(column, justify="right" if column in ("job", "value", "seconds") else "left")
    for row in summary.rows:
        value = "" if row["value"] is None else f"{row['value']:.4f}"
        seconds = "" if row["seconds"] is None else f"{row['seconds']:.1f}"
        status = row["status"] if row["status"] == "ok" else f"[red]{row['status']}[/red]"
        table.add_row(str(row["job"]), row["overrides"], status, row["metric"], value, seconds, row["folder"])
    console = make_console()
    console.print(table)
    console.print(
        f"summary: {summary.folder / 'sweep_summary.csv'} (and .json); "
        f"compare: tensorboard --logdir {summary.folder}"
    )
