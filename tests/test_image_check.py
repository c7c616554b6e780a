"""The image check: every split's files decoded up front in one pass, a file that passed not
decoded again while it stays the same, a broken file named on every run."""

import os
from pathlib import Path

import pytest

from dlrun.engine.build import build_data
from dlrun.errors import DataError
from tests import datasets
from tests.test_datasets import imagefolder_cfg, options


def break_in_place(path):
    """Same size, same modification time, same inode: only the bytes differ."""
    stat = os.stat(path)
    path.write_bytes(b"x" * stat.st_size)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def first_image(folder):
    return sorted(folder.iterdir())[0]


def last_image(folder):
    return sorted(folder.iterdir())[-1]


def test_one_check_names_the_broken_files_of_every_split(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    first_image(tmp_path / "train" / "ants").write_bytes(b"not a png")
    first_image(tmp_path / "val" / "bees").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"train/ants/\d+.png is not a readable image .* and 1 more"):
        build_data(imagefolder_cfg(tmp_path), options())


def test_skip_leaves_out_the_broken_files_of_every_split(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    first_image(tmp_path / "train" / "ants").write_bytes(b"not a png")
    first_image(tmp_path / "val" / "bees").write_bytes(b"not a png")
    data = build_data(imagefolder_cfg(tmp_path, bad_images="skip"), options())
    assert data.facts.skipped_files == 2
    assert len(data.val.loader.dataset) == 3  # 4 val images, one left out


def test_a_file_that_passed_is_not_decoded_again_until_it_changes(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    build_data(imagefolder_cfg(tmp_path), options())
    image = last_image(tmp_path / "val" / "bees")
    break_in_place(image)
    build_data(imagefolder_cfg(tmp_path), options())  # remembered as passed: not decoded
    os.utime(image)  # now it is a new version of the file
    with pytest.raises(DataError, match=f"{image} is not a readable image"):
        build_data(imagefolder_cfg(tmp_path), options())


def test_a_broken_file_is_named_on_every_run(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    image = first_image(tmp_path / "train" / "bees")
    image.write_bytes(b"not a png")
    for _ in range(2):
        with pytest.raises(DataError, match=f"{image} is not a readable image"):
            build_data(imagefolder_cfg(tmp_path), options())
    data = build_data(imagefolder_cfg(tmp_path, bad_images="skip"), options())
    assert data.facts.skipped_files == 1
    data = build_data(imagefolder_cfg(tmp_path, bad_images="skip"), options())
    assert data.facts.skipped_files == 1  # skipped again, never remembered as passed


def test_the_record_lives_in_the_cache_folder_and_a_damaged_one_means_a_full_check(tmp_path):
    datasets.write_image_folder(tmp_path / "data", per_class=4)
    build_data(imagefolder_cfg(tmp_path / "data"), options())
    records = list((Path(os.environ["XDG_CACHE_HOME"]) / "dlrun" / "image-checks").iterdir())
    assert len(records) == 1 and records[0].suffix == ".json"
    records[0].write_text("{not json")
    image = last_image(tmp_path / "data" / "train" / "ants")
    break_in_place(image)
    with pytest.raises(DataError, match=f"{image} is not a readable image"):
        build_data(imagefolder_cfg(tmp_path / "data"), options())


def test_a_cache_folder_that_cannot_be_written_only_means_checking_again(tmp_path, monkeypatch):
    if os.geteuid() == 0:
        cache = tmp_path / "not-a-folder"
        cache.write_text("a file where the cache folder would be")  # mkdir fails even for root
    else:
        cache = tmp_path / "read-only"
        cache.mkdir(mode=0o500)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    datasets.write_image_folder(tmp_path / "data", per_class=4)
    for _ in range(2):
        data = build_data(imagefolder_cfg(tmp_path / "data"), options())
        assert data.facts.num_classes == 2
    break_in_place(last_image(tmp_path / "data" / "val" / "bees"))
    with pytest.raises(DataError, match="is not a readable image"):
        build_data(imagefolder_cfg(tmp_path / "data"), options())


def test_an_image_changed_in_place_after_passing_is_named_when_first_read(tmp_path):
    datasets.write_image_folder(tmp_path, per_class=4)
    build_data(imagefolder_cfg(tmp_path), options())
    break_in_place(first_image(tmp_path / "val" / "ants"))  # the file read for the input shape
    with pytest.raises(DataError, match=f"cannot decode an image in {tmp_path}"):
        build_data(imagefolder_cfg(tmp_path), options())


def test_the_record_of_an_unchanged_folder_is_not_written_again(tmp_path):
    datasets.write_image_folder(tmp_path / "data", per_class=4)
    build_data(imagefolder_cfg(tmp_path / "data"), options())
    (record,) = (Path(os.environ["XDG_CACHE_HOME"]) / "dlrun" / "image-checks").iterdir()
    written = record.stat().st_mtime_ns
    os.utime(record, ns=(written - 10**9, written - 10**9))
    build_data(imagefolder_cfg(tmp_path / "data"), options())
    assert record.stat().st_mtime_ns == written - 10**9
    last_image(tmp_path / "data" / "train" / "ants").touch()  # a new version: checked and recorded
    build_data(imagefolder_cfg(tmp_path / "data"), options())
    assert record.stat().st_mtime_ns != written - 10**9
