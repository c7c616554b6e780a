"""CSV logs beside metrics.json: steps.csv (each logging interval: train/loss, train/acc, train/lr)
and epochs.csv (each epoch: metrics.json's history row), plain tables for a spreadsheet or
pandas.read_csv. `logger=csv`, or with others: `logger=[tensorboard,csv]`.

A resumed run continues both files, leaving out the rows a crashed run wrote after its checkpoint.
"""

import csv
from pathlib import Path
from typing import Any, Optional

from dlrun.reporting.sinks import Epoch, Sink
from dlrun.runs.folder import RunFolder


class CSVSink(Sink):
    def __init__(self, run_folder: RunFolder):
        self.folder = run_folder
        self.steps: Optional[Table] = None
        self.epochs: Optional[Table] = None

    def start(self, resumed_at: Optional[int]) -> None:
        self.steps = Table(self.folder.steps_csv, resumed_at)
        self.epochs = Table(self.folder.epochs_csv, resumed_at)

    def logged(self, step: int, values: dict[str, float]) -> None:
        self.steps.add({"step": step, **values})

    def epoch_ended(self, epoch: Epoch) -> None:
        self.epochs.add({"epoch": epoch.epoch, "step": epoch.step, **epoch.row})

    def stopped(self) -> None:
        for table in (self.steps, self.epochs):
            if table is not None:
                table.flush()

    def close(self) -> None:
        for table in (self.steps, self.epochs):
            if table is not None:
                table.close()


class Table:
    """A CSV file written a row at a time; a row with a column the file lacks rewrites the file
    with the column added (rare: a column first seen mid-run)."""

    def __init__(self, path: Path, resumed_at: Optional[int]):
        self.path = path
        kept = (
            [row for row in _rows(path) if int(row["step"]) <= resumed_at] if resumed_at is not None else []
        )
        self.columns: list[str] = list(kept[0]) if kept else []
        self.handle = None
        self._rewrite(kept)

    def add(self, row: dict[str, Any]) -> None:
        new = [column for column in row if column not in self.columns]
        if new:
            self.columns += new
            self._rewrite(_rows(self.path))
        csv.DictWriter(self.handle, self.columns).writerow({key: _cell(value) for key, value in row.items()})

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        self.close()
        self.handle = open(self.path, "w", newline="", buffering=1)  # a line at a time: a crash keeps rows
        if self.columns:
            writer = csv.DictWriter(self.handle, self.columns)
            writer.writeheader()
            writer.writerows(rows)

    def flush(self) -> None:
        if self.handle is not None:
            self.handle.flush()

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _cell(value: Any) -> Any:
    return "" if value is None else value
