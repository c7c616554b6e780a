"""metrics.json: the results of a finished run, and the one place that reads and writes it.

    task, monitor, best_value, best_epoch     the monitored validation metric at its best
    last_val                                  the last validation's metrics
    test (or val)                             best.pt's metrics on the final split
    per_class_acc                             {split: {class: accuracy}} for classification
    epochs, steps, seconds, history           how long it trained, one row per epoch
"""

import json
from typing import Any

from dlrun.runs.folder import RunFolder


def write_results(folder: RunFolder, results: dict[str, Any]) -> None:
    folder.results.write_text(json.dumps(results, indent=2, allow_nan=True) + "\n")
    folder.error.unlink(missing_ok=True)  # an earlier attempt's, now resumed to the end


def read_results(folder: RunFolder) -> dict[str, Any]:
    return json.loads(folder.results.read_text())


def final_split(results: dict[str, Any]) -> str:
    """The split best.pt was scored on at the end: test, or val when the data has no test split."""
    return "test" if "test" in results else "val"
