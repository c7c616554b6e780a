"""Benchmark 4: how fast the command answers when there is nothing to train.

`dlrun --help`, `dlrun --cfg job` and a config error never import torch; `python -c "import
torch"` is shown for scale.

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dlrun = shutil.which("dlrun") or sys.exit("dlrun is not installed on PATH")
    print(f"median wall time of {args.repeats} runs")
    for name, extra in COMMANDS.items():
        print(row(name, f"{seconds([dlrun, *extra], args.repeats):.2f} s"))
    print(
        row(
            "python -c 'import torch' (scale)",
            f"{seconds([sys.executable, '-c', 'import torch'], args.repeats):.2f} s",
        )
    )


if __name__ == "__main__":
    main()
