"""Each kind of data, and how one raw input of it becomes what the model reads.

dlrun-predict asks here, so a new kind of data adds its preparation beside its loader and a line
below, and never touches the command.
"""

import sys
from collections.abc import Callable

import torch

from dlrun.data.facts import Facts
from dlrun.data.images import prepare_images
from dlrun.data.names import prepare_names
from dlrun.data.tabular import prepare_rows

PREPARE = {
    "image": prepare_images,  # image files
    "table": prepare_rows,  # rows of numbers
    "text": prepare_names,  # words
    "tensor": prepare_rows,  # other data of the user's, given as numbers
}


def on_stderr(note: str) -> None:
    print(f"warning: {note}", file=sys.stderr)


def prepare_inputs(
    inputs: list, facts: Facts, device: torch.device, warn: Callable[[str], None] = on_stderr
) -> torch.Tensor:
    """`inputs` as the model reads them. `warn` is told what an input lost on the way (characters
    the model never saw): dlrun-predict says it on stderr, dlrun-serve in its answer."""
    return PREPARE[facts.kind](inputs, facts, device, warn)
