"""Benchmark 7: reading a CSV table, dlrun against pandas, at 10k, 100k and 1M rows.

Generates tables of 20 numeric features and a label (6 significant digits, as a spreadsheet
writes them). Each load runs in a fresh process, alternating dlrun and pandas: dlrun's is the
whole dataset load (`dataset=csv`: read, carve train/val/test, standardize), pandas' is
`pandas.read_csv`. Reports the median time, the time per row, and the peak memory the load
added to the process (resident set, against the float32 size of the data). Goals: within 2x
pandas at 1M rows, per-row cost at 1M within 1.2x of 100k's, peak under 3x the float32 data.
Needs pandas (`pip install pandas`) for the side-by-side column.

    python -m benchmarks.csv_load [--rows 10000 100000 1000000] [--repeats 3]
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.timing import median, paired_ratio, row

FEATURES = 20

# The child: imports first (not counted), then one timed load and the peak memory it added.
CHILD = """
import json, resource, sys, time
which, path = sys.argv[1], sys.argv[2]
if which == "dlrun":
    import pyarrow.csv, pyarrow.compute, torch
    from omegaconf import OmegaConf
    from dlrun.data import LoadOptions
    from dlrun.data.tabular import load_csv
    cfg = OmegaConf.create(dict(path=path, delimiter=",", label_column="label", val_fraction=0.1,
                                test_fraction=0.1, standardize=True))
    options = LoadOptions("classification", 0, 64, None, torch.device("cpu"))
    load = lambda: load_csv(cfg, options)
else:
    import pandas
    load = lambda: pandas.read_csv(path)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
started = time.perf_counter()
result = load()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps(dict(seconds=seconds, peak_mb=peak / 1024)))
"""


def write_table(path: Path, rows: int) -> None:
    generator = np.random.default_rng(0)
    features = generator.normal(size=(rows, FEATURES)).astype(np.float32)
    labels = generator.integers(0, 3, rows)
    with path.open("w") as file:
        file.write(",".join([f"f{i}" for i in range(FEATURES)] + ["label"]) + "\n")
        np.savetxt(file, np.column_stack([features, labels]), delimiter=",", fmt=["%.6g"] * FEATURES + ["%d"])


def load_once(which: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, which, str(path)], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    per_row: dict[int, float] = {}
    print(f"{FEATURES} features + label; median of {args.repeats} fresh processes each, alternating")
    print(row("rows", "dlrun", "pandas", "ratio", "us/row", "peak", widths=(10, 10, 10, 8, 9, 22)))
    with tempfile.TemporaryDirectory() as scratch:
        for rows in args.rows:
            path = Path(scratch) / f"table_{rows}.csv"
            write_table(path, rows)
            runs: dict[str, list[dict]] = {"dlrun": [], "pandas": []}
            for _ in range(args.repeats):
                for which in runs:
                    runs[which].append(load_once(which, path))
            ours = [run["seconds"] for run in runs["dlrun"]]
            theirs = [run["seconds"] for run in runs["pandas"]]
            per_row[rows] = median(ours) / rows
            data_mb = rows * (FEATURES + 1) * 4 / 2**20
            peak = median([run["peak_mb"] for run in runs["dlrun"]])
            print(
                row(
                    f"{rows:,}",
                    f"{median(ours):.3f} s",
                    f"{median(theirs):.3f} s",
                    f"{paired_ratio(ours, theirs):.2f}x",
                    f"{per_row[rows] * 1e6:.2f}",
                    f"{peak:.0f} MB = {peak / data_mb:.1f}x data",
                    widths=(10, 10, 10, 8, 9, 22),
                )
            )
            path.unlink()
    sizes = sorted(per_row)
    for small, large in zip(sizes, sizes[1:]):
        print(f"per-row cost at {large:,} / at {small:,} rows: {per_row[large] / per_row[small]:.2f}")


if __name__ == "__main__":
    main()
