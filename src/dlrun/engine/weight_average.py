"""An exponential moving average of the model's weights (`trainer.ema.decay`), as timm's ModelEmaV3
and torchvision's reference keep: updated after every optimizer step, it is what validation,
best.pt, dlrun-eval and dlrun-predict use; last.pt keeps both sets, so a resume is exact.

With `trainer.ema.warmup` the decay starts low and rises to its setting, min(decay, (1 + n) /
(10 + n)) after n updates, so that the average is not held back by the random initial weights.
Buffers (BatchNorm's running statistics) are copied from the model, not averaged.
"""

import copy

import torch
from torch import nn


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float, warmup: bool = True):
        self.average = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.warmup, self.updates = decay, warmup, 0

    def decay_now(self) -> float:
        if not self.warmup:
            return self.decay
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """After an optimizer step: average += (1 - decay) x (weights - average)."""
        self.updates += 1
        weight = 1.0 - self.decay_now()
        averaged, current = list(self.average.parameters()), list(model.parameters())
        torch._foreach_lerp_(averaged, current, weight)
        for kept, buffer in zip(self.average.buffers(), model.buffers()):
            kept.copy_(buffer)

    def state_dict(self) -> dict:
        return {"model": self.average.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.average.load_state_dict(state["model"])
        self.updates = state["updates"]
