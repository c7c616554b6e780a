"""`dlrun-serve`: a checkpoint's model behind HTTP (FastAPI on uvicorn).

POST /predict takes what dlrun-predict takes: image files as multipart/form-data (field `files`),
table rows as JSON (`{"inputs": [[13.2, 1.78, ...]]}`), names as JSON (`{"inputs": ["Jones"]}`)
or as plain text, one per line. Each request's inputs are prepared (and checked) as dlrun-predict
prepares them; requests that arrive within `batch_wait_ms` of each other share one run of the
model. A bad input is a 4xx answer with one line of reason; nothing is ever answered with a
traceback. An image model never reads a path the client names: files come in the request.
"""

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor

from dlrun.checkpoints.trust import Trust
from dlrun.commands.predict import classifier, ranked
from dlrun.commands.restore import Restored, restore
from dlrun.data.images import Upload
from dlrun.data.kinds import prepare_inputs
from dlrun.engine.runtime import select_device
from dlrun.errors import DlrunError, one_line
from dlrun.signals import STOP, Interrupted

log = logging.getLogger("dlrun")
PAGE = Path(__file__).with_name("serve_page.html")


INSTALL_SERVE = 'pip install "dlrun[serve]" (or, in a checkout, pip install -e ".[serve]")'


def serve_checkpoint(cfg: DictConfig, trust: Trust) -> None:
    try:
        import fastapi  # noqa: F401 - the app is built with it below
        import uvicorn
    except ImportError as error:
        raise DlrunError(f"dlrun-serve needs {error.name}: {INSTALL_SERVE}") from None
    restored = classifier(restore(cfg.ckpt, select_device(cfg.device), trust))
    listening = _listen(cfg.host, cfg.port)
    server = uvicorn.Server(
        uvicorn.Config(service(restored, cfg), log_level="warning", access_log=False, lifespan="on")
    )
    facts, where = restored.facts, f"http://{cfg.host}:{cfg.port}"
    print(f"serving {restored.cfg.model._target_} ({facts.kind}, {facts.num_classes} classes)")
    print(f"  {where}/  a page to try it; POST {where}/predict; GET {where}/health", flush=True)
    # uvicorn stops on Ctrl-C and then raises the signal again: remembered here, not raised in
    # the middle of its shutdown; the command then ends with the signal's code and line
    with STOP.deferred():
        server.run(sockets=[listening])
    if STOP:
        raise Interrupted(STOP.signum)


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything is said: a port in use is one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP written out: asyncio sets TCP_NODELAY on the connections of a socket whose
    # protocol says TCP, and without it a kept-alive client waited 40 ms for every answer
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise DlrunError(
            f"cannot listen on {host}:{port}: {error.strerror}; give another port=N (or host=...), or stop "
            "what holds it"
        ) from None
    listening.listen(128)
    return listening


@dataclass
class Waiting:
    inputs: Tensor
    answer: asyncio.Future


@dataclass
class Batcher:
    """Runs the model on the inputs of every request waiting, up to `max_batch` of them at once.
    It waits up to `wait_s` for more only while other requests are still being read: a request
    alone is answered at once."""

    model: torch.nn.Module
    max_batch: int
    wait_s: float
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    coming: int = 0  # requests received whose inputs are still being read and prepared

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        self.coming += 1
        try:
            yield
        finally:
            self.coming -= 1

    async def probabilities(self, inputs: Tensor) -> tuple[Tensor, int]:
        """(the class probabilities of `inputs`, how many inputs the model's run held)."""
        answer = asyncio.get_running_loop().create_future()
        await self.queue.put(Waiting(inputs, answer))
        return await answer

    async def run(self) -> None:
        while True:
            waiting = [await self.queue.get()]
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while sum(len(item.inputs) for item in waiting) < self.max_batch:
                if not self.coming and self.queue.empty():
                    break
                left = deadline - asyncio.get_running_loop().time()
                try:
                    waiting.append(await asyncio.wait_for(self.queue.get(), max(left, 0)))
                except asyncio.TimeoutError:
                    break
            await self._answer(waiting)

    async def _answer(self, waiting: list[Waiting]) -> None:
        try:
            together = await asyncio.to_thread(self._forward, joined([item.inputs for item in waiting]))
        except Exception as error:  # the model itself failed: every request waiting hears why
            for item in waiting:
                if not item.answer.done():
                    item.answer.set_exception(error)
            return
        start = 0
        for item in waiting:
            # a request given up meanwhile (its client gone) must not stop the answers of the rest
            if not item.answer.done():
                item.answer.set_result((together[start : start + len(item.inputs)], len(together)))
            start += len(item.inputs)

    def _forward(self, inputs: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(inputs).float().softmax(dim=1).cpu()


def joined(batches: list[Tensor]) -> Tensor:
    """One batch of several requests' inputs; names are padded with 0 to the longest."""
    if batches[0].dtype == torch.int64:
        longest = max(batch.shape[1] for batch in batches)
        batches = [torch.nn.functional.pad(batch, (0, longest - batch.shape[1])) for batch in batches]
    return torch.cat(batches)


def service(restored: Restored, cfg: DictConfig):
    """The FastAPI app that answers for `restored`'s model."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse

    facts, target = restored.facts, restored.cfg.model._target_
    batcher = Batcher(restored.model, cfg.max_batch, cfg.batch_wait_ms / 1000)

    @contextlib.asynccontextmanager
    async def batching(app):
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()

    app = FastAPI(title=f"dlrun-serve: {target}", docs_url=None, redoc_url=None, lifespan=batching)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": target, "kind": facts.kind, "classes": facts.class_names}

    @app.get("/", response_class=HTMLResponse)
    async def page() -> str:
        return PAGE.read_text().replace("{{model}}", target).replace("{{kind}}", facts.kind)

    @app.post("/predict")
    async def predict(request: Request):
        warnings: list[str] = []  # what an input lost on the way: the client is told, not our log
        try:
            with batcher.reading():
                inputs = await _inputs(request, facts.kind)
                prepared = prepare_inputs(inputs, facts, torch.device("cpu"), warnings.append)
            probabilities, batch = await batcher.probabilities(prepared.to(_device(restored)))
        except ClientError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        except DlrunError as error:  # an input the model cannot take: said as dlrun-predict says it
            return JSONResponse({"error": one_line(error)}, status_code=422)
        except Exception as error:  # a fault of the model's or dlrun's: one line, logged
            log.exception("dlrun-serve failed on a request")
            return JSONResponse({"error": f"the model failed: {type(error).__name__}: {error}"}, 500)
        shown = [str(item) if isinstance(item, Upload) else item for item in inputs]
        answers = ranked(shown, probabilities, facts.class_names, cfg.topk)
        for answer, row in zip(answers, probabilities.tolist()):
            answer["probabilities"] = {name: round(p, 6) for name, p in zip(facts.class_names, row)}
        return {"predictions": answers, "batch": batch, "warnings": warnings}

    @app.exception_handler(RequestValidationError)
    async def unreadable(request: Request, error: RequestValidationError):
        return JSONResponse({"error": f"the request cannot be read: {error.errors()[0].get('msg')}"}, 400)

    return app


def _device(restored: Restored) -> torch.device:
    return next(restored.model.parameters()).device


class ClientError(Exception):
    """A request that does not say what to predict: answered with `status` and the reason."""

    def __init__(self, reason: str, status: int = 400):
        super().__init__(reason)
        self.status = status


async def _inputs(request, kind: str) -> list[Any]:
    """The request's inputs: uploaded files for an image model; a JSON list, or lines of text."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "image":
        if media != "multipart/form-data":
            raise ClientError(
                f"this model reads images: send the files as multipart/form-data in the field 'files' "
                f"(curl -F files=@ant.jpg ...), not {media or 'a body without a content type'}",
                415,
            )
        form = await request.form()
        files = form.getlist("files")
        if not files:
            raise ClientError("no files in the request: send the images in the field 'files'")
        return [Upload(getattr(file, "filename", None) or "upload", await file.read()) for file in files]
    if media == "application/json":
        return _json_inputs(await request.body())
    if media == "text/plain":
        lines = [line.strip() for line in (await request.body()).decode("utf-8", "replace").splitlines()]
        return _non_empty([line for line in lines if line])
    raise ClientError(
        f'send the inputs as application/json ({{"inputs": [...]}}) or text/plain (one per line), not '
        f"{media or 'a body without a content type'}",
        415,
    )


def _json_inputs(body: bytes) -> list[Any]:
    try:
        given = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ClientError(f"the body is not JSON: {error}") from None
    inputs = given.get("inputs") if isinstance(given, dict) else given
    if not isinstance(inputs, list):
        raise ClientError('give the inputs as a list: {"inputs": [...]}')
    return _non_empty(inputs)


def _non_empty(inputs: list[Any]) -> list[Any]:
    if not inputs:
        raise ClientError("no inputs in the request: give at least one")
    return inputs
