"""A loss of your own: any torch.nn.Module called as loss(outputs, labels)."""

import torch
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Cross-entropy that weighs down the samples the model already gets right (Lin et al. 2017)."""

    def __init__(self, gamma: float = 2.0):
        super().__init__()
        self.gamma = gamma

    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        log_p = torch.log_softmax(outputs, dim=1).gather(1, labels[:, None]).squeeze(1)
        return (-((1 - log_p.exp()) ** self.gamma) * log_p).mean()
