"""Benchmark 8: a whole `dlrun` run on an image folder against a bare torchvision script.

The folder is generated once (CIFAR-10 sized: 50,000 train and 10,000 val JPEGs of 32x32 in 10
classes; --folder keeps it between runs). Bare: a script that builds torchvision ImageFolders
(ToImage, ToDtype, Normalize), DataLoaders with the same workers and batch size, the same ConvNet
and SGD, trains one epoch and scores val once. dlrun: `dlrun dataset=imagefolder model=cnn`, one
epoch, the same settings, logger=none (benchmark 5 measures logging). Both are timed as whole
processes (start to exit), alternating; the ratio is the median of back-to-back pairs. Goal:
dlrun within 1.10x. dlrun's image check runs once over both splits; its result is kept in
~/.cache/dlrun, so runs after the first skip it: --fresh-check clears that cache before every
dlrun run to time the check too.

    python -m benchmarks.imagefolder_run [--folder /tmp/dlrun-60k] [--repeats 3] [--fresh-check]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.timing import median, paired_ratio, row

CLASSES = 10
WORKERS, BATCH = 2, 64

BARE = """
import sys, torch, torch.nn.functional as F
from torchvision import datasets
from torchvision.transforms import v2
from dlrun.models.convnet import ConvNet
root, workers, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
transform = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                        v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
train = datasets.ImageFolder(f"{root}/train", transform=transform)
val = datasets.ImageFolder(f"{root}/val", transform=transform)
loader = lambda data, shuffle: torch.utils.data.DataLoader(
    data, batch_size=batch, shuffle=shuffle, num_workers=workers, persistent_workers=True)
model = ConvNet([3, 32, 32], 10)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
model.train()
for images, labels in loader(train, True):
    optimizer.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    optimizer.step()
model.eval()
correct = 0
with torch.no_grad():
    for images, labels in loader(val, False):
        correct += (model(images).argmax(1) == labels).sum().item()
print(correct / len(val))
"""


def make_folder(root: Path, train: int, val: int) -> None:
    """Noisy 32x32 JPEGs whose class shows as a bright square at a class-dependent place."""
    from PIL import Image

    generator = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label in range(CLASSES):
            (root / split / f"class{label}").mkdir(parents=True, exist_ok=True)
        for index in range(count):
            label = index % CLASSES
            pixels = generator.integers(0, 90, (32, 32, 3), dtype=np.uint8)
            row_at, column_at = (label * 7) % 24, (label * 3) % 24
            pixels[row_at : row_at + 8, column_at : column_at + 8] = 230
            Image.fromarray(pixels).save(root / split / f"class{label}" / f"{index:05d}.jpg", quality=90)
    (root / "complete").write_text(f"{train} {val}\n")


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "dlrun-imagefolder-60k")
    parser.add_argument("--train", type=int, default=50_000)
    parser.add_argument("--val", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fresh-check", action="store_true")
    args = parser.parse_args()
    if not (args.folder / "complete").is_file():
        print(f"writing {args.train + args.val:,} JPEGs to {args.folder} (once)")
        make_folder(args.folder, args.train, args.val)
    cache = Path.home() / ".cache" / "dlrun" / "image-checks"
    times: dict[str, list[float]] = {"bare": [], "dlrun": []}
    with tempfile.TemporaryDirectory() as scratch:
        bare = [sys.executable, "-c", BARE, str(args.folder), str(WORKERS), str(BATCH)]
        for repeat in range(args.repeats):
            times["bare"].append(timed(bare))
            if args.fresh_check:
                shutil.rmtree(cache, ignore_errors=True)
            dlrun = [sys.executable, "-m", "dlrun", "dataset=imagefolder", f"dataset.root={args.folder}"]
            dlrun += ["model=cnn", "dataset.train_transforms=[]", "dataset.val_transforms=[]"]
            dlrun += ["optimizer=sgd", "optimizer.lr=0.01", "trainer.epochs=1", f"trainer.batch_size={BATCH}"]
            dlrun += [f"dataset.num_workers={WORKERS}", "logger=none", f"hydra.run.dir={scratch}/run{repeat}"]
            times["dlrun"].append(timed(dlrun))
    check = "checked afresh each run" if args.fresh_check else "check result reused after the first run"
    setup = f"model=cnn, 1 epoch, {WORKERS} workers, batch {BATCH}"
    print(f"{args.train:,} + {args.val:,} JPEGs, {setup}; {check}")
    print(row("whole process", "dlrun", "bare", "ratio"))
    print(
        row(
            "",
            f"{median(times['dlrun']):.1f} s",
            f"{median(times['bare']):.1f} s",
            f"{paired_ratio(times['dlrun'], times['bare']):.3f}x",
        )
    )
    print("runs:", {name: [round(t, 1) for t in values] for name, values in times.items()})


if __name__ == "__main__":
    main()
