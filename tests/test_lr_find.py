"""`dlrun-lr-find`: the learning-rate range test, run as a user runs it, read back from what it
writes (the curve as CSV, picture and TensorBoard events) and from the command it suggests."""

import csv
import math
import re
import shlex

import pytest
from PIL import Image

from dlrun import cli
from dlrun.engine.lr_range import Curve
from tests.helpers import read_events


def lr_find(dlrun, *settings):
    return dlrun(*settings, program=cli.lr_find_main)


def test_the_range_test_writes_its_curve_suggests_an_lr_and_no_run(dlrun, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = lr_find(dlrun, "trainer.lr_find.steps=60")
    assert result.code == 0, result.err
    (folder,) = (tmp_path / "runs" / "lr_find").glob("*/*_wine_mlp")
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["lr_find"]  # no run folder
    assert not list(tmp_path.rglob("*.pt"))  # no checkpoint anywhere
    rows = list(csv.DictReader((folder / "lr_find.csv").open()))
    lrs = [float(row["lr"]) for row in rows]
    assert 11 < len(rows) <= 60 and lrs[0] == pytest.approx(1e-7)
    growth = (1.0 / 1e-7) ** (1 / 59)
    assert all(b / a == pytest.approx(growth) for a, b in zip(lrs, lrs[1:]))  # exponential
    assert Image.open(folder / "lr_find.png").size == (720, 440)
    events = read_events(folder)
    assert len(events.Scalars("lr_find/loss")) == len(rows) and events.Images("lr_find/curve")
    suggested = float(
        re.search(r"suggested lr (\S+) \(where the smoothed loss falls fastest\)", result.out)[1]
    )
    assert lrs[0] < suggested < lrs[-1]
    command = result.out.splitlines()[-1].strip()
    assert (
        command == f"dlrun 'optimizer.lr={suggested:.3g}'" or command == f"dlrun optimizer.lr={suggested:.3g}"
    )
    trained = dlrun(*shlex.split(command)[1:], "trainer.epochs=1")
    assert trained.code == 0, trained.err
    assert f"lr: {suggested:.3g}" in (trained.run_dir / "config.yaml").read_text()


def test_the_range_test_keeps_the_settings_typed_and_stops_once_the_loss_blows_up(dlrun, tmp_path):
    result = lr_find(
        dlrun,
        "optimizer=sgd",
        "model.hidden_sizes=[16]",
        "trainer.lr_find.end_lr=1e6",
        f"hydra.run.dir={tmp_path / 'found'}",
    )
    assert result.code == 0, result.err
    assert "stopped early:" in result.out
    rows = list(csv.DictReader((tmp_path / "found" / "lr_find.csv").open()))
    assert len(rows) < 100 and all(math.isfinite(float(row["loss"])) for row in rows)
    assert "  dlrun optimizer=sgd 'model.hidden_sizes=[16]' optimizer.lr=" in result.out


def test_the_range_test_refuses_a_sweep_and_an_empty_range_and_says_how_it_is_used(dlrun):
    usage = lr_find(dlrun, "--help")
    assert usage.code == 0 and usage.out.startswith("usage: dlrun-lr-find [the settings of a run")
    assert "trainer.lr_find.stop_factor=4" in usage.out
    swept = lr_find(dlrun, "-m", "optimizer.lr=0.1,0.01")
    assert swept.code == 2 and "dlrun-lr-find tests one run's settings: drop -m" in swept.err
    empty = lr_find(dlrun, "trainer.lr_find.start_lr=1", "trainer.lr_find.end_lr=0.1")
    assert empty.code == 2 and "trainer.lr_find.end_lr=0.1 must be above start_lr=1" in empty.err


def test_the_suggestion_is_where_the_smoothed_loss_falls_fastest():
    lrs = [10 ** (-6 + i / 10) for i in range(50)]
    smoothed = [2.0] * 20 + [2.0 - 0.05 * i for i in range(1, 6)] + [1.75 - 0.3] + [1.45] * 24
    # central differences, as numpy.gradient: steepest at point 24, whose neighbours are 1.85 and 1.45
    assert Curve(lrs, smoothed, smoothed).suggestion() == lrs[24]
    assert Curve(lrs[:12], smoothed[:12], smoothed[:12]).suggestion() is None  # too short to read
