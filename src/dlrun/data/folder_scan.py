"""Which files of an image folder are samples: regular files named like images, each counted
once, found without opening any of them.

torchvision's ImageFolder walks with os.walk(followlinks=True). A symlink from a class folder to
another class folder (or to its own parent) makes it list the same images again under another
label, or go round until the path is too long; and a FIFO, device or socket named like an image
is listed, then opened by the image check, which blocks forever on a FIFO.
"""

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


@dataclass
class FolderScan:
    samples: list[tuple[str, int]] = field(default_factory=list)
    # path -> (size, modification time, inode): which version of the file the image check saw
    stamps: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    not_files: list[str] = field(default_factory=list)  # FIFOs, devices, sockets, broken links
    folders_again: list[str] = field(default_factory=list)  # links to a folder already listed
    files_again: int = 0  # the same file reached through a second name
    broken_classes: list[str] = field(default_factory=list)  # class folders that are dangling links
    outside_classes: list[str] = field(default_factory=list)  # images beside the class folders

    def summary(self, root: Path) -> str:
        """What was left out, for a warning; "" when nothing was."""
        parts = []
        if self.not_files:
            parts.append(
                f"{len(self.not_files)} entr(ies) that are not regular files (FIFOs, devices, sockets, "
                f"broken links; first: {self.not_files[0]})"
            )
        if self.folders_again:
            parts.append(
                f"{len(self.folders_again)} link(s) to a folder listed already (a symlink cycle, or a "
                f"link between class folders; first: {self.folders_again[0]})"
            )
        if self.files_again:
            parts.append(f"{self.files_again} second name(s) of an image listed already")
        if self.broken_classes:
            parts.append(
                f"{len(self.broken_classes)} class folder(s) that are links to nothing, so not classes "
                f"(first: {self.broken_classes[0]} -> {os.readlink(self.broken_classes[0])})"
            )
        if self.outside_classes:
            parts.append(
                f"{len(self.outside_classes)} image(s) outside the class folders, which have no class "
                f"(first: {self.outside_classes[0]}; move them into {root}/<class>/)"
            )
        return f"in {root}, left out " + "; ".join(parts) if parts else ""


def scan_classes(root: Path, class_to_idx: dict[str, int], suffixes=IMAGE_SUFFIXES) -> FolderScan:
    """The samples of `root/<class>/**`, in sorted order, each real folder and file once."""
    scan = FolderScan()
    _strays(root, scan, suffixes)
    folders = {_identity(root / name) for name in class_to_idx}  # no class lists another's images
    files: set[tuple[int, int]] = set()
    for name in sorted(class_to_idx):
        paths = _walk(root / name, folders, files, scan, suffixes)
        scan.samples += [(path, class_to_idx[name]) for path in sorted(paths)]
    return scan


def _walk(folder: Path, folders: set, files: set, scan: FolderScan, suffixes) -> list[str]:
    found, pending = [], [folder]
    while pending:
        with os.scandir(pending.pop()) as entries:
            for entry in entries:
                try:
                    info = os.stat(entry.path)  # through links, without opening
                except OSError:
                    scan.not_files.append(entry.path)  # a broken link, or a link cycle (ELOOP)
                    continue
                identity = (info.st_dev, info.st_ino)
                if stat.S_ISDIR(info.st_mode):
                    if identity in folders:
                        scan.folders_again.append(entry.path)
                    else:
                        folders.add(identity)
                        pending.append(Path(entry.path))
                elif not entry.name.lower().endswith(suffixes):
                    continue
                elif not stat.S_ISREG(info.st_mode):
                    scan.not_files.append(entry.path)
                elif identity in files:
                    scan.files_again += 1
                else:
                    files.add(identity)
                    found.append(entry.path)
                    scan.stamps[entry.path] = (info.st_size, info.st_mtime_ns, info.st_ino)
    return found


def _strays(root: Path, scan: FolderScan, suffixes) -> None:
    """What torchvision's class listing passes over without a word: a link to nothing where a class
    folder would be, and images that lie beside the class folders instead of in one."""
    for entry in sorted(os.scandir(root), key=lambda entry: entry.name):
        if entry.is_symlink() and not os.path.exists(entry.path):
            scan.broken_classes.append(entry.path)
        elif entry.name.lower().endswith(suffixes) and entry.is_file():
            scan.outside_classes.append(entry.path)


def _identity(path: Path) -> tuple[int, int]:
    info = os.stat(path)
    return info.st_dev, info.st_ino
