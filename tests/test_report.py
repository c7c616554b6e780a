"""The terminal report: a bar on a terminal, plain lines elsewhere, and a final table."""

import io

from rich.console import Console

from dlrun.reporting.terminal import EpochProgress, Report


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120), buffer


def test_a_terminal_gets_a_progress_bar_with_loss_and_throughput():
    screen, buffer = console(terminal=True)
    report = Report("auto", console=screen)
    assert report.progress_mode == "bar"
    with report.epoch_progress(1, 3, steps=10) as bar:
        for _ in range(10):
            bar.advance(32)
        bar.metrics({"loss": 0.5, "acc": 0.75})
        bar.bar.refresh()
    out = buffer.getvalue()
    assert "epoch 1/3" in out and "loss 0.5000" in out and "samples/s" in out


def test_a_log_gets_plain_lines_for_a_long_epoch(monkeypatch):
    monkeypatch.setattr(EpochProgress, "LINE_SECONDS", 0.0)
    screen, buffer = console(terminal=False)
    report = Report("auto", console=screen)
    assert report.progress_mode == "lines"
    with report.epoch_progress(2, 3, steps=100) as progress:
        for step in range(100):
            progress.advance(10)
            if step % 10 == 9:
                progress.metrics({"loss": 0.25, "acc": None})
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert 9 <= len(lines) <= 11 and all(line.startswith("  epoch 2/3 step") for line in lines)
    assert "\x1b[" not in buffer.getvalue()  # no terminal escape codes in a log


def test_a_six_second_epoch_piped_to_a_log_gets_a_line_about_every_second(monkeypatch):
    """844 steps in 6 s (MNIST at batch 64): about six lines, none closer than a second apart."""
    clock = iter(step * 6.0 / 1000 for step in range(100_000))
    monkeypatch.setattr("dlrun.reporting.terminal.time.perf_counter", lambda: next(clock))
    screen, buffer = console(terminal=False)
    with Report("lines", console=screen).epoch_progress(1, 1, steps=844) as progress:
        for _ in range(844):
            progress.advance(64)
            progress.metrics({"loss": 0.25, "acc": 0.9})
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert 4 <= len(lines) <= 7, lines
    assert all(line.startswith("  epoch 1/1 step") for line in lines)


def test_progress_off_prints_nothing_during_an_epoch():
    screen, buffer = console(terminal=True)
    with Report("off", console=screen).epoch_progress(1, 1, steps=5) as progress:
        for _ in range(5):
            progress.advance(1)
        progress.metrics({"loss": 1.0, "acc": 0.5})
    assert buffer.getvalue() == ""


def test_epoch_summary_and_results(tmp_path):
    screen, buffer = console(terminal=False)
    report = Report("lines", console=screen)
    report.epoch_summary(
        3, 10, {"loss": 0.1, "acc": 0.9}, {"loss": 0.2, "acc": 0.85}, 1e-3, 2.0, 1000, best=True
    )
    results = {
        "monitor": "val/acc",
        "best_value": 0.86,
        "best_epoch": 3,
        "test": {"loss": 0.3, "acc": 0.85},
        "epochs": 10,
        "steps": 1234,
        "seconds": 20.0,
        "per_class_acc": {"test": {"cat": 0.8, "dog": 0.9}},
    }
    report.results(results, "test", ["cat", "dog"], tmp_path)
    out = buffer.getvalue()
    assert (
        "epoch  3/10 | train loss 0.1000 acc 90.00% | val loss 0.2000 acc 85.00%" in out and "* best" in out
    )
    assert "500 samples/s" in out and "tensorboard --logdir" in out
    assert "best val/acc" in out and "86.00% (epoch 3)" in out and "test acc" in out and "1,234" in out
    assert "per-class" in out and "90.0%" in out


def test_an_80_column_terminal_breaks_the_epoch_line_between_parts_and_never_a_path():
    buffer = io.StringIO()
    report = Report("auto", console=Console(file=buffer, force_terminal=True, width=80))
    train, val = {"loss": 0.0001, "acc": 1.0}, {"loss": 0.0957, "acc": 0.9444}
    report.epoch_summary(136, 143, train, val, lr=1e-3, seconds=0.02, samples=112, best=False)
    lines = buffer.getvalue().splitlines()
    assert lines == [
        "epoch 136/143 | train loss 0.0001 acc 100.00% | val loss 0.0957 acc 94.44%",
        "  lr 1.00e-03 | 0.0 s, 5,600 samples/s",
    ]
    folder = "runs/2026-11-24/10-48-44-525922_wine_mlp/" + "x" * 40
    report.line(f"tensorboard: tensorboard --logdir runs   (this run only: tensorboard --logdir {folder})")
    assert f"--logdir {folder})" in buffer.getvalue()  # the terminal folds it: copied whole


def test_the_final_score_shows_its_progress_in_a_log_and_on_a_terminal(monkeypatch):
    monkeypatch.setattr(EpochProgress, "LINE_SECONDS", 0.0)
    screen, buffer = console(terminal=False)
    with Report("lines", console=screen).pass_progress("scoring best.pt on test", steps=40) as progress:
        for _ in range(40):
            progress.advance(250)  # no figures come during a scoring pass
    lines = [line for line in buffer.getvalue().splitlines() if line.strip()]
    assert 3 <= len(lines) <= 11, lines
    assert lines[-1].startswith("  scoring best.pt on test step") and "samples" in lines[-1]
    screen, buffer = console(terminal=True)
    with Report("auto", console=screen).pass_progress("scoring best.pt on test", steps=4) as bar:
        for _ in range(4):
            bar.advance(250)
        bar.bar.refresh()
    assert "scoring best.pt on test" in buffer.getvalue()
