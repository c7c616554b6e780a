"""dlrun-serve as a user meets it: a real process on a free port of 127.0.0.1, called over HTTP
by a real client (requests), concurrently and with bad inputs, its page opened in Debian's
chromium; the answers are dlrun-predict's."""

import json
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from dlrun import cli
from tests.helpers import FEW_STEPS, SERVE, image_model, serving


def predicted(dlrun, checkpoint: Path, inputs: str) -> list[dict]:
    result = dlrun(f"ckpt={checkpoint}", f"inputs={inputs}", "format=json", program=cli.predict_main)
    assert result.code == 0, result.err
    return json.loads(result.out)


@pytest.fixture
def names_model(dlrun, data_root) -> Path:
    run = dlrun("experiment=names_char_rnn", f"dataset.root={data_root}", "trainer.epochs=3")
    assert run.code == 0, run.err
    return run.run_dir / "checkpoints" / "best.pt"


def test_names_as_json_or_text_get_dlrun_predicts_answers_with_every_probability(
    dlrun, names_model, tmp_path
):
    expected = predicted(dlrun, names_model, "[Jones,Satō,Dubois]")
    with serving(names_model, cwd=tmp_path) as (base, _):
        health = requests.get(f"{base}/health").json()
        assert health["status"] == "ok" and health["kind"] == "text" and len(health["classes"]) == 3
        as_json = requests.post(f"{base}/predict", json={"inputs": ["Jones", "Satō", "Dubois"]}).json()
        as_text = requests.post(
            f"{base}/predict", data="Jones\nSatō\nDubois\n".encode(), headers={"Content-Type": "text/plain"}
        ).json()
        misspelt = requests.post(f"{base}/predict", json={"inputs": ["Jones3", "Satō"]}).json()
    # what the model left out of an input is told to the client, not only to the server's stderr
    assert misspelt["warnings"] == [
        "inputs: 'Jones3' has characters the model never saw in training (3), left out: "
        "the answer is for 'Jones'"
    ]
    assert misspelt["predictions"][0]["predictions"] == expected[0]["predictions"]
    assert as_json["warnings"] == as_text["warnings"] == []
    for answer in (as_json, as_text):
        assert [item["predictions"] for item in answer["predictions"]] == [
            item["predictions"] for item in expected
        ]
        probabilities = answer["predictions"][0]["probabilities"]
        assert set(probabilities) == set(health["classes"]) and abs(sum(probabilities.values()) - 1) < 1e-4


def test_table_rows_and_image_files_get_dlrun_predicts_answers(dlrun, tmp_path):
    wine = dlrun("trainer.epochs=5").run_dir / "checkpoints" / "best.pt"
    rows = [[13.2, 1.78, 2.14, 11.2, 100, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050]]
    with serving(wine, cwd=tmp_path) as (base, _):
        answer = requests.post(f"{base}/predict", json={"inputs": rows}).json()
    expected = predicted(dlrun, wine, json.dumps(rows).replace(" ", ""))
    assert answer["predictions"][0]["predictions"] == expected[0]["predictions"]

    root, best = image_model(dlrun, tmp_path)
    files = sorted((root / "val" / "bees").glob("*.png"))[:2]
    with serving(best, cwd=tmp_path) as (base, _):
        sent = [("files", (file.name, file.read_bytes(), "image/png")) for file in files]
        answer = requests.post(f"{base}/predict", files=sent).json()
    expected = predicted(dlrun, best, "[" + ",".join(map(str, files)) + "]")
    assert [item["input"] for item in answer["predictions"]] == [file.name for file in files]
    assert [item["predictions"] for item in answer["predictions"]] == [
        item["predictions"] for item in expected
    ]


def test_requests_that_arrive_together_share_a_batch_and_each_gets_its_own_answer(names_model, tmp_path):
    names = ["Jones", "Satō", "Dubois", "Nguyen", "Schmidt", "Rossi", "Kowalski", "Murphy"] * 2
    with serving(names_model, "batch_wait_ms=50", cwd=tmp_path) as (base, _):
        alone = {name: requests.post(f"{base}/predict", json={"inputs": [name]}).json() for name in names}
        with ThreadPoolExecutor(len(names)) as pool:
            together = list(
                pool.map(lambda name: requests.post(f"{base}/predict", json={"inputs": [name]}).json(), names)
            )
    assert all(alone[name]["batch"] == 1 for name in names)
    assert max(answer["batch"] for answer in together) > 1  # the model ran on several requests at once
    for name, answer in zip(names, together):
        assert answer["predictions"][0]["input"] == name
        ours, theirs = (
            answer["predictions"][0]["probabilities"],
            alone[name]["predictions"][0]["probabilities"],
        )
        assert all(abs(ours[key] - theirs[key]) < 1e-5 for key in ours)  # padded with others: same


BAD_REQUESTS = [
    (
        {"data": "Jones", "headers": {"Content-Type": "application/xml"}},
        415,
        "send the inputs as application/json",
    ),
    ({"data": "{not json", "headers": {"Content-Type": "application/json"}}, 400, "the body is not JSON"),
    ({"json": {"inputs": []}}, 400, "no inputs in the request"),
    ({"json": {"names": ["Jones"]}}, 400, 'give the inputs as a list: {"inputs": [...]}'),
    ({"json": {"inputs": ["12345"]}}, 422, "'12345' has no character this model was trained on"),
    ({"json": {"inputs": [[1, 2, 3]]}}, 422, "[1, 2, 3] is not a name"),
    ({"files": [("files", ("a.png", b"png", "image/png"))]}, 415, "send the inputs as application/json"),
]


def test_a_bad_request_gets_a_4xx_and_one_line_and_the_server_serves_on(names_model, tmp_path):
    with serving(names_model, cwd=tmp_path) as (base, _):
        answers = [requests.post(f"{base}/predict", **send) for send, _, _ in BAD_REQUESTS]
        still = requests.post(f"{base}/predict", json={"inputs": ["Jones"]})
    for (send, status, said), answer in zip(BAD_REQUESTS, answers):
        assert answer.status_code == status and said in answer.json()["error"], (send, answer.text)
        assert "\n" not in answer.json()["error"] and "Traceback" not in answer.text
    assert still.status_code == 200


def test_an_image_model_takes_files_only_and_names_one_that_does_not_decode(dlrun, tmp_path):
    root, best = image_model(dlrun, tmp_path)
    secret = tmp_path / "secret.png"
    secret.write_bytes((root / "val" / "bees" / "000.png").read_bytes())
    with serving(best, cwd=tmp_path) as (base, _):
        a_path = requests.post(f"{base}/predict", json={"inputs": [str(secret)]})  # never read
        broken = requests.post(f"{base}/predict", files=[("files", ("cut.png", b"\x89PNG\r\n", "image/png"))])
        empty = requests.post(f"{base}/predict", files=[("other", ("a.png", b"x", "image/png"))])
    assert a_path.status_code == 415 and "send the files as multipart/form-data" in a_path.json()["error"]
    assert broken.status_code == 422 and broken.json()["error"].startswith("cannot read cut.png as an image")
    assert empty.status_code == 400 and "no files in the request" in empty.json()["error"]


def test_a_port_in_use_and_ctrl_c_are_one_line_each(names_model, tmp_path):
    with serving(names_model, cwd=tmp_path) as (base, process):
        port = base.rsplit(":", 1)[1]
        second = subprocess.run(
            [SERVE, f"ckpt={names_model}", f"port={port}"], capture_output=True, text=True
        )
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    assert second.returncode == 1
    assert second.stderr == (
        f"dlrun-serve: error: cannot listen on 127.0.0.1:{port}: Address already in use; give another "
        "port=N (or host=...), or stop what holds it\n"
    )
    assert process.returncode == 130 and err == "dlrun-serve: stopped by SIGINT\n"
    assert f"http://127.0.0.1:{port}/  a page to try it" in out


def test_the_page_answers_a_name_typed_into_it(names_model, tmp_path):
    pytest.importorskip("playwright", reason='Playwright comes with pip install -e ".[dev]"')
    from tools import tensorboard_screenshots as tool

    if not Path(tool.CHROMIUM).is_file():
        pytest.skip(f"no browser at {tool.CHROMIUM}: apt install chromium (.ci/run does)")
    with serving(names_model, cwd=tmp_path) as (base, _):
        expected = requests.post(f"{base}/predict", json={"inputs": ["Jones"]}).json()
        playwright, chromium = tool.browser()
        try:
            page = chromium.new_page(viewport={"width": 900, "height": 700})
            page.goto(f"{base}/")
            page.fill("#text", "Jones3")  # the model never saw the digit: the page says so
            page.click("#go")
            page.wait_for_selector(".row")
            page.screenshot(path=str(tmp_path / "serve_page.png"))
            shown = page.inner_text("#answer")
        finally:
            chromium.close()
            playwright.stop()
    top = expected["predictions"][0]["predictions"][0]
    assert shown.splitlines()[:2] == [
        "warning: inputs: 'Jones3' has characters the model never saw in training (3), left out: "
        "the answer is for 'Jones'",
        "Jones3",
    ]
    assert top["class"] in shown and f"{100 * top['probability']:.1f} %" in shown


def test_without_the_serve_extra_the_line_says_what_to_install(dlrun, monkeypatch):
    best = dlrun(*FEW_STEPS).run_dir / "checkpoints" / "best.pt"
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    result = dlrun(f"ckpt={best}", program=cli.serve_main)
    assert result.code == 1
    assert result.err == (
        'dlrun-serve: error: dlrun-serve needs uvicorn: pip install "dlrun[serve]" (or, in a checkout, '
        'pip install -e ".[serve]")\n'
    )


def test_a_request_given_up_while_it_waited_does_not_stop_the_answers_of_the_others():
    import asyncio

    import torch

    from dlrun.commands.serve import Batcher

    async def two_requests_one_given_up():
        batcher = Batcher(torch.nn.Linear(3, 2), max_batch=8, wait_s=0.05)
        running = asyncio.create_task(batcher.run())
        gone = asyncio.create_task(batcher.probabilities(torch.zeros(1, 3)))
        kept = asyncio.create_task(batcher.probabilities(torch.ones(2, 3)))
        await asyncio.sleep(0)  # both are queued
        gone.cancel()  # its client left
        probabilities, batch = await asyncio.wait_for(kept, 5)
        later, _ = await asyncio.wait_for(batcher.probabilities(torch.ones(1, 3)), 5)  # still serving
        running.cancel()
        return probabilities, batch, later

    probabilities, batch, later = asyncio.run(two_requests_one_given_up())
    assert probabilities.shape == (2, 2) and batch in (2, 3) and later.shape == (1, 2)
