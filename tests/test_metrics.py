"""The metrics table: each metric defined once and read everywhere, exact over any batching, and a
metric of the user's by `_target_` that joins it like dlrun's own."""

import json
import re
import sys
import textwrap

import pytest
import torch

from dlrun import cli, metrics
from dlrun.checkpoints.format import read_checkpoint, write_checkpoint
from dlrun.errors import ConfigError

BRIER = """
    def brier(outputs, labels):
        # mean squared distance between the class probabilities and the one-hot labels
        probabilities = outputs.softmax(dim=1)
        hot = probabilities.new_zeros(probabilities.shape).scatter_(1, labels[:, None], 1.0)
        return (probabilities - hot).pow(2).sum(dim=1).mean()


    def per_sample(outputs, labels):
        return (outputs.argmax(dim=1) == labels).float()


    def verdict(outputs, labels):
        return "fine"
"""
BRIER_METRIC = "metrics=[{name: brier, _target_: scores_m.brier, better: min}]"


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[tool.dlrun]\n")
    (tmp_path / "scores_m.py").write_text(textwrap.dedent(BRIER))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    return tmp_path


def test_a_metric_is_exact_over_any_batching():
    """Sums add up over batches (and processes): the accuracy of two batches is the accuracy of
    all their samples, not the mean of the two batches' accuracies."""
    acc = metrics.BUILT_IN["acc"]
    outputs = torch.tensor([[1.0, 0], [0, 1], [1, 0], [1, 0], [0, 1]])
    labels = torch.tensor([0, 1, 1, 1, 1])
    first, second = acc.sums(outputs[:2], labels[:2]), acc.sums(outputs[2:], labels[2:])
    total = tuple(a + b for a, b in zip(first, second))
    assert acc.value(total) == pytest.approx(3 / 5)  # the mean of 2/2 and 1/3 would be 0.67


def test_the_table_says_how_each_metric_reads_and_which_way_is_better():
    assert metrics.shown("val/acc", 0.883) == "88.30%" and metrics.shown("test/loss", 0.01234) == "0.0123"
    assert metrics.better_of("val/acc") == "max" and metrics.better_of("val/mse") == "min"
    assert metrics.monitored("auto", metrics.RECONSTRUCTION) == "val/mse"
    with pytest.raises(ConfigError, match="val/f2 is not a metric dlrun reports; valid: val/loss"):
        metrics.better_of("val/f2")


def test_a_users_metric_is_measured_logged_shown_and_monitored(dlrun, project):
    result = dlrun(BRIER_METRIC, "trainer.monitor=val/brier", "trainer.epochs=3", "trainer.batch_size=16")
    assert result.code == 0, result.err
    results = result.metrics
    assert results["monitor"] == "val/brier" and results["best_value"] == min(
        row["val/brier"] for row in results["history"]
    )
    assert 0 < results["test"]["brier"] < 2 and "acc" in results["test"]  # beside the task's own
    # metrics=[...] chooses the epoch row's figures: the loss and brier, as a number (acc is measured
    # all the same: it is in metrics.json)
    assert "| val loss 0." in result.out and " brier 0." in result.out and "% brier" not in result.out
    assert [event.step for event in result.events().Scalars("val/brier")] == [7, 14, 21]


def test_a_users_metric_better_when_lower_decides_best_pt_that_way(dlrun, project):
    result = dlrun(BRIER_METRIC, "trainer.monitor=val/brier", "trainer.epochs=4", "optimizer.lr=0.05")
    assert result.code == 0, result.err
    history = result.metrics["history"]
    lowest = min(range(len(history)), key=lambda index: history[index]["val/brier"])
    assert result.metrics["best_epoch"] == lowest + 1


@pytest.mark.parametrize(
    "typed,named",
    [
        ("metrics=[top7]", "metrics: 'top7' is not a metric dlrun knows; valid: acc, top5, f1, mse"),
        ("metrics=[{name: acc, _target_: scores_m.brier}]", "metrics: acc is dlrun's own metric's name"),
        (
            "metrics=[{name: brier, _target_: scores_m.brier, better: up}]",
            "metrics: brier.better=up is not valid",
        ),
        ("metrics=[{name: brier}]", "metrics: brier needs a _target_"),
        ("metrics=[{name: brier, _target_: scores_m.briar}]", "did you mean brier?"),
        (
            "trainer.monitor=val/brier",
            "trainer.monitor=val/brier is not measured by this run; valid: auto, val/loss, val/acc",
        ),
    ],
)
def test_a_metric_setting_that_cannot_work_is_one_line_before_any_data_is_read(dlrun, project, typed, named):
    result = dlrun(typed)
    assert result.code == 2 and named in result.err and result.err.count("\n") == 1, result.err


@pytest.mark.parametrize(
    "function, returned",
    [("per_sample", r"Tensor of shape \[\d+\]"), ("verdict", "str 'fine'")],
)
def test_a_metric_that_returns_something_else_than_a_number_is_named(dlrun, project, function, returned):
    result = dlrun(
        f"metrics=[{{name: m, _target_: scores_m.{function}, better: max}}]", "trainer.batch_size=16"
    )
    assert result.code == 1
    assert re.fullmatch(
        rf"dlrun: error: validating after epoch 1 \(step 7\), your metric m \(scores_m.{function}\) returned "
        rf"{returned}, not one number: it must "
        r"return the batch's mean, as a float or a tensor of one element\n",
        result.err,
    ), result.err
    assert (result.run_dir / "error.txt").read_text().startswith(result.err[len("dlrun: error: ") : -1])


def test_eval_scores_the_runs_metrics_and_a_checkpoint_never_names_one_into_import(dlrun, project, tmp_path):
    run = dlrun(BRIER_METRIC, "trainer.epochs=2")
    assert run.code == 0, run.err
    best = run.run_dir / "checkpoints" / "best.pt"
    evaluated = dlrun(f"ckpt={best}", program=cli.eval_main)  # from its project folder: allowed
    assert evaluated.code == 0, evaluated.err
    assert "brier" in json.loads(best.with_suffix(".test.json").read_text())

    state = read_checkpoint(best)
    state["config"]["metrics"] = [{"name": "pwn", "_target_": "os.system", "better": "max"}]
    write_checkpoint(
        tmp_path / "planted.pt", {k: v for k, v in state.items() if k not in ("format", "version")}
    )
    refused = dlrun(f"ckpt={tmp_path / 'planted.pt'}", program=cli.eval_main)
    assert (
        refused.code == 1 and "names metrics[0]._target_=os.system, code you have not allowed" in refused.err
    )


def test_top5_and_macro_f1_add_up_over_any_batching():
    import torch

    from dlrun.metrics import BUILT_IN

    generator = torch.Generator().manual_seed(0)
    outputs, labels = (
        torch.randn(90, 12, generator=generator),
        torch.randint(0, 12, (90,), generator=generator),
    )
    for name in ("top5", "f1"):
        metric = BUILT_IN[name]
        whole = metric.value(metric.sums(outputs, labels))
        parts = [metric.sums(o, t) for o, t in zip(outputs.split(7), labels.split(7))]
        summed = tuple(sum(values[1:], values[0]) for values in zip(*parts))
        assert metric.value(summed) == pytest.approx(whole)
    predicted = outputs.argmax(1)
    f1 = []
    for c in range(12):  # macro F1 by its definition, class by class
        tp = ((predicted == c) & (labels == c)).sum().item()
        denominator = (predicted == c).sum().item() + (labels == c).sum().item()
        if denominator:
            f1.append(2 * tp / denominator)
    assert BUILT_IN["f1"].value(BUILT_IN["f1"].sums(outputs, labels)) == pytest.approx(sum(f1) / len(f1))
    top = outputs.topk(5, dim=1).indices
    expected = sum(int(labels[i] in top[i]) for i in range(90)) / 90
    assert BUILT_IN["top5"].value(BUILT_IN["top5"].sums(outputs, labels)) == pytest.approx(expected)
