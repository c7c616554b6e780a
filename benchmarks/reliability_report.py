"""Reliability report: every bad input of tests/bad_inputs.py, run as a real command.

Counts the bad inputs tried, those handled cleanly (a refusal: non-zero exit, one error line that
names the key or path; a suspect input: exit 0 and a warning naming it; never a traceback), the
warnings among them, the tracebacks, the silent accepts (exit 0 with no warning), the hangs (no
answer in HANG_SECONDS) and the files that failed commands changed or lost (must be 0; a log may only
grow). Prints each case's error line. The faults that need timing (signals, killed workers, a
disk filling up) are played with real processes in tests/test_faults.py.

    python -m benchmarks.reliability_report
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.bad_inputs import (
    CASES,
    LIVE_HOLDERS,
    TRACEBACK,
    Case,
    changed_files,
    log_contents,
    said_clearly,
    snapshot,
)

HANG_SECONDS = 300

MODULES = {"dlrun": "dlrun", "dlrun-eval": "dlrun.cli:eval_main", "dlrun-predict": "dlrun.cli:predict_main"}


def command(program: str, args: list[str]) -> list[str]:
    if program == "dlrun":
        return [sys.executable, "-m", "dlrun", *args]
    module, function = MODULES[program].split(":")
    return [
        sys.executable,
        "-c",
        f"import sys; sys.argv[0] = {program!r}; from {module} import {function}; {function}()",
        *args,
    ]


def try_case(case: Case, folder: Path) -> dict:
    def run(*args: str) -> None:
        subprocess.run(command("dlrun", list(args)), cwd=folder, capture_output=True, check=True)

    args, names = case.setup(folder, run)
    before, logs = snapshot(folder), log_contents(folder)
    try:
        done = subprocess.run(
            command(case.program, args),
            cwd=folder,
            env={**os.environ, **case.environment},
            capture_output=True,
            text=True,
            timeout=HANG_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return {
            "clean": False,
            "hang": True,
            "traceback": False,
            "code": None,
            "changed": [],
            "line": "(hang)",
        }
    finally:
        while LIVE_HOLDERS:
            LIVE_HOLDERS.pop().kill()
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    warnings = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("warning: ")]
    return {
        "clean": said_clearly(case, done.returncode, done.stdout, done.stderr, names),
        "hang": False,
        "traceback": TRACEBACK in done.stdout + done.stderr,
        "code": done.returncode,
        "changed": changed_files(before, folder, logs),
        "line": (warnings or lines or ["(no error line)"])[-1 if case.code else 0],
    }


def main() -> None:
    outcomes = []
    for case in CASES:
        with tempfile.TemporaryDirectory() as folder:
            outcome = try_case(case, Path(folder))
        outcomes.append(outcome)
        mark = "ok  " if outcome["clean"] and not outcome["changed"] else "FAIL"
        print(f"{mark} [{outcome['code']}] {case.name}: {outcome['line']}")
        for name in outcome["changed"]:
            print(f"     changed: {name}")
    print()
    print(f"bad inputs tried:          {len(outcomes)}")
    print(f"handled cleanly:           {sum(o['clean'] for o in outcomes)}")
    print(f"tracebacks:                {sum(o['traceback'] for o in outcomes)}")
    print(f"warned, and went on:       {sum(o['clean'] and c.code == 0 for o, c in zip(outcomes, CASES))}")
    silent = sum(o["code"] == 0 and not (o["clean"] and c.code == 0) for o, c in zip(outcomes, CASES))
    print(f"silent accepts (exit 0):   {silent}")
    print(f"hangs (> {HANG_SECONDS} s):           {sum(o['hang'] for o in outcomes)}")
    print(f"files changed or lost:     {sum(len(o['changed']) for o in outcomes)}")


if __name__ == "__main__":
    main()
