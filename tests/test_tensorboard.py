"""What a run shows in TensorBoard, read back from its event files with TensorBoard's reader."""

from pathlib import Path

import pytest

from tests.helpers import FEW_STEPS, hparams, read_events, small_mlp_on, tensorboard_server


@pytest.fixture(scope="module")
def classification_run(tmp_path_factory, data_root) -> Path:
    import sys

    from dlrun import cli

    folder = tmp_path_factory.mktemp("tb") / "run"
    argv = sys.argv
    sys.argv = [
        "dlrun",
        *small_mlp_on(data_root),
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.log_every_n_steps=2",
        f"hydra.run.dir={folder}",
    ]
    try:
        cli.main()
    finally:
        sys.argv = argv
    return folder


@pytest.fixture(scope="module")
def classification_events(classification_run):
    return read_events(classification_run)


def test_classification_scalars(classification_events):
    tags = classification_events.Tags()["scalars"]
    for tag in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "train/lr",
        "train/epoch_seconds",
        "train/samples_per_second",
    ):
        assert tag in tags, tag
    # TensorBoard's Time Series page opens the first two groups of cards: train/ and val/, which
    # hold curves only (a picture card per run would push the curves below the fold); the
    # pictures' group and the final numbers' (one point each, the HPARAMS columns) sort after them
    assert sorted({tag.split("/")[0] for tag in tags}) == ["train", "val", "whole_run"]
    pictures = {tag.split("/")[0] for tag in classification_events.Tags()["images"]}
    assert pictures == {"visuals"} and min(pictures) > "val"
    # the Images tab lists cards by tag: validation's picture before the input grid of every run
    assert sorted(classification_events.Tags()["images"]) == [
        "visuals/confusion_matrix",
        "visuals/train_inputs",
    ]
    val_acc = [event.value for event in classification_events.Scalars("val/acc")]
    assert len(val_acc) == 2 and all(0.0 <= value <= 1.0 for value in val_acc)
    train_steps = [event.step for event in classification_events.Scalars("train/loss")]
    assert train_steps == [2, 4, 6, 7, 8, 10, 12, 14]  # every 2 steps and at each epoch's end (7 steps)


def test_graph_input_grid_and_config_text(classification_events):
    assert classification_events.Tags()["graph"]
    graph = classification_events.Graph()
    assert any("Linear" in node.op or "linear" in node.name.lower() for node in graph.node)
    image = classification_events.Images("visuals/train_inputs")[0]
    assert image.width > 28 and image.height > 28
    assert "config/text_summary" in classification_events.Tags()["tensors"]


def test_one_pr_curve_per_class_at_each_validation(classification_events):
    curves = [tag for tag in classification_events.Tags()["tensors"] if tag.startswith("pr/")]
    assert len(curves) == 10
    assert {"pr/0-zero", "pr/9-nine"} <= set(curves)  # MNIST's '0 - zero', readable
    assert len(classification_events.Tensors(curves[0])) == 2  # one per epoch


def test_confusion_matrix_as_image_and_table(classification_events):
    assert "visuals/confusion_matrix" in classification_events.Tags()["images"]
    assert "val/confusion_matrix/text_summary" in classification_events.Tags()["tensors"]
    figure = classification_events.Images("visuals/confusion_matrix")[0]
    assert figure.width > 10 * 40 and figure.height > 10 * 40  # a cell per pair of classes, with labels


@pytest.mark.parametrize("classes", [10, 18])
def test_the_confusion_figure_names_the_classes_and_counts_each_cell(classes):
    import numpy as np
    import torch

    from dlrun.reporting.confusion_figure import confusion_figure

    names = [f"class {index}" for index in range(classes)]
    counts = torch.eye(classes, dtype=torch.long) * 50
    counts[0, 1] = 7

    def pixels(picture):  # [3, H, W] in [0, 1]
        return torch.from_numpy(np.asarray(picture).copy()).permute(2, 0, 1).float() / 255

    without_names = pixels(confusion_figure(counts, [""] * classes))
    figure = pixels(confusion_figure(counts, names))
    assert figure.shape[0] == 3 and 0.0 <= figure.min() and figure.max() <= 1.0
    # the names take room on both axes; the counts and the scale are drawn in ink
    assert figure.shape[1] > without_names.shape[1] and figure.shape[2] > without_names.shape[2]
    ink = (figure < 0.2).all(dim=0)
    assert ink.sum() > 20 * classes
    blank = pixels(confusion_figure(torch.zeros(classes, classes, dtype=torch.long), names))
    assert (blank < 0.2).all(dim=0).sum() < ink.sum()  # a count in a cell is written there


@pytest.mark.parametrize("classes", [2, 3, 10, 18])
def test_the_confusion_figure_title_is_not_cut(classes):
    import numpy as np
    import torch

    from dlrun.reporting.confusion_figure import MARGIN, confusion_figure

    figure = np.asarray(confusion_figure(torch.eye(classes, dtype=torch.long), ["a"] * classes))
    title_band = figure[MARGIN : MARGIN + 16]
    ink_columns = np.flatnonzero((title_band < 100).all(axis=2).any(axis=0))
    assert ink_columns.size and ink_columns[-1] < figure.shape[1] - MARGIN // 2  # white after the last word


def test_hparams_row_with_real_final_metrics_in_the_runs_own_events(
    classification_run, classification_events
):
    values, final, trial = hparams(classification_run)
    assert values["model.hidden_sizes"] == "[32]" and values["choice/model"] == "mlp"
    assert "model.channels" not in values  # only this run's settings: another model's stay empty
    assert not [key for key in values if key.endswith("_target_")]  # choice/model says it
    names = ("epochs", "test_acc", "test_loss", "test_top5", "val_acc_best")  # top5: 10 classes
    assert final == [f"whole_run/{name}" for name in names]
    best = classification_events.Scalars("whole_run/val_acc_best")[0].value
    assert best == pytest.approx(max(e.value for e in classification_events.Scalars("val/acc")))
    assert classification_events.Scalars("whole_run/epochs")[0].value == 2
    assert trial == classification_run.name  # a single run: its folder's name, time first
    assert not (classification_run / "hparams").exists()  # no sub-run: one TensorBoard run per run
    # no experiment record: TensorBoard infers the columns from all the sessions it finds
    assert "_hparams_/experiment" not in classification_events.PluginTagToContent("hparams")


def test_an_autoencoder_shows_reconstructions_and_mse(dlrun, data_root):
    result = dlrun(
        "experiment=mnist_conv_autoencoder", f"dataset.root={data_root}", "dataset.download=false", *FEW_STEPS
    )
    assert result.code == 0, result.err
    events = result.events()
    assert "val/mse" in events.Tags()["scalars"] and "val/acc" not in events.Tags()["scalars"]
    assert {"visuals/train_inputs", "visuals/reconstructions"} <= set(events.Tags()["images"])
    pictures = events.Images("visuals/reconstructions")[0]
    assert pictures.height >= 2 * 112  # inputs above reconstructions, each at least 112 pixels
    assert not [tag for tag in events.Tags()["tensors"] if tag.startswith("pr/")]
    final = hparams(result.run_dir)[1]
    assert "whole_run/val_mse_best" in final and "whole_run/test_mse" in final
    assert "whole_run/test_acc" not in final  # a column of the classifiers, empty for this run


def test_a_names_run_tags_pr_curves_with_the_languages(dlrun, data_root):
    result = dlrun("experiment=names_char_rnn", f"dataset.root={data_root}", *FEW_STEPS)
    assert result.code == 0, result.err
    events = result.events()
    assert {"pr/English", "pr/French", "pr/Japanese"} <= set(events.Tags()["tensors"])
    assert events.Tags()["graph"]
    assert "visuals/train_inputs" not in events.Tags()["images"]  # names are not images


def test_logging_switches(dlrun):
    off = dlrun("logger=none", *FEW_STEPS)
    assert off.code == 0 and not list(off.run_dir.glob("events.out.tfevents.*"))
    some = dlrun("logger.tensorboard.pr_curves=false", "logger.tensorboard.histograms=true", *FEW_STEPS)
    tags = some.events().Tags()
    assert not [tag for tag in tags["tensors"] if tag.startswith("pr/")]
    assert (
        "weights/layers.1.weight" in tags["histograms"]
        and "weights_grad/layers.1.weight" in tags["histograms"]
    )


def test_a_model_that_cannot_be_traced_warns_and_trains_on(dlrun, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise RuntimeError("tracer failed")

    monkeypatch.setattr(SummaryWriter, "add_graph", broken)
    result = dlrun(*FEW_STEPS)
    assert result.code == 0
    assert "warning: the model graph could not be traced" in result.out


def test_a_real_tensorboard_serves_every_plugin_and_one_hparams_table_for_mixed_tasks(
    dlrun, data_root, classification_run, tmp_path
):
    import shutil
    import sys

    logdir = tmp_path / "runs"
    shutil.copytree(classification_run, logdir / classification_run.name)
    autoencoder = dlrun(
        "experiment=mnist_autoencoder", f"dataset.root={data_root}", "dataset.download=false", *FEW_STEPS
    )
    assert autoencoder.code == 0, autoencoder.err
    shutil.copytree(autoencoder.run_dir, logdir / "autoencoder")
    tensorboard = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(logdir)]
    with tensorboard_server(tensorboard, tmp_path) as ask:
        active = {name for name, plugin in ask("/data/plugins_listing").items() if plugin["enabled"]}
        assert {"scalars", "images", "pr_curves", "graphs", "hparams", "text"} <= active
        assert sorted(ask("/data/runs")) == sorted(
            [classification_run.name, "autoencoder"]
        )  # N runs, N entries
        scalars = ask("/data/plugin/scalars/tags")
        assert {"train/loss", "val/acc", "whole_run/val_acc_best", "whole_run/test_acc"} <= set(
            scalars[classification_run.name]
        )
        assert "visuals/confusion_matrix" in ask("/data/plugin/images/tags")[classification_run.name]
        assert "pr/0-zero" in ask("/data/plugin/pr_curves/tags")[classification_run.name]
        assert "config/text_summary" in ask("/data/plugin/text/tags")[classification_run.name]
        assert ask("/data/plugin/graphs/info")[classification_run.name]["run_graph"]
        experiment = ask("/data/plugin/hparams/experiment", {"experimentName": ""})
        metrics = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert {
            "whole_run/val_acc_best",
            "whole_run/val_mse_best",
            "whole_run/test_mse",
        } <= metrics  # both tasks
        differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
        assert {"choice/model", "choice/loss"} <= set(differing)
        assert [info["name"] for info in experiment["hparamInfos"][: len(differing)]] == differing  # first
        names = {group["name"] for group in session_groups(ask)}
        assert names == {classification_run.name, autoencoder.run_dir.name}  # the runs' own folder names


def session_groups(ask) -> list[dict]:
    body = {
        "experimentName": "",
        "allowedStatuses": ["STATUS_SUCCESS", "STATUS_UNKNOWN"],
        "colParams": [],
        "startIndex": 0,
        "sliceSize": 100,
    }
    return ask("/data/plugin/hparams/session_groups", body)["sessionGroups"]


def test_a_sweep_served_by_tensorboard_has_a_value_for_every_column_in_every_row(
    dlrun, tmp_path, monkeypatch
):
    """The condition of the parallel-coordinates and scatter views: TensorBoard draws nothing when
    a metric column has no value in some row (as when every run declared every task's columns)."""
    import sys

    monkeypatch.chdir(tmp_path)
    result = dlrun("-m", "optimizer.lr=0.001,0.01", "model=mlp,linear", *FEW_STEPS)
    assert result.code == 0, result.err
    [sweep] = list((tmp_path / "runs" / "multirun").glob("*/*"))
    tensorboard = [str(Path(sys.executable).parent / "tensorboard"), "--logdir", str(sweep)]
    with tensorboard_server(tensorboard, tmp_path) as ask:
        assert len(ask("/data/runs")) == 4
        experiment = ask("/data/plugin/hparams/experiment", {"experimentName": ""})
        columns = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert "whole_run/val_acc_best" in columns and "whole_run/val_mse_best" not in columns
        groups = session_groups(ask)
        assert len(groups) == 4
        for group in groups:
            assert {value["name"]["tag"] for value in group["metricValues"]} == columns
        # trial names start with the sweep's time, then the job: jobs of two sweeps never share one
        assert sorted(group["name"] for group in groups) == sorted(
            f"{sweep.name}/{job.name}" for job in sweep.iterdir() if job.is_dir()
        )
        differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
        assert set(differing) == {"choice/model", "optimizer.lr"}  # what the sweep varies, shown first
