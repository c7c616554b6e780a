"""The classic experiments on the real data in ../shared/data (skipped when it is absent).

Slow (minutes on 2 CPU cores): `pytest -m slow`. The figures they check are the acceptance
figures in the README.
"""

import pytest

pytestmark = pytest.mark.slow


def run_preset(dlrun, real_data, preset, *extra):
    result = dlrun(f"experiment={preset}", f"dataset.root={real_data}", "terminal.progress=off", *extra)
    assert result.code == 0, result.err
    return result.metrics


def test_mnist_mlp_reaches_97_percent(dlrun, real_data):
    assert run_preset(dlrun, real_data, "mnist_mlp")["test"]["acc"] >= 0.97


def test_mnist_lenet_reaches_97_4_percent(dlrun, real_data):
    assert run_preset(dlrun, real_data, "mnist_lenet")["test"]["acc"] >= 0.974


def test_mnist_lstm_reaches_97_5_percent(dlrun, real_data):
    assert run_preset(dlrun, real_data, "mnist_lstm")["test"]["acc"] >= 0.975


def test_fashion_mnist_cnn_reaches_88_percent(dlrun, real_data):
    assert run_preset(dlrun, real_data, "fashion_mnist_cnn")["test"]["acc"] >= 0.88


def test_names_char_rnn_reaches_80_percent_val(dlrun, real_data):
    metrics = run_preset(dlrun, real_data, "names_char_rnn")
    assert metrics["best_value"] >= 0.80 and metrics["seconds"] < 300


def test_hymenoptera_resnet18_from_scratch_runs_end_to_end(dlrun, real_data):
    metrics = run_preset(
        dlrun,
        real_data,
        "hymenoptera_resnet18",
        "model.pretrained=false",
        "trainer.epochs=1",
    )
    assert metrics["epochs"] == 1 and 0.0 <= metrics["last_val"]["acc"] <= 1.0


def test_the_conv_autoencoder_reconstructs_better_than_the_linear_one(dlrun, real_data):
    linear = run_preset(dlrun, real_data, "mnist_autoencoder")["test"]["mse"]
    conv = run_preset(dlrun, real_data, "mnist_conv_autoencoder")["test"]["mse"]
    assert conv < 0.8 * linear
