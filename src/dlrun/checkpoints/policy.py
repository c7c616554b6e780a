"""When each checkpoint file is written: the one place that decides it.

- last.pt: at the end of every epoch, every `trainer.checkpoint_every_n_steps` optimizer steps
  when that is set (a mid-epoch checkpoint that resumes exactly), and when a stop signal arrives;
- best.pt: at the end of an epoch whose monitored validation metric improved; the run's final
  test scores its weights.
"""

from typing import Optional

LAST = "last.pt"
BEST = "best.pt"


class CheckpointPolicy:
    def __init__(self, every_n_steps: Optional[int] = None):
        self.every_n_steps = every_n_steps

    def after_step(self, global_step: int) -> tuple[str, ...]:
        every = self.every_n_steps
        return (LAST,) if every and global_step % every == 0 else ()

    def after_epoch(self, improved: bool) -> tuple[str, ...]:
        return (LAST, BEST) if improved else (LAST,)

    def on_stop(self) -> tuple[str, ...]:
        return (LAST,)
