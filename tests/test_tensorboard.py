"""What a run shows in TensorBoard, read back from its event files with TensorBoard's reader."""

import pytest

from tests.helpers import FEW_STEPS, hparams, read_events, small_mlp_on


@pytest.fixture(scope="module")
def classification_events(tmp_path_factory, data_root):
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
    return read_events(folder)


def test_classification_scalars(classification_events):
    tags = classification_events.Tags()["scalars"]
    for tag in (
        "train/loss",
        "train/acc",
        "val/loss",
        "val/acc",
        "lr",
        "time/epoch_seconds",
        "time/samples_per_second",
    ):
        assert tag in tags, tag
    val_acc = [event.value for event in classification_events.Scalars("val/acc")]
    assert len(val_acc) == 2 and all(0.0 <= value <= 1.0 for value in val_acc)
    train_steps = [event.step for event in classification_events.Scalars("train/loss")]
    assert train_steps == [2, 4, 6, 7, 8, 10, 12, 14]  # every 2 steps and at each epoch's end (7 steps)


def test_graph_input_grid_and_config_text(classification_events):
    assert classification_events.Tags()["graph"]
    graph = classification_events.Graph()
    assert any("Linear" in node.op or "linear" in node.name.lower() for node in graph.node)
    image = classification_events.Images("inputs")[0]
    assert image.width > 28 and image.height > 28
    assert "config/text_summary" in classification_events.Tags()["tensors"]


def test_one_pr_curve_per_class_at_each_validation(classification_events):
    curves = [tag for tag in classification_events.Tags()["tensors"] if tag.startswith("pr/")]
    assert len(curves) == 10
    assert len(classification_events.Tensors(curves[0])) == 2  # one per epoch


def test_confusion_matrix_as_image_and_table(classification_events):
    assert "val/confusion_matrix" in classification_events.Tags()["images"]
    assert "val/confusion_matrix/text_summary" in classification_events.Tags()["tensors"]


def test_hparams_row_with_real_final_metrics(classification_events):
    values, metrics = hparams(classification_events)
    assert values["model.hidden_sizes"] == "[32]" and values["choice/model"] == "mlp"
    assert values["model.channels"] == "-"  # a cnn setting: the same columns in every run
    assert set(metrics) == {"hparam/val_acc_best", "hparam/test_loss", "hparam/test_acc", "hparam/epochs"}
    best = classification_events.Scalars("hparam/val_acc_best")[0].value
    assert best == pytest.approx(max(e.value for e in classification_events.Scalars("val/acc")))
    assert classification_events.Scalars("hparam/epochs")[0].value == 2


def test_every_run_has_the_same_hparam_keys(dlrun, data_root):
    keys = []
    for model in ("mlp", "cnn"):
        result = dlrun(
            "dataset=mnist",
            f"dataset.root={data_root}",
            "dataset.download=false",
            f"model={model}",
            *FEW_STEPS,
        )
        assert result.code == 0, result.err
        keys.append(set(hparams(result.events())[0]))
    assert keys[0] == keys[1]


def test_an_autoencoder_shows_reconstructions_and_mse(dlrun, data_root):
    result = dlrun(
        "experiment=mnist_conv_autoencoder", f"dataset.root={data_root}", "dataset.download=false", *FEW_STEPS
    )
    assert result.code == 0, result.err
    events = result.events()
    assert "val/mse" in events.Tags()["scalars"] and "val/acc" not in events.Tags()["scalars"]
    assert {"inputs", "val/reconstructions"} <= set(events.Tags()["images"])
    assert not [tag for tag in events.Tags()["tensors"] if tag.startswith("pr/")]
    _, metrics = hparams(events)
    assert "hparam/val_mse_best" in metrics and "hparam/test_mse" in metrics


def test_a_names_run_tags_pr_curves_with_the_languages(dlrun, data_root):
    result = dlrun("experiment=names_char_rnn", f"dataset.root={data_root}", *FEW_STEPS)
    assert result.code == 0, result.err
    events = result.events()
    assert {"pr/English", "pr/French", "pr/Japanese"} <= set(events.Tags()["tensors"])
    assert events.Tags()["graph"]
    assert "inputs" not in events.Tags()["images"]  # names are not images


def test_logging_switches(dlrun):
    off = dlrun("logger=none", *FEW_STEPS)
    assert off.code == 0 and not list(off.run_dir.glob("events.out.tfevents.*"))
    some = dlrun("logger.pr_curves=false", "logger.histograms=true", *FEW_STEPS)
    tags = some.events().Tags()
    assert not [tag for tag in tags["tensors"] if tag.startswith("pr/")]
    assert (
        "weights/layers.1.weight" in tags["histograms"] and "gradients/layers.1.weight" in tags["histograms"]
    )


def test_a_model_that_cannot_be_traced_warns_and_trains_on(dlrun, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def broken(self, *args, **kwargs):
        raise RuntimeError("tracer failed")

    monkeypatch.setattr(SummaryWriter, "add_graph", broken)
    result = dlrun(*FEW_STEPS)
    assert result.code == 0
    assert "warning: the model graph could not be traced" in result.out
