"""`dlrun-eval`: the metrics of a checkpoint on a split, printed and written as JSON."""

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from rich.table import Table

from dlrun import metrics
from dlrun.checkpoints.trust import Trust
from dlrun.commands.restore import criterion_for, restore, restored_data
from dlrun.data import LoadOptions
from dlrun.engine.build import build_metrics
from dlrun.engine.runtime import Precision, select_device
from dlrun.engine.train import evaluate
from dlrun.errors import DataError
from dlrun.reporting.terminal import make_console, per_class_table


def evaluate_checkpoint(cfg: DictConfig, trust: Trust) -> dict[str, Any]:
    device = select_device(cfg.device)
    restored = restore(cfg.ckpt, device, trust, data_too=True)
    facts = restored.facts
    batch_size = cfg.batch_size or restored.cfg.trainer.eval_batch_size or 4 * restored.cfg.trainer.batch_size
    options = LoadOptions(
        task=facts.task,
        seed=restored.cfg.seed,
        batch_size=batch_size,
        eval_batch_size=batch_size,
        device=device,
    )
    data = restored_data(restored, cfg.dataset, options)
    split = data.test if cfg.split == "test" else data.val
    if split is None:
        raise DataError(f"this dataset has no {cfg.split} split; use split=val")
    table, measured, _ = build_metrics(restored.cfg.get("metrics", []), facts.task, facts.num_classes)
    result = evaluate(
        restored.model,
        split,
        criterion_for(restored),
        metrics.TASKS[facts.task],
        measured,
        facts.num_classes,
        precision=Precision("32", device),
    )
    report = {
        "checkpoint": str(restored.path),
        "split": cfg.split,
        "samples": split.num_samples,
        **result.metrics,
    }
    if result.per_class_acc:
        report["per_class_acc"] = dict(zip(facts.class_names, result.per_class_acc))
        report["per_class_precision"] = dict(zip(facts.class_names, result.per_class_precision))
        report["confusion_matrix"] = {
            "classes": facts.class_names,
            "rows_true_columns_predicted": result.confusion.tolist(),
        }
    output = Path(cfg.output) if cfg.output else restored.path.with_suffix(f".{cfg.split}.json")
    output.write_text(json.dumps(report, indent=2) + "\n")
    _print(report, facts.class_names, output, table)
    return report


def _print(report: dict, class_names: list[str], output: Path, table: dict[str, metrics.Metric]) -> None:
    console = make_console()
    console.print(f"checkpoint: {report['checkpoint']}", soft_wrap=True)  # a path is copied whole
    figures = Table(title=f"{report['split']} split", show_header=False)
    figures.add_row("samples", f"{report['samples']:,}")
    for name in table:
        if name in report:
            figures.add_row(name, metrics.shown(name, report[name], table))
    console.print(figures)
    if "per_class_acc" in report:
        console.print(per_class_table(class_names, {report["split"]: list(report["per_class_acc"].values())}))
        console.print(
            _confusion_table(class_names, report["confusion_matrix"]["rows_true_columns_predicted"])
        )
    console.print(f"written to {output}", soft_wrap=True)


def _confusion_table(names: list[str], rows: list[list[int]]) -> Table:
    # columns are numbered (the rows name them), so 18 classes still fit a terminal
    table = Table(title="confusion matrix (rows: true class, columns: predicted class number)")
    table.add_column("true class")
    for index in range(len(names)):
        table.add_column(str(index), justify="right")
    for index, (name, row) in enumerate(zip(names, rows)):
        table.add_row(f"{index} {name}", *(str(count) if count else "." for count in row))
    return table
