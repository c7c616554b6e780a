"""An image read as a sequence of its rows (MNIST: 28 steps of 28 pixels) by an RNN, GRU or LSTM."""

import torch
from torch import Tensor, nn

CELLS = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}


def recurrent_layer(
    cell: str, input_size: int, hidden_size: int, num_layers: int, bidirectional: bool, dropout: float = 0.0
) -> nn.Module:
    if cell not in CELLS:
        raise ValueError(f"cell={cell!r} is not known; valid: {', '.join(CELLS)}")
    return CELLS[cell](
        input_size,
        hidden_size,
        num_layers,
        batch_first=True,
        bidirectional=bidirectional,
        dropout=dropout if num_layers > 1 else 0.0,
    )


class RowRNN(nn.Module):
    def __init__(
        self,
        in_shape: list[int],
        num_classes: int,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        bidirectional: bool = False,
    ):
        super().__init__()
        channels, _, width = in_shape
        self.rnn = recurrent_layer(cell, channels * width, hidden_size, num_layers, bidirectional)
        self.hidden_size = hidden_size
        self.bidirectional = bidirectional
        self.fc = nn.Linear(hidden_size * (2 if bidirectional else 1), num_classes)

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        rows = x.permute(0, 2, 1, 3).reshape(batch, height, channels * width)
        outputs, _ = self.rnn(rows)
        last = outputs[:, -1, : self.hidden_size]  # the forward direction after the last row
        if self.bidirectional:
            # the backward direction has read every row once it reaches the first
            last = torch.cat([last, outputs[:, 0, self.hidden_size :]], dim=1)
        return self.fc(last)
