"""Tiny datasets written in the real on-disk formats the loaders read.

Images are drawn so that a small model can learn them in a few steps: class k is a bright
square whose position depends on k, on a noisy background.
"""

import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np

RNG_SEED = 1234


def pattern_images(
    count: int, classes: int, size: int, channels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images [N, size, size, channels] and labels [N]."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    rng.shuffle(labels)
    images = rng.integers(0, 60, size=(count, size, size, channels), dtype=np.uint8)
    block = max(2, size // 5)
    for index, label in enumerate(labels):
        row = (label * 7) % (size - block)
        col = (label * 3) % (size - block)
        images[index, row : row + block, col : col + block, :] = 255
    return images, labels.astype(np.uint8)


def write_idx(path: Path, array: np.ndarray) -> None:
    """The IDX format of MNIST: a big-endian magic number, the dimensions, then the bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    magic = 0x0800 + array.ndim
    with open(path, "wb") as handle:
        handle.write(struct.pack(">I", magic))
        handle.write(struct.pack(">" + "I" * array.ndim, *array.shape))
        handle.write(array.astype(np.uint8).tobytes())


def write_mnist(root: Path, folder: str = "MNIST", train: int = 240, test: int = 80) -> Path:
    """<root>/<folder>/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte, as torchvision reads."""
    raw = root / folder / "raw"
    for prefix, count, seed in (("train", train, 1), ("t10k", test, 2)):
        images, labels = pattern_images(count, 10, 28, 1, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images[..., 0])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return root


def write_cifar10(root: Path, per_batch: int = 40, test: int = 40) -> dict[str, str]:
    """<root>/cifar-10-batches-py in CIFAR-10's pickle format; returns each file's md5."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    files = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(files):
        images, labels = pattern_images(test if name == "test_batch" else per_batch, 10, 32, 3, 10 + seed)
        # str keys: the originals were pickled by Python 2, which torchvision reads as latin-1
        entry = {
            "batch_label": name,
            "labels": labels.tolist(),
            # rows of 3072 bytes: the red plane, then green, then blue
            "data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
            "filenames": [f"{name}_{i}.png" for i in range(len(images))],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(entry, handle, protocol=2)
    meta = {
        "label_names": [
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ],
        "num_cases_per_batch": per_batch,
        "num_vis": 3072,
    }
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in files + ["batches.meta"]}


NAMES = {
    "English": [
        "Smith",
        "Jones",
        "Taylor",
        "Brown",
        "Williams",
        "Wilson",
        "Johnson",
        "Davies",
        "Robinson",
        "Wright",
        "Thompson",
        "Evans",
        "Walker",
        "White",
        "Roberts",
        "Green",
    ],
    "French": [
        "Dubois",
        "Lefèvre",
        "Moreau",
        "Laurent",
        "Girard",
        "Bonnet",
        "Dupont",
        "Lambert",
        "Fontaine",
        "Rousseau",
        "Vincent",
        "Muller",
        "Lefebvre",
        "Faure",
        "André",
        "Mercier",
    ],
    "Japanese": [
        "Satō",
        "Suzuki",
        "Takahashi",
        "Tanaka",
        "Watanabe",
        "Itō",
        "Yamamoto",
        "Nakamura",
        "Kobayashi",
        "Katō",
        "Yoshida",
        "Yamada",
        "Sasaki",
        "Yamaguchi",
        "Matsumoto",
        "Inoue",
    ],
}


def write_names(root: Path, names: dict[str, list[str]] = NAMES) -> Path:
    """<root>/names/<Language>.txt, UTF-8, one name per line (accents included)."""
    folder = root / "names"
    folder.mkdir(parents=True, exist_ok=True)
    for language, entries in names.items():
        (folder / f"{language}.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    return root


def write_image_folder(
    root: Path, classes=("ants", "bees"), per_class: int = 8, val: bool = True, size: int = 40
) -> Path:
    """<root>/train/<class>/*.png (and val/), real PNG files."""
    from PIL import Image

    splits = {"train": per_class, "val": per_class // 2} if val else {"train": per_class}
    for split_index, (split, count) in enumerate(splits.items()):
        images, labels = pattern_images(count * len(classes), len(classes), size, 3, 50 + split_index)
        for index, (image, label) in enumerate(zip(images, labels)):
            folder = root / split / classes[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"{index:03d}.png")
    return root


def write_csv(path: Path, rows: int = 60, header: bool = True, label_first: bool = True) -> Path:
    """Three separable classes of 4 numeric features."""
    rng = np.random.default_rng(RNG_SEED)
    lines = []
    if header:
        lines.append(",".join(["kind", "a", "b", "c", "d"] if label_first else ["a", "b", "c", "d", "kind"]))
    for index in range(rows):
        label = index % 3
        features = rng.normal(loc=label * 3.0, scale=0.5, size=4)
        cells = [f"{value:.4f}" for value in features]
        cells = [f"class{label}"] + cells if label_first else cells + [f"class{label}"]
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")
    return path


# per class: feature means and spreads of Fisher's iris measurements (sepal and petal length and width)
IRIS_LIKE = {
    "setosa": ([5.0, 3.4, 1.5, 0.25], [0.35, 0.38, 0.17, 0.1]),
    "versicolor": ([5.9, 2.8, 4.3, 1.3], [0.5, 0.3, 0.45, 0.18]),
    "virginica": ([6.6, 3.0, 5.6, 2.0], [0.6, 0.3, 0.5, 0.22]),
}


def write_iris_like(path: Path, per_class: int = 50) -> Path:
    """A 150-row, 3-class table shaped like the iris CSV: 4 measurements, then `species`."""
    rng = np.random.default_rng(RNG_SEED)
    rows = [
        [*(f"{value:.1f}" for value in rng.normal(mean, spread)), species]
        for species, (mean, spread) in IRIS_LIKE.items()
        for _ in range(per_class)
    ]
    order = rng.permutation(len(rows))
    header = "sepal_length,sepal_width,petal_length,petal_width,species"
    path.write_text("\n".join([header, *(",".join(rows[index]) for index in order)]) + "\n")
    return path
