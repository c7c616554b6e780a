"""Every model against every kind of data it fits, and a clear refusal for the pairs that cannot work."""

import urllib.error
from pathlib import Path

import pytest
import torch

from dlrun.config.checks import check_pairing, check_task_settings
from dlrun.config.schema import OPTIONS, Task, schema_of
from dlrun.data.facts import Facts
from dlrun.errors import ConfigError
from dlrun.models.resnet import resnet18_classifier

FACTS = {
    "grey 28x28": Facts(
        "image", "classification", [1, 28, 28], 10, [str(i) for i in range(10)], [0.5], [0.5]
    ),
    "colour 32x32": Facts(
        "image", "classification", [3, 32, 32], 10, [str(i) for i in range(10)], [0.5] * 3, [0.5] * 3
    ),
    "table": Facts("table", "classification", [13], 3, ["1", "2", "3"]),
    "text": Facts("text", "classification", [15], 18, [f"l{i}" for i in range(18)], vocab="abcdefghijklmnop"),
}
DEFAULTS = {"resnet18": {"pretrained": False}}


def build(option: str, facts: Facts):
    from dlrun.engine.build import build_model
    from tests.helpers import compose_config

    overrides = [f"model.{key}={value}" for key, value in DEFAULTS.get(option, {}).items()]
    return build_model(compose_config(f"model={option}", *overrides).model, facts).eval()


def declared(option: str):
    return schema_of(OPTIONS["model"][option])


def sample(facts: Facts, batch: int = 3) -> torch.Tensor:
    if facts.kind == "text":
        tokens = torch.randint(1, facts.vocab_size, (batch, facts.input_shape[0]))
        tokens[0, 4:] = 0  # a short name: padded
        return tokens
    return torch.rand(batch, *facts.input_shape)


PAIRS = [
    (option, name)
    for option in sorted(OPTIONS["model"])
    for name, facts in FACTS.items()
    if facts.kind in declared(option).reads
]


@pytest.mark.parametrize("option,data", PAIRS)
def test_a_model_gives_the_right_output_shape(option, data):
    facts = FACTS[data]
    with torch.no_grad():
        out = build(option, facts)(sample(facts))
    task = getattr(declared(option), "task", Task.CLASSIFICATION)
    expected = (3, facts.num_classes) if task == Task.CLASSIFICATION else (3, *facts.input_shape)
    assert tuple(out.shape) == expected


@pytest.mark.parametrize(
    "model,dataset",
    [
        (model, dataset)
        for model in sorted(OPTIONS["model"])
        for dataset, node in sorted(OPTIONS["dataset"].items())
        if schema_of(node).kind not in declared(model).reads
    ],
)
def test_a_pair_that_cannot_work_is_refused_with_the_models_that_fit(model, dataset):
    from tests.helpers import compose_config

    cfg = compose_config(f"model={model}", f"dataset={dataset}")
    with pytest.raises(
        ConfigError, match=rf"^model={model} cannot train on dataset={dataset}: .*models that fit"
    ):
        check_pairing(cfg, {"model": model, "dataset": dataset})


def test_the_refusal_names_user_options(dlrun):
    result = dlrun("model=lstm")  # on the default wine table
    assert result.code == 2
    assert "model=lstm cannot train on dataset=wine" in result.err and "linear, mlp" in result.err


def test_a_classification_loss_on_an_autoencoder_is_refused():
    from tests.helpers import compose_config

    cfg = compose_config("model=autoencoder", "loss=cross_entropy", "dataset=mnist")
    with pytest.raises(
        ConfigError, match="loss=cross_entropy does not fit model=autoencoder.*losses that fit: mse"
    ):
        check_task_settings(cfg, "reconstruction", {"model": "autoencoder", "loss": "cross_entropy"})


def test_autoencoders_reconstruct_in_zero_one():
    facts = FACTS["grey 28x28"]
    for arch in ("autoencoder", "conv_autoencoder"):
        out = build(arch, facts)(sample(facts))
        assert out.min() >= 0 and out.max() <= 1


def test_lenet_computes_its_flatten_size_and_refuses_tiny_images():
    for data in ("grey 28x28", "colour 32x32"):
        assert (
            build("lenet", FACTS[data]).classifier[1].in_features
            == 16 * (5 if data == "grey 28x28" else 6) ** 2
        )
    tiny = Facts("image", "classification", [1, 6, 6], 2, ["a", "b"], [0.5], [0.5])
    with pytest.raises(ConfigError, match="at least 10x10"):
        build("lenet", tiny)


def test_char_rnn_ignores_the_padding_after_a_name():
    torch.manual_seed(0)
    model = build("char_rnn", FACTS["text"])
    name = torch.tensor([[3, 5, 7, 0, 0, 0]])
    longer_padding = torch.tensor([[3, 5, 7, 0, 0, 0, 0, 0, 0, 0]])
    with torch.no_grad():
        assert torch.allclose(model(name), model(longer_padding), atol=1e-6)


def saved_resnet(path: Path) -> dict:
    from torchvision.models import resnet18

    torch.manual_seed(5)
    state = resnet18(weights=None).state_dict()
    torch.save(state, path)
    return state


def test_resnet18_loads_a_state_dict_file_and_sizes_its_head(tmp_path):
    state = saved_resnet(tmp_path / "weights.pt")
    model = resnet18_classifier([3, 64, 64], 2, pretrained=False, weights_path=str(tmp_path / "weights.pt"))
    assert torch.equal(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.fc.out_features == 2


def test_resnet18_pretrained_reads_the_torch_cache(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cache = tmp_path / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cache.parent.mkdir(parents=True)
    state = saved_resnet(cache)
    model = resnet18_classifier([3, 64, 64], 2, pretrained=True, freeze_backbone=True)
    assert torch.equal(model.conv1.weight, state["conv1.weight"])
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["fc.weight", "fc.bias"]


def test_resnet18_without_cached_weights_offline_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ConfigError, match="model.pretrained=false"):
        resnet18_classifier([3, 64, 64], 2, pretrained=True)


def test_resnet18_on_grey_images_keeps_the_rgb_filters_response(tmp_path):
    saved_resnet(tmp_path / "w.pt")
    rgb = resnet18_classifier([3, 32, 32], 2, pretrained=False, weights_path=str(tmp_path / "w.pt")).eval()
    grey = resnet18_classifier([1, 32, 32], 2, pretrained=False, weights_path=str(tmp_path / "w.pt")).eval()
    image = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rgb.conv1(image.expand(1, 3, 32, 32)), grey.conv1(image), atol=1e-5)


def test_a_weights_file_with_pickled_code_is_refused(tmp_path):
    torch.save({"conv1.weight": torch.nn.Linear(2, 2)}, tmp_path / "bad.pt")  # a module, not a tensor
    with pytest.raises(ConfigError, match="cannot read weights"):
        resnet18_classifier([3, 32, 32], 2, pretrained=False, weights_path=str(tmp_path / "bad.pt"))


def test_a_plain_list_of_layers_registered_elsewhere_is_not_refused():
    from torch import nn

    from dlrun.engine.build import layers_out_of_sight

    class Referenced(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList([nn.Linear(2, 2), nn.Linear(2, 2)])
            self.taps = [self.blocks[0]]  # a plain list pointing at registered layers

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = {"first": nn.Linear(2, 2)}

    assert layers_out_of_sight(Referenced()) == []
    assert layers_out_of_sight(Hidden()) == [("blocks", "dict")]
