"""Augmentation by setting: MixUp / CutMix of training batches (soft targets, honest training
accuracy), an automatic policy and random erasing per image; each resumes exactly."""

import pytest
import torch
from torch import nn

from dlrun.data.batches import BatchAugment
from dlrun.data.facts import Facts
from dlrun.data.mixing import Mixing, mixing_for
from dlrun.errors import ConfigError
from dlrun.models.losses import NLLLoss
from tests import datasets
from tests.helpers import FEW_STEPS, SMALL_IMAGES, continued, small_mlp_on
from tests.test_outsiders_code import habits_project

MIXED = [
    "dataset.augment.mixup_alpha=0.2",
    "dataset.augment.cutmix_alpha=1.0",
    "dataset.augment.auto=trivialaugment",
    "dataset.augment.random_erasing=0.5",
    "dataset.augment.crop_padding=2",
    "trainer.batch_size=32",
    "trainer.deterministic=true",
]


def test_mixup_cutmix_a_policy_and_erasing_train_are_said_and_resume_bitwise(dlrun, data_root):
    settings = [*small_mlp_on(data_root), *MIXED]
    straight = dlrun(*settings, "trainer.epochs=2")
    assert straight.code == 0, straight.err
    assert (
        "training batches mixed (MixUp alpha=0.2 or CutMix alpha=1 per batch): train acc counts the "
        "label with the larger share of each mixed image" in straight.out
    )
    assert "auto: trivialaugment" in (straight.run_dir / "config.yaml").read_text()
    resumed = continued(dlrun, settings, stopped_after=1, epochs=2)
    assert resumed.code == 0, resumed.err
    a, b = straight.checkpoint("last.pt")["model"], resumed.checkpoint("last.pt")["model"]
    assert all(torch.equal(a[key], b[key]) for key in a)
    plain = dlrun(*small_mlp_on(data_root), *MIXED[-2:], "trainer.epochs=2").checkpoint("last.pt")["model"]
    assert not all(torch.equal(a[key], plain[key]) for key in a)  # the augmentation took effect
    history = straight.metrics["history"]
    assert all(0 <= row["train_acc"] <= 1 for row in history)  # measured, against hard labels


def test_an_image_folder_read_by_workers_is_mixed_too(dlrun, tmp_path):
    datasets.write_image_folder(tmp_path / "bugs", per_class=6)
    result = dlrun(
        "dataset=imagefolder",
        f"dataset.root={tmp_path / 'bugs'}",
        "dataset.augment.cutmix_alpha=1.0",
        *SMALL_IMAGES,
        *FEW_STEPS,
    )
    assert result.code == 0, result.err
    assert "training batches mixed (CutMix alpha=1)" in result.out


def test_mixing_is_refused_where_it_cannot_work(dlrun, data_root, tmp_path, monkeypatch):
    autoencoder = dlrun(
        "experiment=mnist_autoencoder",
        f"dataset.root={data_root}",
        "dataset.download=false",
        "dataset.augment.mixup_alpha=0.2",
        "trainer=debug",
    )
    assert autoencoder.code == 2 and (
        "dataset.augment.mixup_alpha mixes images for classification; this run's data are image for "
        "reconstruction: leave dataset.augment.mixup_alpha at 0" in autoencoder.err
    )
    habits_project(tmp_path, monkeypatch, "mixed")  # a focal loss that indexes by class numbers
    focal = dlrun(*small_mlp_on(data_root), "loss=focal", "dataset.augment.cutmix_alpha=1")
    assert focal.code == 2 and (
        "dataset.augment.cutmix_alpha trains on class probabilities, and "
        "loss._target_=habits_mixed.focal does not take them as targets: use loss=cross_entropy" in focal.err
    )
    policy = dlrun(*small_mlp_on(data_root), "dataset.augment.auto=trivial")
    assert policy.code == 2 and (
        "dataset.augment.auto=trivial is not valid; valid: trivialaugment, randaugment, autoaugment"
        in policy.err
    )


def test_mixed_labels_are_probabilities_and_the_larger_share_is_the_label():
    torch.manual_seed(0)
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 4, 4).clone()
    labels = torch.tensor([0, 1, 2, 3])
    mixed, probabilities, hard = Mixing(mixup_alpha=1.0, cutmix_alpha=0.0, num_classes=5)(images, labels)
    assert probabilities.shape == (4, 5) and torch.allclose(probabilities.sum(1), torch.ones(4))
    assert torch.equal(hard, probabilities.argmax(1)) and not torch.equal(mixed, images)
    share = probabilities[0, 0]  # image 0 mixed with image 3 (rolled by one): its share of itself
    assert torch.allclose(mixed[0], share * images[0] + (1 - share) * images[3])


def test_dlruns_losses_take_class_probabilities():
    outputs = torch.randn(3, 4)
    probabilities = torch.softmax(torch.randn(3, 4), 1)
    assert torch.allclose(NLLLoss()(outputs, probabilities), nn.CrossEntropyLoss()(outputs, probabilities))
    facts = Facts("table", "classification", [4], 4, list("abcd"))
    with pytest.raises(ConfigError, match="mixes images for classification; this run's data are table"):
        mixing_for({"mixup_alpha": 0.2}, facts, "classification", nn.CrossEntropyLoss(), "ce")
    assert mixing_for({"mixup_alpha": 0.0}, facts, "classification", nn.CrossEntropyLoss(), "ce") is None


def test_a_policy_and_erasing_change_each_image_as_torch_seeds_them():
    images = torch.full((8, 1, 12, 12), 200, dtype=torch.uint8)
    augment = BatchAugment.of({"random_erasing": 1.0, "mixup_alpha": 0.2})
    augment.fill([0.5])
    torch.manual_seed(3)
    erased = augment(images, {})
    assert erased.dtype == torch.uint8 and erased.shape == images.shape
    assert all((image == 128).any() for image in erased)  # each image has a mean-grey rectangle
    torch.manual_seed(3)
    assert torch.equal(augment(images, {}), erased)
    policy = BatchAugment.of({"auto": "autoaugment"})
    varied = policy(torch.randint(0, 256, (16, 3, 12, 12), dtype=torch.uint8), {})
    assert varied.dtype == torch.uint8 and varied.shape == (16, 3, 12, 12)
    assert BatchAugment.of({"crop_padding": 0, "hflip": False, "cutmix_alpha": 1.0}) is None
