"""Benchmark 11: a trained model outside dlrun.

1. dlrun-serve: requests per second and p50 / p99 latency for the mnist_mlp preset (trained one
   epoch on the real MNIST), each request one 28x28 PNG sent as multipart/form-data, from 1 and
   from 8 concurrent clients, each running a bounded loop against 127.0.0.1.
2. The exported ONNX file under ONNX Runtime versus the PyTorch model on the CPU: the median
   latency of one batch (1 and 64 inputs), alternating.

    python -m benchmarks.serving [--requests 400]
"""

import argparse
import io
import json
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import torch

from benchmarks.timing import REAL_DATA, row


def trained(folder: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "dlrun", "experiment=mnist_mlp", f"dataset.root={REAL_DATA}"]
        + ["trainer.epochs=1", "logger=none", "terminal.progress=off", f"hydra.run.dir={folder}/run"],
        check=True,
        capture_output=True,
    )
    return folder / "run" / "checkpoints" / "best.pt"


def digit_png() -> bytes:
    from torchvision.datasets import MNIST

    image, _ = MNIST(str(REAL_DATA), train=False, download=False)[0]
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def served_latencies(checkpoint: Path, clients: int, per_client: int) -> tuple[float, list[float]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from dlrun.cli import serve_main; serve_main()",
            f"ckpt={checkpoint}",
            f"port={port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base, image = f"http://127.0.0.1:{port}", digit_png()
    try:
        while True:
            try:
                requests.get(f"{base}/health", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)

        def client(_) -> list[float]:
            session, taken = requests.Session(), []
            for _ in range(per_client):
                started = time.perf_counter()
                answer = session.post(f"{base}/predict", files=[("files", ("digit.png", image, "image/png"))])
                taken.append(time.perf_counter() - started)
                assert answer.status_code == 200, answer.text
            return taken

        client(None)  # warm-up
        started = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            latencies = [seconds for taken in pool.map(client, range(clients)) for seconds in taken]
        return time.perf_counter() - started, latencies
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)


def onnx_versus_torch(checkpoint: Path, repeats: int = 300) -> dict[int, tuple[float, float]]:
    import onnxruntime

    from dlrun.checkpoints.trust import Trust
    from dlrun.commands.restore import restore

    subprocess.run(
        [sys.executable, "-c", "from dlrun.cli import export_main; export_main()", f"ckpt={checkpoint}"],
        check=True,
        capture_output=True,
    )
    model = restore(str(checkpoint), torch.device("cpu"), Trust(None, ())).model
    session = onnxruntime.InferenceSession(
        str(checkpoint.with_suffix(".onnx")), providers=["CPUExecutionProvider"]
    )
    result = {}
    for batch in (1, 64):
        inputs = torch.randn(batch, 1, 28, 28)
        onnx_times, torch_times = [], []
        for _ in range(repeats):
            started = time.perf_counter()
            session.run(None, {"input": inputs.numpy()})
            onnx_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            with torch.no_grad():
                model(inputs)
            torch_times.append(time.perf_counter() - started)
        result[batch] = (statistics.median(onnx_times), statistics.median(torch_times))
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=400, help="per client count, 1 client; split among 8")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = trained(Path(folder))
        print(row("dlrun-serve, mnist_mlp", "requests", "req/s", "p50 ms", "p99 ms"))
        for clients in (1, 8):
            seconds, latencies = served_latencies(checkpoint, clients, args.requests // clients)
            cuts = statistics.quantiles(latencies, n=100)
            print(
                row(
                    f"{clients} client(s)",
                    len(latencies),
                    f"{len(latencies) / seconds:.0f}",
                    f"{cuts[49] * 1000:.1f}",
                    f"{cuts[98] * 1000:.1f}",
                )
            )
        print()
        print(row("one batch, CPU", "ONNX ms", "torch ms", "ratio"))
        for batch, (onnx_s, torch_s) in onnx_versus_torch(checkpoint).items():
            print(
                row(
                    f"batch {batch}",
                    f"{onnx_s * 1000:.3f}",
                    f"{torch_s * 1000:.3f}",
                    f"{onnx_s / torch_s:.2f}",
                )
            )
        print(json.dumps({"torch_threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
