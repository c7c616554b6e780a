"""Runs of the `dlrun` command on tiny real-format data: what a run writes, and what it learns."""

import math
import re

import pytest
import torch

from tests.helpers import FEW_STEPS, continued, small_mlp_on


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_image_run_writes_the_run_folder(dlrun, data_root, dataset):
    result = dlrun(
        *small_mlp_on(data_root, dataset),
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.log_every_n_steps=2",
    )
    assert result.code == 0, result.err
    run = result.run_dir
    for name in (
        ".hydra/config.yaml",
        ".hydra/overrides.yaml",
        "dlrun.log",
        "config.yaml",
        "metrics.json",
        "checkpoints/last.pt",
        "checkpoints/best.pt",
    ):
        assert (run / name).is_file(), name
    assert list(run.glob("events.out.tfevents.*"))

    metrics = result.metrics
    for key in ("best_value", "best_epoch", "test", "epochs", "steps", "seconds", "per_class_acc"):
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["steps"] == 2 * 7  # 216 training images / 32
    assert 0.0 <= metrics["test"]["acc"] <= 1.0
    assert len(metrics["per_class_acc"]["test"]) == 10
    assert [row["epoch"] for row in metrics["history"]] == [1, 2]
    assert all(row["seconds"] > 0 and "val/acc" in row and "train_loss" in row for row in metrics["history"])

    checkpoint = result.checkpoint("last.pt")  # loaded with weights_only=True
    for key in ("model", "optimizer", "scheduler", "epoch", "global_step", "config", "facts"):
        assert key in checkpoint or key in checkpoint["position"], key
    assert checkpoint["position"]["epoch"] == 2 and checkpoint["position"]["global_step"] == 14
    assert checkpoint["config"]["dataset"]["name"] == dataset and checkpoint["version"] == 2
    assert checkpoint["facts"]["input_shape"] == [1, 28, 28] and checkpoint["facts"]["num_classes"] == 10

    scalars = result.events().Tags()["scalars"]
    for tag in ("train/loss", "train/acc", "val/loss", "val/acc", "train/lr"):
        assert tag in scalars, tag
    log = (run / "dlrun.log").read_text()
    assert "epoch 2/2" in log and "test acc" in log


def test_the_data_facts_are_in_the_saved_config(dlrun, data_root):
    result = dlrun(
        "dataset=mnist", f"dataset.root={data_root}", "dataset.download=false", "model=linear", *FEW_STEPS
    )
    assert result.code == 0, result.err
    saved = (result.run_dir / "config.yaml").read_text()
    assert "num_classes: 10" in saved and "input_shape:" in saved


def test_an_mnist_mlp_learns_the_tiny_patterns(dlrun, data_root):
    result = dlrun(
        "dataset=mnist",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "model=mlp",
        "model.hidden_sizes=[64]",
        "trainer.epochs=6",
        "trainer.batch_size=16",
    )
    assert result.code == 0, result.err
    assert result.metrics["test"]["acc"] >= 0.9


@pytest.mark.parametrize("loss", ["cross_entropy", "nll", "mse", "bce_with_logits"])
def test_every_loss_trains(dlrun, loss):
    result = dlrun(f"loss={loss}", "trainer.epochs=3")
    assert result.code == 0, result.err
    assert math.isfinite(result.metrics["test"]["loss"])
    assert result.metrics["best_value"] > 0.5  # three classes: better than chance


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw", "rmsprop"])
def test_every_optimizer_trains(dlrun, optimizer):
    result = dlrun(f"optimizer={optimizer}", "optimizer.lr=0.01", "trainer.epochs=3")
    assert result.code == 0, result.err
    assert result.checkpoint()["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)
    assert result.metrics["best_value"] > 0.5


# the learning rate each scheduler must leave after 2 epochs of 2 steps, from lr 0.1
@pytest.mark.parametrize(
    "scheduler,settings,expected",
    [
        ("none", [], 0.1),
        ("step", ["scheduler.step_size=1", "scheduler.gamma=0.5"], 0.025),
        ("multistep", ["scheduler.milestones=[1]", "scheduler.gamma=0.1"], 0.01),
        ("exponential", ["scheduler.gamma=0.5"], 0.025),
        ("cosine", [], 0.0),
        (
            "plateau",
            [
                "scheduler.patience=0",
                "scheduler.factor=0.5",
                "trainer.monitor=val/loss",
                "scheduler.threshold=10",
            ],
            0.025,
        ),  # "improving" by 10: never, so it halves twice
    ],
)
def test_every_scheduler_sets_the_learning_rate(dlrun, scheduler, settings, expected):
    result = dlrun(
        f"scheduler={scheduler}",
        *settings,
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "trainer.epochs=2",
        "trainer.batch_size=64",
        "trainer.limit_train_batches=2",
    )
    assert result.code == 0, result.err
    lr = result.checkpoint()["optimizer"]["param_groups"][0]["lr"]
    assert lr == pytest.approx(expected, abs=1e-9)
    lrs = [event.value for event in result.events().Scalars("train/lr")]
    assert lrs[0] == pytest.approx(0.1) or scheduler == "onecycle"


def test_onecycle_warms_up_then_anneals_every_step(dlrun):
    result = dlrun(
        "scheduler=onecycle",
        "optimizer=sgd",
        "optimizer.lr=0.1",
        "trainer.epochs=3",
        "trainer.batch_size=16",
        "trainer.limit_train_batches=4",
        "trainer.log_every_n_steps=1",
    )
    assert result.code == 0, result.err
    lrs = [event.value for event in result.events().Scalars("train/lr")]
    peak = max(lrs)
    assert peak == pytest.approx(0.1, rel=0.05)
    assert lrs[0] < peak / 2 and lrs[-1] < peak / 100


def test_limits_cap_the_batches(dlrun):
    result = dlrun("trainer.epochs=3", "trainer.batch_size=16", "trainer.limit_train_batches=2")
    assert result.code == 0, result.err
    assert result.metrics["steps"] == 6


def test_early_stopping_ends_a_run_that_does_not_improve(dlrun):
    result = dlrun(
        "trainer.epochs=8",
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.patience=2",
        "trainer.early_stopping.min_delta=10",
    )  # nothing improves by 10: stops at epoch 3
    assert result.code == 0, result.err
    assert result.metrics["epochs"] == 3
    assert "early stopping" in result.out


def test_the_same_seed_gives_the_same_weights(dlrun):
    first = dlrun("trainer.epochs=2", "trainer.deterministic=true")
    second = dlrun("trainer.epochs=2", "trainer.deterministic=true")
    other = dlrun("trainer.epochs=2", "trainer.deterministic=true", "seed=7")
    a, b, c = (r.checkpoint()["model"] for r in (first, second, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_the_validation_split_follows_the_seed(csv_file):
    from dlrun.data import LoadOptions
    from dlrun.data.tabular import load_csv

    def val_rows(seed):
        options = LoadOptions("classification", seed, 8, 8, torch.device("cpu"))
        return load_csv(str(csv_file), options=options).val[0]

    assert torch.equal(val_rows(1), val_rows(1))
    assert not torch.equal(val_rows(1), val_rows(2))


def count_final_scorings(monkeypatch) -> list:
    """The splits the end of a run scores (a spy around the real evaluation)."""
    from dlrun.engine import experiment

    scored, real = [], experiment.evaluate
    monkeypatch.setattr(experiment, "evaluate", lambda *a, **k: scored.append(a[1]) or real(*a, **k))
    return scored


def test_without_a_test_split_the_best_weights_are_not_scored_on_val_twice(dlrun, monkeypatch):
    scored = count_final_scorings(monkeypatch)
    result = dlrun("dataset.test_fraction=0", "trainer.epochs=4", "trainer.batch_size=16")
    assert result.code == 0, result.err
    metrics = result.metrics
    assert scored == [] and "test" not in metrics
    best = metrics["history"][metrics["best_epoch"] - 1]
    assert metrics["val"]["acc"] == best["val/acc"] and metrics["val"]["loss"] == best["val/loss"]
    assert set(metrics["per_class_acc"]["val"]) == {"1", "2", "3"}


def test_a_validation_cut_short_does_not_stand_for_the_final_score(dlrun, monkeypatch):
    scored = count_final_scorings(monkeypatch)
    result = dlrun(
        "dataset.test_fraction=0", "trainer.epochs=2", "trainer.batch_size=8", "trainer.limit_val_batches=1"
    )
    assert result.code == 0, result.err
    assert len(scored) == 1  # the whole val split, once, with best.pt's weights


def test_limit_test_batches_scores_best_pt_on_that_many_batches(dlrun):
    import json

    whole = dlrun(
        "trainer=debug",
        "trainer.batch_size=4",
        "trainer.eval_batch_size=4",
        "trainer.limit_test_batches=null",
    )
    cut = dlrun(
        "trainer=debug", "trainer.batch_size=4", "trainer.eval_batch_size=4", "trainer.limit_test_batches=1"
    )
    assert whole.code == 0 and cut.code == 0, cut.err
    per_class = [
        json.loads((run.run_dir / "metrics.json").read_text())["per_class_acc"]["test"]
        for run in (whole, cut)
    ]
    assert not any(value != value for value in per_class[0].values())  # every class of the whole split
    assert sum(value != value for value in per_class[1].values()) >= 1  # 4 rows: a class left out (NaN)


ACCUMULATED = ["model=mlp", "model.hidden_sizes=[16]", "trainer.deterministic=true", "trainer.epochs=3"]


def test_accumulating_four_batches_of_8_trains_as_batches_of_32(dlrun):
    accumulated = dlrun(*ACCUMULATED, "trainer.batch_size=8", "trainer.accumulate_grad_batches=4")
    whole = dlrun(*ACCUMULATED, "trainer.batch_size=32")
    assert accumulated.code == 0 and whole.code == 0, accumulated.err
    a, b = accumulated.checkpoint("last.pt"), whole.checkpoint("last.pt")
    assert a["position"]["global_step"] == b["position"]["global_step"] == 12  # optimizer steps: 4 a epoch
    assert all(torch.allclose(a["model"][key], b["model"][key], atol=1e-5, rtol=0) for key in a["model"])
    assert "accumulate_grad_batches: 4" in (accumulated.run_dir / "config.yaml").read_text()
    assert "batch_size: 8" in (accumulated.run_dir / "config.yaml").read_text()


def test_an_accumulating_run_resumes_bitwise(dlrun):
    settings = [*ACCUMULATED[:-1], "trainer.batch_size=8", "trainer.accumulate_grad_batches=3"]
    straight = dlrun(*settings, "trainer.epochs=3")
    resumed = continued(dlrun, settings, stopped_after=2, epochs=3)
    assert resumed.code == 0, resumed.err
    a, b = straight.checkpoint("last.pt"), resumed.checkpoint("last.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])


def lr_curve(run_dir) -> list[float]:
    from tests.helpers import read_events

    return [event.value for event in read_events(run_dir).Scalars("train/lr")]


def test_a_warm_up_before_a_cosine_stepped_per_step_shows_in_tensorboard(dlrun):
    result = dlrun(
        "scheduler=cosine",
        "scheduler.interval=step",
        "scheduler.warmup_steps=8",
        "optimizer.lr=0.01",
        "trainer.batch_size=16",
        "trainer.epochs=3",
        "trainer.log_every_n_steps=1",
    )
    assert result.code == 0, result.err
    lrs = lr_curve(result.run_dir)  # 7 steps an epoch, 21 in all
    assert len(lrs) == 21 and lrs[0] == pytest.approx(0.001)  # 0.1 x the lr at the first step
    assert all(a < b for a, b in zip(lrs[:8], lrs[1:8]))  # rising over the warm-up
    assert lrs[8] == pytest.approx(0.01)  # the cosine starts after the warm-up, at the lr
    assert all(a >= b for a, b in zip(lrs[8:], lrs[9:])) and lrs[-1] < 0.001  # to eta_min over the rest


def test_a_warm_up_in_epochs_before_a_step_scheduler_resumes_exactly(dlrun):
    settings = [
        "scheduler=step",
        "scheduler.step_size=2",
        "scheduler.warmup_epochs=2",
        "scheduler.warmup_start_factor=0.5",
        "trainer.batch_size=16",
        "trainer.deterministic=true",
        "trainer.log_every_n_steps=1",
    ]
    straight = dlrun(*settings, "trainer.epochs=3")
    resumed = continued(dlrun, settings, stopped_after=1, epochs=3)
    assert straight.code == 0 and resumed.code == 0, resumed.err
    a, b = straight.checkpoint("last.pt"), resumed.checkpoint("last.pt")
    assert all(torch.equal(a["model"][key], b["model"][key]) for key in a["model"])
    lrs = lr_curve(straight.run_dir)
    assert lrs[0] == pytest.approx(0.0005) and lrs[14] == pytest.approx(0.001)  # epoch 3: the lr
    assert lrs[-1] == pytest.approx(0.001)  # step_size=2: the first drop after epoch 4


def test_a_warm_up_in_steps_and_in_epochs_at_once_is_refused(dlrun):
    result = dlrun("scheduler.warmup_steps=5", "scheduler.warmup_epochs=1", "trainer=debug")
    assert result.code == 2
    assert "scheduler.warmup_steps=5 and scheduler.warmup_epochs=1: give one of them" in result.err


def test_a_moving_average_of_the_weights_is_validated_kept_in_best_pt_and_resumed_exactly(dlrun):
    from dlrun import cli

    settings = ["trainer.ema.decay=0.9", "trainer.batch_size=16", "trainer.deterministic=true"]
    straight = dlrun(*settings, "trainer.epochs=3")
    assert straight.code == 0, straight.err
    assert "use the moving average of the weights (trainer.ema.decay=0.9)" in straight.out
    assert straight.out.count("  raw weights (not averaged): val loss") == 3
    last, best = straight.checkpoint("last.pt"), straight.checkpoint("best.pt")
    assert not torch.equal(last["model"]["layers.1.weight"], last["ema"]["model"]["layers.1.weight"])
    assert torch.equal(best["model"]["layers.1.weight"], best["ema"]["model"]["layers.1.weight"])
    assert "decay: 0.9" in (straight.run_dir / "config.yaml").read_text()
    report = straight.run_dir / "report.json"
    scored = dlrun(
        f"ckpt={straight.run_dir / 'checkpoints' / 'best.pt'}", f"output={report}", program=cli.eval_main
    )
    assert (
        scored.code == 0
        and json_of(report)["acc"] == json_of(straight.run_dir / "metrics.json")["test"]["acc"]
    )
    resumed = continued(dlrun, settings, stopped_after=2, epochs=3)
    assert resumed.code == 0, resumed.err
    again = resumed.checkpoint("last.pt")
    for part in ("model", "ema"):
        weights = last[part] if part == "model" else last[part]["model"]
        resumed_weights = again[part] if part == "model" else again[part]["model"]
        assert all(torch.equal(weights[key], resumed_weights[key]) for key in weights)


def json_of(path):
    import json

    return json.loads(path.read_text())


def test_f1_and_top5_are_measured_monitored_and_stop_early(dlrun):
    import json

    result = dlrun(
        "metrics=[top5,f1]",
        "trainer.monitor=val/f1",
        "trainer.early_stopping.enabled=true",
        "trainer.early_stopping.monitor=val/f1",
        "trainer.epochs=2",
    )
    assert result.code == 0, result.err
    # the epoch row shows the loss and the metrics chosen, in their order: acc is left out
    assert (
        "| val loss " in result.out and " top5 100.00% f1 0." in result.out
    )  # 3 classes: always in the top 5
    assert " acc " not in result.out.split("epoch 2/2")[1].split("|")[1]
    saved = json.loads((result.run_dir / "metrics.json").read_text())
    assert saved["monitor"] == "val/f1" and 0 < saved["test"]["f1"] <= 1 and saved["test"]["top5"] == 1.0
    precision, recall = saved["per_class_precision"]["test"], saved["per_class_acc"]["test"]
    assert set(precision) == set(recall) == {"1", "2", "3"} and all(0 <= v <= 1 for v in precision.values())
    wrong = dlrun("experiment=mnist_autoencoder", "metrics=[f1]", "trainer=debug")
    assert (
        wrong.code == 2
        and "metrics: f1 measures classification, and this model does reconstruction" in wrong.err
    )


def test_profile_writes_a_trace_and_shows_the_top_operators(dlrun):
    import json

    result = dlrun("trainer.profile=true", "trainer.epochs=1", "trainer.batch_size=8")  # 14 steps
    assert result.code == 0, result.err
    trace = json.loads((result.run_dir / "profile.json").read_text())
    assert any(event.get("name", "").startswith("aten::") for event in trace["traceEvents"])
    assert f"profile of steps 6-10: {result.run_dir / 'profile.json'}" in result.out
    assert "the operators by their own time" in result.out and "aten::addmm" in result.out
    assert "USDT" not in result.err and "profiler_start" not in result.out
    short = dlrun("trainer.profile=true", "trainer=debug")  # 5 steps
    assert (
        short.code == 0 and "trainer.profile records steps 6-10, and this run took 5" in short.out + short.err
    )
    assert not (dlrun("trainer=debug").run_dir / "profile.json").exists()


def test_top5_joins_accuracy_from_ten_classes_and_metrics_choose_the_epoch_row(dlrun, data_root):
    ten = dlrun(*small_mlp_on(data_root), *FEW_STEPS)  # MNIST: 10 classes
    assert ten.code == 0, ten.err
    assert re.search(r"\| val loss \S+ acc \S+% top5 \S+% \|", ten.out)
    assert "top5" in ten.metrics["test"] and "val/top5" in ten.events().Tags()["scalars"]
    three = dlrun("trainer=debug")  # wine: 3 classes, always among the top 5
    assert "top5" not in three.metrics["test"] and " top5 " not in three.out
    chosen = dlrun(*small_mlp_on(data_root), "metrics=[f1,acc]", *FEW_STEPS)
    assert re.search(r"\| val loss \S+ f1 0\.\d+ acc \S+% \|", chosen.out)  # in the order chosen
    assert "top5" not in chosen.metrics["test"]
