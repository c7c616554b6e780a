"""The classic experiment presets: each reproduces its row of the design table, and runs."""

import pytest
from hydra import compose, initialize_config_dir

from dlrun import cli
from tests import datasets
from tests.helpers import FEW_STEPS, SMALL_IMAGES

PRESETS = sorted(path.stem for path in (cli.Path(cli.config_dir()) / "experiment").glob("*.yaml"))

# what each preset must set: (dataset, model and loss options, optimizer, lr, batch size, epochs)
ROWS = {
    "wine_mlp": ("wine", "mlp", "cross_entropy", "Adam", 1e-3, 16, 30),
    "mnist_mlp": ("mnist", "mlp", "cross_entropy", "Adam", 1e-3, 100, 2),
    "mnist_lenet": ("mnist", "lenet", "cross_entropy", "Adam", 5e-4, 64, 3),
    "mnist_rnn": ("mnist", "rnn", "cross_entropy", "Adam", 1e-3, 100, 2),
    "mnist_gru": ("mnist", "gru", "cross_entropy", "Adam", 1e-3, 100, 2),
    "mnist_lstm": ("mnist", "lstm", "cross_entropy", "Adam", 1e-3, 100, 2),
    "fashion_mnist_cnn": ("fashion_mnist", "cnn", "cross_entropy", "Adam", 1e-3, 64, 10),
    "cifar10_cnn": ("cifar10", "cnn", "cross_entropy", "SGD", 1e-3, 4, 6),
    "names_char_rnn": ("names", "char_rnn", "nll", "SGD", 0.1, 32, 15),
    "hymenoptera_resnet18": ("imagefolder", "resnet18", "cross_entropy", "SGD", 1e-3, 4, 20),
    "mnist_autoencoder": ("mnist", "autoencoder", "mse", "Adam", 1e-3, 64, 10),
    "mnist_conv_autoencoder": ("mnist", "conv_autoencoder", "mse", "Adam", 1e-3, 64, 10),
}


def test_every_listed_preset_exists():
    assert PRESETS == sorted(ROWS)


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_reproduces_its_experiment(preset):
    cli._register()
    with initialize_config_dir(config_dir=cli.config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
    dataset, model, loss, optimizer, lr, batch, epochs = ROWS[preset]
    choices = cfg.hydra.runtime.choices
    assert (choices.dataset, choices.model, choices.loss) == (dataset, model, loss)
    assert cfg.optimizer._target_.endswith("." + optimizer) and cfg.optimizer.lr == pytest.approx(lr)
    assert cfg.trainer.batch_size == batch and cfg.trainer.epochs == epochs
    if model in ("rnn", "gru", "lstm"):
        assert (
            cfg.model.cell == preset.split("_")[1]
            and cfg.model.num_layers == 2
            and cfg.model.hidden_size == 128
        )
    if preset == "mnist_mlp":
        assert list(cfg.model.hidden_sizes) == [1000]
    if preset == "hymenoptera_resnet18":
        assert (
            cfg.scheduler.step_size == 7
            and cfg.scheduler.gamma == pytest.approx(0.1)
            and cfg.model.pretrained
        )


@pytest.mark.parametrize("preset", PRESETS)
def test_a_preset_trains_a_few_steps_on_tiny_data(preset, dlrun, data_root, cifar_root, tmp_path):
    overrides = [f"experiment={preset}", *FEW_STEPS]
    if preset == "cifar10_cnn":
        overrides.append(f"dataset.root={cifar_root}")
    elif preset == "hymenoptera_resnet18":
        datasets.write_image_folder(tmp_path / "hymenoptera_data", per_class=4)
        overrides += [
            f"dataset.root={tmp_path}",  # the data root, as in the README: the preset adds the folder
            "model.pretrained=false",
            *SMALL_IMAGES,
        ]
    elif preset != "wine_mlp":
        overrides.append(f"dataset.root={data_root}")
    result = dlrun(
        *overrides,
        "dataset.download=false"
        if preset not in ("wine_mlp", "names_char_rnn", "hymenoptera_resnet18")
        else "seed=42",
    )
    assert result.code == 0, result.err
    metrics = result.metrics
    assert metrics["monitor"] == ("val/mse" if "autoencoder" in preset else "val/acc")
    assert metrics["steps"] == 2
