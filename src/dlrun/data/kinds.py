"""Each kind of data, and how one raw input of it becomes what the model reads.

dlrun-predict asks here, so a new kind of data adds its preparation beside its loader and a line
below, and never touches the command.
"""

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


def prepare_inputs(inputs: list, facts: Facts, device: torch.device) -> torch.Tensor:
    return PREPARE[facts.kind](inputs, facts, device)
