"""Every image file of an ImageFolder is decoded once before training starts, so a broken file
is named up front instead of killing a DataLoader worker in the middle of an epoch.

All splits are checked together, in one pool of worker processes. A file that decoded once is
not decoded again while it stays the same (path, size, modification time, inode): the files that
passed are remembered in ~/.cache/dlrun/image-checks (XDG_CACHE_HOME), one file per data folder,
so a second run, a sweep or a resume over the same folder starts at once. A broken file is never
remembered: it is named on every run until it is fixed."""

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

import torch

from dlrun.errors import DataError

log = logging.getLogger("dlrun")


class _Problems(torch.utils.data.Dataset):
    """Item i: why file i does not decode, or "" when it does."""

    def __init__(self, paths: list[str]):
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> str:
        from PIL import Image

        try:
            with Image.open(self.paths[index]) as image:
                # JPEGs decode at 1/8 scale: several times faster, and a truncated file still fails
                image.draft("RGB", (image.width // 8 or 1, image.height // 8 or 1))
                image.load()
        except Exception as error:  # PIL raises OSError, ValueError, SyntaxError... for bad bytes
            return str(error) or type(error).__name__
        return ""


def undecodable(paths: list[str], workers: int) -> dict[str, str]:
    """{path: reason} for the files that do not decode, checked in `workers` processes."""
    if not paths:
        return {}
    loader = torch.utils.data.DataLoader(
        _Problems(paths), batch_size=32, num_workers=min(workers, len(paths)), collate_fn=list
    )
    reasons = [reason for batch in loader for reason in batch]
    return {path: reason for path, reason in zip(paths, reasons) if reason}


def drop_bad_images(datasets: list, root: Path, policy: str, workers: int) -> int:
    """Refuse (policy error) or leave out (skip) the undecodable files of the splits of the data
    folder `root`, each a scanned ImageFolder; returns how many were left out."""
    stamps = {path: stamp for dataset in datasets for path, stamp in dataset.scan.stamps.items()}
    passed = _passed_before(root)
    bad = undecodable([path for path, stamp in stamps.items() if passed.get(path) != stamp], workers)
    passed_now = {path: stamp for path, stamp in stamps.items() if path not in bad}
    if passed_now != passed:  # an unchanged folder is not written again
        _remember(root, passed_now)
    if not bad:
        return 0
    first, reason = next(iter(bad.items()))
    if policy == "error":
        others = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DataError(
            f"{first} is not a readable image ({reason}){others}: replace or delete the file(s), "
            "or set dataset.bad_images=skip to leave them out"
        )
    for path, reason in bad.items():
        log.warning("skipped %s: %s", path, reason)
    for dataset in datasets:
        dataset.samples = [sample for sample in dataset.samples if sample[0] not in bad]
        dataset.imgs = dataset.samples
        dataset.targets = [target for _, target in dataset.samples]
        _check_classes_kept(dataset, Path(dataset.root))
    return len(bad)


def _record_file(root: Path) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "dlrun" / "image-checks" / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"


def _passed_before(root: Path) -> dict[str, tuple[int, ...]]:
    try:
        record = json.loads(_record_file(root).read_text())
        return {path: tuple(stamp) for path, stamp in record["passed"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # none yet, or unreadable: every file is checked, as without a record


def _remember(root: Path, passed: dict[str, tuple[int, ...]]) -> None:
    """Written whole and renamed into place: runs that check at once never read half a record.
    A record that cannot be written (a full disk, a read-only home) only means the next run
    checks again."""
    path, temporary = _record_file(root), None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as file:
            temporary = Path(file.name)
            json.dump({"root": str(root), "passed": passed}, file)
        os.replace(temporary, path)
    except OSError as error:
        log.debug("image check record not written (%s): the next run checks again", error)
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def check_classes_filled(dataset, folder: Path) -> None:
    """Each class folder holds at least one image file."""
    if not dataset.classes:
        raise DataError(f"no class folders in {folder}: put the images in {folder}/<class>/*.jpg")
    counts = torch.bincount(torch.tensor(dataset.targets, dtype=torch.int64), minlength=len(dataset.classes))
    empty = [name for name, count in zip(dataset.classes, counts.tolist()) if count == 0]
    if empty:
        raise DataError(
            f"{folder / empty[0]} holds no image files (.jpg, .png, ...)"
            + (f", nor do {len(empty) - 1} more class folder(s)" if len(empty) > 1 else "")
            + ": add images or remove the folder"
        )


def _check_classes_kept(dataset, folder: Path) -> None:
    try:
        check_classes_filled(dataset, folder)
    except DataError as error:
        raise DataError(f"after leaving out unreadable images, {error}") from None
