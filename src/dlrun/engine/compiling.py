"""trainer.compile: what torch.compile wraps for a run, and its failures as one line.

torch.compile compiles at the first call, deep inside the first training step; what fails there
(no C++ compiler for inductor on the CPU, an op it cannot lower) arrives as a page of dynamo's
stack. The one thing the user can do about it is named instead: install the compiler, or train
without compiling.
"""

import contextlib
import os

import torch
from torch import nn

from dlrun.engine import distributed
from dlrun.engine.distributed import Ranks
from dlrun.errors import DlrunError

TURN_OFF = "or set trainer.compile=false to train without compiling"


def compiled(model: nn.Module, compile_model: bool, ranks: Ranks, device: torch.device):
    """(what training calls, what evaluation calls): compiled if asked; DDP only for training."""
    evaluator = torch.compile(model) if compile_model else model
    if not ranks.enabled:
        return evaluator, evaluator
    ddp = distributed.wrap(model, device)
    return (torch.compile(ddp) if compile_model else ddp), evaluator


@contextlib.contextmanager
def compile_failures(compile_model: bool):
    """A backend that cannot compile the model becomes one line naming the cause and the fix."""
    try:
        yield
    except Exception as error:
        if compile_model and isinstance(error, torch._dynamo.exc.BackendCompilerFailed):
            raise DlrunError(_said(error)) from None
        raise


def _said(error: Exception) -> str:
    inner = getattr(error, "inner_exception", None) or error.__cause__ or error
    if type(inner).__name__ == "InvalidCxxCompiler":
        tried = os.environ.get("CXX") or "c++, g++"
        return (
            f"trainer.compile=true needs a working C++ compiler on this machine (torch.compile's "
            f"inductor builds the model's kernels with it), and none was found (tried {tried}): install "
            f"one (e.g. apt-get install g++), {TURN_OFF}"
        )
    first = (str(inner).strip().splitlines() or [""])[0]
    return (
        f"trainer.compile=true: torch.compile could not compile the model ({type(inner).__name__}: "
        f"{first}); {TURN_OFF}"
    )
