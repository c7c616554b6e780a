"""Each dataset loader on tiny files in its real on-disk format."""

import pytest
import torch
from omegaconf import OmegaConf

from dlrun.config.schema import OPTIONS
from dlrun.data import LoadOptions
from dlrun.data.names import fold_to_ascii
from dlrun.engine.build import build_data
from dlrun.errors import ConfigError, DataError
from tests import datasets
from tests.helpers import FEW_STEPS

CPU = torch.device("cpu")


def options(task="classification", seed=0):
    return LoadOptions(task=task, seed=seed, batch_size=8, eval_batch_size=16, device=CPU)


def config(loader, **values):
    """The `dataset=<loader>` option's node, as Hydra composes it, with these settings."""
    return OmegaConf.merge(OmegaConf.structured(OPTIONS["dataset"][loader]), values)


def torchvision_cfg(loader, root, **extra):
    return config(
        loader,
        root=str(root),
        download=False,
        val_fraction=0.25,
        augment={"crop_padding": 0, "hflip": False},
        **extra,
    )


def test_mnist_is_held_as_uint8_and_normalized_per_batch(data_root):
    data = build_data(torchvision_cfg("mnist", data_root), options())
    assert data.train.inputs.dtype == torch.uint8 and data.train.inputs.shape[1:] == (1, 28, 28)
    assert data.train.num_samples + data.val.num_samples == 240 and data.test.num_samples == 80
    x, y = next(iter(data.val))
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    raw = data.val.inputs[: len(x)].float() / 255
    assert torch.allclose(x, (raw - 0.1307) / 0.3081, atol=1e-5)
    assert data.facts.num_classes == 10 and data.facts.input_shape == [1, 28, 28]


def test_reconstruction_keeps_pixels_in_zero_one(data_root):
    data = build_data(torchvision_cfg("mnist", data_root), options("reconstruction"))
    x, _ = next(iter(data.val))
    assert x.min() >= 0 and x.max() <= 1 and data.facts.mean == [0.0]


def test_the_val_split_is_stratified_and_disjoint(data_root):
    data = build_data(torchvision_cfg("fashion_mnist", data_root), options())
    counts = torch.bincount(data.val.targets, minlength=10)
    assert counts.min() >= 5 and counts.max() <= 7  # 60 of 240, 6 per class
    train_rows = {tuple(row.flatten().tolist()) for row in data.train.inputs}
    assert not any(tuple(row.flatten().tolist()) in train_rows for row in data.val.inputs)


def test_augmentation_runs_on_the_training_batches_only(data_root):
    cfg = torchvision_cfg("mnist", data_root)
    cfg.augment.crop_padding, cfg.augment.hflip = 4, True
    data = build_data(cfg, options())
    assert data.train.augment is not None and data.val.augment is None
    x, _ = next(iter(data.train))
    assert x.shape[1:] == (1, 28, 28)


def test_cifar10_loads_its_pickles_channels_first(cifar_root):
    data = build_data(torchvision_cfg("cifar10", cifar_root), options())
    assert data.train.inputs.shape[1:] == (3, 32, 32) and data.train.inputs.dtype == torch.uint8
    assert data.train.num_samples + data.val.num_samples == 200 and data.test.num_samples == 40
    assert data.facts.class_names[0] == "airplane" and len(data.facts.mean) == 3
    # the pickle stores planes: pixel (0, 0) of image 0 is data[0][0], data[0][1024], data[0][2048]
    images, _ = datasets.pattern_images(40, 10, 32, 3, 15)  # test_batch's images
    assert torch.equal(data.test.inputs[0].permute(1, 2, 0), torch.from_numpy(images[0]))


def test_a_corrupt_cifar_file_is_refused_by_the_md5_check(cifar_root):
    (cifar_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        build_data(torchvision_cfg("cifar10", cifar_root), options())


def test_cifar10_trains_through_the_cli(dlrun, cifar_root):
    result = dlrun(
        "dataset=cifar10", f"dataset.root={cifar_root}", "dataset.download=false", "model=cnn", *FEW_STEPS
    )
    assert result.code == 0, result.err
    assert result.checkpoint()["facts"]["input_shape"] == [3, 32, 32]


def test_names_are_folded_to_ascii_like_the_tutorial():
    assert fold_to_ascii("Ślusàrski") == "Slusarski"
    assert fold_to_ascii("Lefèvre") == "Lefevre"
    assert fold_to_ascii(" Satō ") == "Sato"
    assert fold_to_ascii("Au-Yong") == "AuYong"  # '-' is not among the kept characters


def test_names_become_padded_ids_with_a_vocabulary_from_the_data(data_root):
    data = build_data(config("names", root=str(data_root), val_fraction=0.25, test_fraction=0.25), options())
    facts = data.facts
    assert facts.kind == "text" and facts.class_names == ["English", "French", "Japanese"]
    assert "è" not in facts.vocab and "e" in facts.vocab and facts.vocab == "".join(sorted(set(facts.vocab)))
    assert facts.input_shape == [data.train.inputs.shape[1]] == [9]  # "Kobayashi", "Yamaguchi"
    for split in (data.train, data.val, data.test):
        assert torch.bincount(split.targets, minlength=3).min() >= 4  # every language in every split
    first = data.train.inputs[0]
    length = int((first != 0).sum())
    assert (first[:length] != 0).all() and (first[length:] == 0).all()


def test_names_files_that_are_not_utf8_are_named(tmp_path):
    datasets.write_names(tmp_path)
    (tmp_path / "names" / "Greek.txt").write_bytes(b"Papadopoulos\nNikolaou\nAnto" + b"\xffnis\n")
    with pytest.raises(DataError, match="Greek.txt:3:5: byte 0xff is not UTF-8"):
        build_data(config("names", root=str(tmp_path), val_fraction=0.2, test_fraction=0.2), options())


def test_missing_names_folder_says_where_it_looked(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "names")):
        build_data(config("names", root=str(tmp_path), val_fraction=0.2, test_fraction=0.2), options())


def imagefolder_cfg(root, **extra):
    values = {
        "root": str(root),
        "val_fraction": 0.25,
        "train_transforms": [{"name": "RandomResizedCrop", "size": 32}, "RandomHorizontalFlip"],
        "val_transforms": [{"name": "Resize", "size": 36}, {"name": "CenterCrop", "size": 32}],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "num_workers": 0,
        "prefetch_factor": 2,
        "persistent_workers": False,
        "bad_images": "error",
    }
    values.update(extra)
    return config("imagefolder", **values)


def test_an_image_folder_with_train_and_val(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=8)
    data = build_data(imagefolder_cfg(tmp_path), options())
    assert data.facts.class_names == ["ants", "bees"] and data.facts.input_shape == [3, 32, 32]
    assert data.train.num_samples == 16 and data.val.num_samples == 8 and data.test is None
    x, y = next(iter(data.train))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1}


def test_an_image_folder_without_val_is_split_from_train(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=8, val=False)
    data = build_data(imagefolder_cfg(tmp_path), options())
    assert data.train.num_samples == 12 and data.val.num_samples == 4


def test_image_folder_transforms_must_be_torchvision_transforms(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    with pytest.raises(ConfigError, match="'os.system' is not a torchvision.transforms.v2 transform"):
        build_data(imagefolder_cfg(tmp_path, train_transforms=[{"name": "os.system"}]), options())


def test_images_of_different_sizes_without_a_resize_are_explained(tmp_path):
    from PIL import Image

    datasets.write_image_folder(tmp_path, per_class=4)
    Image.new("RGB", (50, 20)).save(tmp_path / "train" / "ants" / "wide.png")
    one_batch = LoadOptions(task="classification", seed=0, batch_size=32, eval_batch_size=32, device=CPU)
    data = build_data(imagefolder_cfg(tmp_path, train_transforms=[], val_transforms=[]), one_batch)
    with pytest.raises(DataError, match="differ in size"):
        list(data.train)


def test_a_corrupt_image_is_named_before_training(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    (tmp_path / "train" / "ants" / "000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=f"{tmp_path / 'train' / 'ants' / '000.png'} is not a readable image"):
        build_data(imagefolder_cfg(tmp_path), options())


def test_an_image_that_breaks_during_training_is_named(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    data = build_data(imagefolder_cfg(tmp_path), options())
    for image in (tmp_path / "train").glob("*/*.png"):  # replaced after the check, mid-run
        image.write_bytes(b"not a png")
    with pytest.raises(DataError, match="cannot decode an image"):
        list(data.train)


def test_a_csv_with_a_named_label_column_at_the_end(tmp_path):
    path = datasets.write_csv(tmp_path / "t.csv", label_first=False)
    data = build_data(
        config(
            "csv",
            path=str(path),
            label_column="kind",
            delimiter=",",
            val_fraction=0.2,
            test_fraction=0.2,
            standardize=True,
        ),
        options(),
    )
    assert data.facts.class_names == ["class0", "class1", "class2"]
    assert data.facts.feature_names == ["a", "b", "c", "d"] and data.facts.input_shape == [4]
    assert data.train.inputs.mean(0).abs().max() < 1e-5  # standardized with the train split's stats


def test_a_csv_without_header_takes_the_first_column_as_label(tmp_path):
    path = datasets.write_csv(tmp_path / "t.csv", header=False)
    path.write_text(path.read_text().replace("class", ""))
    data = build_data(
        config(
            "csv",
            path=str(path),
            label_column=0,
            delimiter=",",
            val_fraction=0.2,
            test_fraction=0.2,
            standardize=False,
        ),
        options(),
    )
    assert data.facts.class_names == ["0", "1", "2"] and data.facts.feature_names == []
