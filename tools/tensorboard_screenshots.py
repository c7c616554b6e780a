"""Screenshots of every TensorBoard tab over a folder of runs, as a user's browser shows them.

Starts a real `tensorboard` on 127.0.0.1 and drives a headless Chromium with Playwright (the
Time Series charts are drawn with WebGL, which `chromium --screenshot` captures before they are
drawn). Also saves the latest confusion matrix and reconstructions of each run as TensorBoard
serves them. Needs Debian's chromium (`apt install chromium`) and `pip install playwright`; it
uses /usr/bin/chromium, so Playwright's own browser download is not needed.

    python tools/tensorboard_screenshots.py runs shots/
"""

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

TABS = ["timeseries", "scalars", "images", "graphs", "text", "pr_curves", "hparams"]
PICTURES = ["val/confusion_matrix", "val/reconstructions"]
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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def save_pictures(base: str, runs: list[str], out: Path) -> None:
    """The last image of each picture tag of each run, as served by the images plugin."""
    for run in runs:
        for tag in PICTURES:
            query = urllib.parse.urlencode({"tag": tag, "run": run})
            try:
                images = json.loads(
                    urllib.request.urlopen(f"{base}/data/plugin/images/images?{query}").read()
                )
            except OSError:
                continue  # a run without this tag
            if images:
                picture = urllib.request.urlopen(
                    f"{base}/data/plugin/images/individualImage?{images[-1]['query']}"
                ).read()
                name = f"{run.replace('/', '_')}_{tag.split('/')[-1]}.png"
                (out / name).write_bytes(picture)
                print(out / name)


def screenshot_tabs(base: str, out: Path, settle_ms: int) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1200})
        for tab in TABS:
            page.goto(f"{base}/#{tab}")
            page.wait_for_timeout(settle_ms)  # TensorBoard fetches each card's data after load
            page.screenshot(path=out / f"{tab}.png")
            print(out / f"{tab}.png")
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logdir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--settle-ms", type=int, default=8000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        ["tensorboard", "--logdir", str(args.logdir), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        runs = wait_for_runs(base, server)
        save_pictures(base, runs, args.out)
        screenshot_tabs(base, args.out, args.settle_ms)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
