"""The one-node SLURM cluster the SLURM tests run on (tools/slurm_cluster.sh): started once per
test session when none answers, stopped at the end of the session that started it."""

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[1]
STATE = Path("/tmp/dlrun-slurm")
STARTED = STATE / "started-by-tests"


def answers() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:  # a controller on this machine answers in milliseconds; sinfo retries 9 s for none
        probe = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=3)
    except subprocess.TimeoutExpired:
        return False
    return probe.returncode == 0 and any(state in probe.stdout for state in ("idle", "mixed", "allocated"))


def start() -> Optional[str]:
    """None once a cluster answers; else why none could be started (the tests skip with it)."""
    if answers():
        return None
    if os.geteuid() != 0:
        return "no SLURM cluster answers, and starting one needs root (tools/slurm_cluster.sh)"
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE.parent / "dlrun-slurm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the test processes of one session start it once
        if answers():
            return None
        started = subprocess.run(
            ["bash", str(ROOT / "tools" / "slurm_cluster.sh"), "start", str(STATE)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if started.returncode != 0:
            return f"SLURM could not be started: {(started.stderr or started.stdout).strip()[-300:]}"
        STARTED.touch()
    return None


def stop_if_started() -> None:
    if STARTED.exists():
        subprocess.run(["bash", str(ROOT / "tools" / "slurm_cluster.sh"), "stop", str(STATE)], timeout=60)
        STARTED.unlink()
