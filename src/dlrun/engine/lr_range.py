"""The learning-rate range test (`dlrun-lr-find`), as Leslie Smith proposed it and fastai's
lr_find and Lightning's Tuner.lr_find run it: the run's model and optimizer, built as a run would
build them, take optimizer steps at a learning rate rising exponentially from start_lr to end_lr,
and the smoothed training loss is recorded at each. The suggestion is where that loss falls
fastest (the steepest slope against log lr), as Lightning suggests.

The model is made for the test and thrown away: no checkpoint is written, and a run started
afterwards begins from its own fresh weights. The test writes only into its own folder
(runs/lr_find/... unless hydra.run.dir says otherwise): the curve as lr_find.png and
lr_find.csv, and in TensorBoard (the picture, and the loss and lr by step).
"""

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from torch.utils.tensorboard import SummaryWriter

from dlrun.checkpoints.trust import targets
from dlrun.config.schema import LRFind, Trainer
from dlrun.engine.distributed import Ranks
from dlrun.engine.experiment import assembled, checked, set_up_process, users_code
from dlrun.engine.state import Parts
from dlrun.engine.train import train_step
from dlrun.errors import ConfigError
from dlrun.quoting import pasteable, quote_override, shell_path
from dlrun.reporting.lr_figure import lr_figure
from dlrun.reporting.tensorboard import add_picture
from dlrun.reporting.terminal import Report

SMOOTHING = 0.98  # the loss is an exponential moving average over ~50 steps, bias-corrected
SKIP_START, SKIP_END = 10, 1  # the slope is not read at the curve's noisy ends


@dataclass
class Curve:
    lrs: list[float]
    losses: list[float]  # each step's own loss
    smoothed: list[float]
    stopped: Optional[str] = None  # why the sweep ended before end_lr

    def suggestion(self) -> Optional[float]:
        """The lr where the smoothed loss falls fastest; None for too short a curve."""
        kept = self.smoothed[SKIP_START : len(self.smoothed) - SKIP_END]
        if len(kept) < 3:
            return None
        slopes = [kept[i + 1] - kept[i - 1] for i in range(1, len(kept) - 1)]  # steps are even in log lr
        steepest = min(range(len(slopes)), key=slopes.__getitem__)
        return self.lrs[SKIP_START + 1 + steepest]


def find_lr(cfg: DictConfig) -> None:
    """`dlrun-lr-find [overrides]`: the range test for the run those overrides describe."""
    hydra = HydraConfig.get()
    folder = Path(hydra.runtime.output_dir)
    ranks = Ranks()
    device, _ = set_up_process(cfg, hydra, ranks)
    config_targets = tuple(targets(OmegaConf.to_container(cfg)))  # (key, _target_) of each
    with users_code(lambda: "while the model was built", config_targets=config_targets):
        pending, task = checked(cfg, dict(hydra.runtime.choices))
        cfg, trainer, parts = assembled(cfg, pending, task, device, ranks)
    settings = trainer.lr_find
    if settings.end_lr <= settings.start_lr:
        raise ConfigError(
            f"trainer.lr_find.end_lr={settings.end_lr:g} must be above start_lr={settings.start_lr:g}"
        )
    terminal = Report(cfg.terminal.progress)
    terminal.line(
        f"lr range test: {settings.steps} steps from lr {settings.start_lr:g} to {settings.end_lr:g} "
        f"on {device}, on a model made for it (no checkpoint is written); into {shell_path(folder)}"
    )
    with users_code(lambda: "during the lr range test", config_targets=config_targets):
        curve = sweep(parts, trainer, settings, terminal)
    _report(curve, folder, list(hydra.overrides.task), terminal)


def sweep(parts: Parts, trainer: Trainer, settings: LRFind, terminal: Report) -> Curve:
    """Optimizer steps at exponentially rising learning rates, until end_lr or a loss that has
    clearly diverged."""
    groups = parts.optimizer.param_groups
    ratios = [group["lr"] / groups[0]["lr"] if groups[0]["lr"] else 1.0 for group in groups]
    growth = (settings.end_lr / settings.start_lr) ** (1 / (settings.steps - 1))
    curve = Curve([], [], [])
    average, lowest = 0.0, math.inf
    parts.forward.train()
    with terminal.pass_progress("lr range test", settings.steps) as bar:
        for step, (inputs, labels) in enumerate(_batches(parts, settings.steps)):
            lr = settings.start_lr * growth**step
            for group, ratio in zip(groups, ratios):
                group["lr"] = lr * ratio
            targets = inputs if parts.task.against_inputs else labels
            if parts.mixing is not None:
                inputs, targets, labels = parts.mixing(inputs, labels)
            loss = train_step(parts, inputs, targets, trainer)[0].item()
            bar.advance(len(labels))
            if not math.isfinite(loss):
                curve.stopped = f"the loss became {loss} at lr {lr:.3g}"
                break
            average = SMOOTHING * average + (1 - SMOOTHING) * loss
            smoothed = average / (1 - SMOOTHING ** (step + 1))
            curve.lrs.append(lr)
            curve.losses.append(loss)
            curve.smoothed.append(smoothed)
            lowest = min(lowest, smoothed)
            if step % 10 == 0:
                bar.metrics({"loss": smoothed})
            if step > SKIP_START and smoothed > settings.stop_factor * lowest:
                curve.stopped = (
                    f"the smoothed loss passed {settings.stop_factor:g}x its lowest at lr {lr:.3g}"
                )
                break
    return curve


def _batches(parts: Parts, steps: int):
    """`steps` training batches, going round the training split as often as it takes."""
    done = 0
    while done < steps:
        for batch in parts.data.train:
            yield batch
            done += 1
            if done == steps:
                return


def _report(curve: Curve, folder: Path, typed: list[str], terminal: Report) -> None:
    suggested = curve.suggestion()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lr_find.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["lr", "loss", "smoothed_loss"])
        writer.writerows(zip(curve.lrs, curve.losses, curve.smoothed))
    picture = lr_figure(curve.lrs, curve.losses, curve.smoothed, suggested)
    picture.save(folder / "lr_find.png")
    with SummaryWriter(str(folder)) as writer:
        for step, (lr, loss, smoothed) in enumerate(zip(curve.lrs, curve.losses, curve.smoothed)):
            writer.add_scalar("lr_find/lr", lr, step)
            writer.add_scalar("lr_find/loss", loss, step)
            writer.add_scalar("lr_find/smoothed_loss", smoothed, step)
        add_picture(writer, "lr_find/curve", picture.convert("RGB"), 0)
    if curve.stopped:
        terminal.line(f"stopped early: {curve.stopped}")
    terminal.line(f"curve: {shell_path(folder / 'lr_find.png')} (and lr_find.csv, TensorBoard)")
    if suggested is None:
        terminal.warn(
            f"no suggestion: the curve has {len(curve.lrs)} points; raise trainer.lr_find.steps "
            "or lower trainer.lr_find.start_lr"
        )
        return
    replaced = ("optimizer.lr=", "trainer.lr_find", "hydra.run.dir=")
    kept = [quote_override(arg) for arg in typed if not arg.lstrip("+").startswith(replaced)]
    terminal.line(f"suggested lr {suggested:.3g} (where the smoothed loss falls fastest); train with:")
    terminal.line("  " + " ".join(["dlrun", *kept, pasteable("optimizer.lr", f"{suggested:.3g}")]))
