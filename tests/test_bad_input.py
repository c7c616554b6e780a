"""Every bad input of tests/bad_inputs.py, run as a user would: a non-zero exit and one error line
that names the key or path (or, for a suspect input, a warning that names it), no traceback, and
no file that existed before changed."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from dlrun import cli
from tests.bad_inputs import CASES, LIVE_HOLDERS, changed_files, log_contents, said_clearly, snapshot

PROGRAMS = {"dlrun": cli.main, "dlrun-eval": cli.eval_main, "dlrun-predict": cli.predict_main}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_one_clear_line(case, dlrun, tmp_path):
    folder = tmp_path / "case"
    folder.mkdir()

    def run(*args):
        assert dlrun(*args).code == 0

    args, names = case.setup(folder, run)
    before, logs = snapshot(folder), log_contents(folder)
    try:
        result = (
            in_a_process(case, args, folder)
            if case.environment
            else dlrun(*args, program=PROGRAMS[case.program])
        )
    finally:
        while LIVE_HOLDERS:
            LIVE_HOLDERS.pop().kill()
    assert said_clearly(case, result.code, result.out, result.err, names), (result.code, result.err)
    assert changed_files(before, folder, logs) == []


def in_a_process(case, args, folder):
    """A case whose environment a library reads once, at import: run as its own process."""
    done = subprocess.run(
        [sys.executable, "-m", "dlrun", *args],
        cwd=folder,
        env={**os.environ, **case.environment},
        capture_output=True,
        text=True,
        timeout=300,
    )
    return SimpleNamespace(code=done.returncode, out=done.stdout, err=done.stderr)
