"""Screenshots of every TensorBoard tab over a folder of runs, as a user's browser shows them.

Starts a real `tensorboard` on 127.0.0.1 and drives a headless Chromium with Playwright (the
Time Series charts are drawn with WebGL, which `chromium --screenshot` captures before they are
drawn): every tab, and the three views of HPARAMS. Past 40 runs TensorBoard's older tabs start
with no run selected, so the tool presses their TOGGLE ALL RUNS first. Also saves the latest
confusion matrix and reconstructions of each run as TensorBoard serves them, and says so when it
finds none. Needs Debian's chromium (`apt install chromium`) and `pip install playwright`; it uses
/usr/bin/chromium, so Playwright's own browser download is not needed.

    python tools/tensorboard_screenshots.py runs shots/
"""

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from dlrun.reporting.tensorboard import CONFUSION_PICTURE, RECONSTRUCTIONS_PICTURE

TABS = ["timeseries", "scalars", "images", "graphs", "text", "pr_curves"]
SELECT_ALL = ("scalars", "images", "text", "pr_curves")  # TensorBoard's older tabs
HPARAMS_VIEWS = {
    "hparams_table": "TABLE VIEW",
    "hparams_parallel": "PARALLEL COORDINATES VIEW",
    "hparams_scatter": "SCATTER PLOT MATRIX VIEW",
}
PICTURES = [CONFUSION_PICTURE, RECONSTRUCTIONS_PICTURE]
MANY_RUNS = 40  # past this many runs the older tabs select none
# without these Chromium keeps trying to reach Google's hosts on a closed network
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-swiftshader",  # WebGL on the CPU, for the Time Series charts
]
CHROMIUM = "/usr/bin/chromium"


@contextlib.contextmanager
def tensorboard(logdir: Path):
    """A real `tensorboard` over `logdir` on a free port of 127.0.0.1: yields (its address, the
    runs it lists) once it serves them."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1"]
        + ["--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        yield base, wait_for_runs(base, server)
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_for_runs(base: str, server: subprocess.Popen) -> list[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit("tensorboard exited before serving")
        try:
            runs = json.loads(urllib.request.urlopen(f"{base}/data/runs", timeout=5).read())
            if runs:
                return runs
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("tensorboard listed no runs in 120 s")


def save_pictures(base: str, runs: list[str], out: Path) -> list[Path]:
    """The last image of each picture tag of each run, as served by the images plugin."""
    saved = []
    tags = json.loads(urllib.request.urlopen(f"{base}/data/plugin/images/tags").read())
    for run in runs:
        for tag in PICTURES:
            if tag not in tags.get(run, {}):
                continue
            query = urllib.parse.urlencode({"tag": tag, "run": run})
            images = json.loads(urllib.request.urlopen(f"{base}/data/plugin/images/images?{query}").read())
            picture = urllib.request.urlopen(
                f"{base}/data/plugin/images/individualImage?{images[-1]['query']}"
            ).read()
            path = out / f"{run.replace('/', '_')}_{tag.split('/')[-1]}.png"
            path.write_bytes(picture)
            saved.append(path)
    if not saved:
        print(f"no run holds {' or '.join(PICTURES)}: no picture saved", file=sys.stderr)
    return saved


def browser():
    """Playwright's Chromium, Debian's build."""
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    return playwright, playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)


def screenshot_tabs(base: str, runs: list[str], out: Path, settle_ms: int) -> list[Path]:
    playwright, chromium = browser()
    shots = []
    try:
        page = chromium.new_page(viewport={"width": 1400, "height": 1000})
        for tab in TABS:
            page.goto(f"{base}/#{tab}")
            page.wait_for_timeout(settle_ms)  # TensorBoard fetches each card's data after load
            if tab in SELECT_ALL and len(runs) > MANY_RUNS:
                page.get_by_text("TOGGLE ALL RUNS").click()
                page.wait_for_timeout(settle_ms)
            shots.append(_shot(page, out / f"{tab}.png"))
        page.goto(f"{base}/#hparams")
        page.wait_for_timeout(settle_ms)
        for name, view in HPARAMS_VIEWS.items():
            page.get_by_text(view).click()
            page.wait_for_timeout(settle_ms // 2)
            shots.append(_shot(page, out / f"{name}.png"))
    finally:
        chromium.close()
        playwright.stop()
    return shots


def drawn_hparams_lines(page) -> int:
    """The sessions the parallel-coordinates view draws a line for (it draws none when a column
    lacks a value in some row)."""
    return page.evaluate(
        """() => { let count = 0;
          const walk = (root) => { for (const el of root.querySelectorAll('*')) {
            if (el.shadowRoot) walk(el.shadowRoot);
            const group = el.parentElement;
            if (el.tagName.toLowerCase() === 'path' && group && group.getAttribute('class') === 'foreground'
                && /^M[0-9]/.test(el.getAttribute('d') || '')) count += 1; } };
          walk(document); return count; }"""
    )


def _shot(page, path: Path) -> Path:
    page.screenshot(path=path)
    print(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--settle-ms", type=int, default=8000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tensorboard(args.logdir) as (base, runs):
        for path in save_pictures(base, runs, args.out):
            print(path)
        screenshot_tabs(base, runs, args.out, args.settle_ms)


if __name__ == "__main__":
    main()
