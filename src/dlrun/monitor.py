"""Tracking the best value of a validation metric, for best.pt and for early stopping."""

import math
from typing import Optional


class Monitor:
    def __init__(self, metric: str, mode: str, patience: Optional[int] = None, min_delta: float = 0.0):
        self.metric = metric
        self.mode = mode  # max | min
        self.patience = patience
        self.min_delta = min_delta
        self.best: Optional[float] = None
        self.best_epoch = -1
        self.bad_epochs = 0

    def update(self, value: float, epoch: int) -> bool:
        """Record a new value; True when it improves on the best by more than min_delta."""
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = value > self.best + self.min_delta
        else:
            improved = value < self.best - self.min_delta
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
        else:
            self.bad_epochs += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]
        self.bad_epochs = state["bad_epochs"]
