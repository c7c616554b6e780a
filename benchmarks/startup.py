"""Benchmark 4: how fast the command answers when there is nothing to train.

`dlrun --help`, `dlrun --cfg job` and a config error never import torch; `python -c "import
torch"` is shown for scale. dlrun-predict and dlrun-eval of a wine checkpoint (trained here
first) import torch, not torchvision.

    python benchmarks/startup.py [--repeats 5]
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.timing import median, row

COMMANDS = {
    "dlrun --help": ["--help"],
    "dlrun --cfg job": ["--cfg", "job"],
    "dlrun model=transformer (error)": ["model=transformer"],
    "dlrun model=lstm (bad pairing)": ["model=lstm"],
}


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(repeats):
            started = time.perf_counter()
            subprocess.run(argv, cwd=folder, capture_output=True)
            times.append(time.perf_counter() - started)
    return median(times)


def checkpoint_commands(folder: str) -> dict[str, list[str]]:
    """dlrun-predict and dlrun-eval of a wine model trained for one epoch in `folder`."""
    subprocess.run(
        [shutil.which("dlrun"), "trainer.epochs=1", "hydra.run.dir=wine"],
        cwd=folder,
        check=True,
        capture_output=True,
    )
    best = f"ckpt={folder}/wine/checkpoints/best.pt"
    row_of_wine = "inputs=[[13.2,1.78,2.14,11.2,100,2.65,2.76,0.26,1.28,4.38,1.05,3.4,1050]]"
    return {
        "dlrun-predict (a wine row)": [shutil.which("dlrun-predict"), best, row_of_wine],
        "dlrun-eval (wine)": [shutil.which("dlrun-eval"), best, f"output={folder}/report.json"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dlrun = shutil.which("dlrun") or sys.exit("dlrun is not installed on PATH")
    print(f"median wall time of {args.repeats} runs")
    for name, extra in COMMANDS.items():
        print(row(name, f"{seconds([dlrun, *extra], args.repeats):.2f} s"))
    with tempfile.TemporaryDirectory() as folder:
        for name, argv in checkpoint_commands(folder).items():
            print(row(name, f"{seconds(argv, args.repeats):.2f} s"))
    print(
        row(
            "python -c 'import torch' (scale)",
            f"{seconds([sys.executable, '-c', 'import torch'], args.repeats):.2f} s",
        )
    )


if __name__ == "__main__":
    main()
