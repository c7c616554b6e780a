"""What a browser shows of dlrun's TensorBoard output: the screenshot tool finds the pictures
dlrun writes, and the HPARAMS charts draw a sweep's jobs (Debian's chromium, driven by
Playwright; .ci/run installs both, and these tests skip where the browser is missing)."""

import shutil
from pathlib import Path

import pytest

from tests.helpers import FEW_STEPS, small_mlp_on
from tools import tensorboard_screenshots as tool


def browser_or_skip():
    pytest.importorskip("playwright", reason='Playwright comes with pip install -e ".[dev]"')
    if not Path(tool.CHROMIUM).is_file():
        pytest.skip(f"no browser at {tool.CHROMIUM}: apt install chromium (.ci/run does)")


def test_the_screenshot_tool_saves_the_pictures_dlrun_writes(dlrun, data_root, tmp_path):
    logdir = tmp_path / "runs"
    classifier = dlrun(*small_mlp_on(data_root), *FEW_STEPS, run_dir=logdir / "classifier")
    autoencoder = dlrun(
        "experiment=mnist_autoencoder",
        f"dataset.root={data_root}",
        "dataset.download=false",
        *FEW_STEPS,
        run_dir=logdir / "autoencoder",
    )
    assert classifier.code == 0 and autoencoder.code == 0, classifier.err + autoencoder.err
    out = tmp_path / "shots"
    out.mkdir()
    with tool.tensorboard(logdir) as (base, runs):
        saved = tool.save_pictures(base, runs, out)
    assert sorted(path.name for path in saved) == [
        "autoencoder_reconstructions.png",
        "classifier_confusion_matrix.png",
    ]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in saved)


def test_the_hparams_charts_draw_every_job_of_a_sweep(dlrun, tmp_path, monkeypatch):
    """The parallel-coordinates view draws one line per job; it drew none while every run declared
    every task's columns (an empty column stops it)."""
    browser_or_skip()
    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,0.01", "model=mlp,linear", *FEW_STEPS)
    assert result.code == 0, result.err
    [sweep] = list((tmp_path / "runs" / "multirun").glob("*/*"))
    out = tmp_path / "shots"
    out.mkdir()
    with tool.tensorboard(sweep) as (base, runs):
        playwright, chromium = tool.browser()
        try:
            page = chromium.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{base}/#hparams")
            page.get_by_text("PARALLEL COORDINATES VIEW").click()
            page.wait_for_timeout(3000)
            assert tool.drawn_hparams_lines(page) == len(runs) == 4
            page.get_by_text("TABLE VIEW").click()
            page.wait_for_timeout(1000)
            assert page.get_by_text(f"{sweep.name}/0_").count() == 1  # rows named with the sweep
        finally:
            chromium.close()
            playwright.stop()
    shutil.rmtree(out)
