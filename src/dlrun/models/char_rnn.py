"""Character-level recurrent classifier (surnames -> language), trained in padded batches.

Token 0 is padding. Each batch is packed by length, so the recurrent layer reads every name only
up to its last letter, in one call for the whole batch. Packed sequences cannot be exported
(ONNX, torch.export): an exported model reads the padded batch instead and takes each name's
output at its last letter, the same numbers for a one-directional layer.
"""

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from dlrun.errors import ConfigError
from dlrun.models.row_rnn import recurrent_layer


class CharRNN(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        cell: str = "gru",
        hidden_size: int = 128,
        num_layers: int = 1,
        embedding_dim: int = 0,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        # embedding_dim 0: one-hot letters, as the classic tutorial feeds them
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0) if embedding_dim else None
        input_size = embedding_dim or vocab_size
        self.rnn = recurrent_layer(cell, input_size, hidden_size, num_layers, bidirectional, dropout)
        self.directions = 2 if bidirectional else 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(hidden_size * self.directions, num_classes)

    def forward(self, tokens: Tensor) -> Tensor:
        lengths = (tokens != 0).sum(dim=1).clamp(min=1)
        if self.embedding is not None:
            inputs = self.embedding(tokens)
        else:
            inputs = nn.functional.one_hot(tokens, self.vocab_size).float()
        if torch.compiler.is_exporting() or torch.jit.is_tracing():
            return self.fc(self.dropout(self._at_last_letters(inputs, lengths)))
        # packing needs the lengths on the CPU (one small copy per batch)
        packed = pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, hidden = self.rnn(packed)
        if isinstance(hidden, tuple):  # an LSTM returns (h, c)
            hidden = hidden[0]
        # the top layer's final state in each direction: [batch, directions * hidden]
        top = hidden[-self.directions :]
        last = torch.cat(list(top), dim=1)
        return self.fc(self.dropout(last))

    def _at_last_letters(self, inputs: Tensor, lengths: Tensor) -> Tensor:
        """The top layer's output at each name's last letter, read over the padded batch: what
        packing gives, for a layer that reads one way (its output there has seen no padding)."""
        if self.directions == 2:
            raise ConfigError(
                "a bidirectional char_rnn reads names backwards from their last letter, which only "
                "packed sequences do, and those cannot be exported: train with model.bidirectional=false "
                "to export"
            )
        outputs, _ = self.rnn(inputs)
        last = (lengths - 1).view(-1, 1, 1).expand(-1, 1, outputs.shape[2])
        return outputs.gather(1, last).squeeze(1)
