"""`dlrun-predict`: the top-k classes of new inputs, from a checkpoint alone.

Inputs are what the model was trained on: names (folded and encoded with the run's vocabulary),
image files (prepared like the run's validation images), or rows of numbers (standardized with
the run's training statistics, which the checkpoint keeps).
"""

import glob
import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.table import Table

from dlrun.checkpoints.trust import Trust
from dlrun.commands.restore import Restored, restore
from dlrun.data.folder_scan import IMAGE_SUFFIXES
from dlrun.data.kinds import prepare_inputs
from dlrun.engine.runtime import select_device
from dlrun.errors import ConfigError
from dlrun.reporting.terminal import make_console


def predict_from_checkpoint(cfg: DictConfig, trust: Trust) -> list[dict[str, Any]]:
    device = select_device(cfg.device)
    restored = classifier(restore(cfg.ckpt, device, trust))
    facts = restored.facts
    inputs = _plain(cfg.inputs)
    if facts.kind == "image":
        inputs = image_files(inputs)
    if not inputs:
        raise ConfigError("inputs=[...] is empty; give at least one input")
    batch = prepare_inputs(inputs, facts, device)  # as the run prepared its own data
    with torch.no_grad():
        probabilities = restored.model(batch).float().softmax(dim=1)
    results = ranked(inputs, probabilities, facts.class_names, cfg.topk)
    _print(results, cfg.format)
    return results


def classifier(restored: Restored) -> Restored:
    """`restored`, refused where its model does not classify: it has no classes to answer with."""
    if restored.facts.task != "classification":
        raise ConfigError(
            f"{restored.path} is an autoencoder: it reconstructs, it does not classify; use dlrun-eval"
        )
    return restored


def ranked(inputs: list[Any], probabilities: torch.Tensor, class_names: list[str], topk: int) -> list[dict]:
    """Each input with its `topk` classes, most probable first."""
    top = probabilities.topk(min(topk, len(class_names)), dim=1)
    return [
        {
            "input": item,
            "predictions": [
                {"class": class_names[i], "probability": round(p, 6)}
                for p, i in zip(values.tolist(), indices.tolist())
            ],
        }
        for item, values, indices in zip(inputs, top.values, top.indices)
    ]


def image_files(inputs: list[Any]) -> list[str]:
    """Image inputs as files: a folder gives the images in it, a pattern (photos/*.jpg) the files
    it matches, each in name order; a file stays as it is."""
    files = []
    for given in inputs:
        item = str(given)
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ConfigError(f"inputs: {path} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        elif isinstance(given, str) and any(char in item for char in "*?["):
            found = sorted(glob.glob(str(path), recursive=True))
            if not found:
                raise ConfigError(f"inputs: no file matches {item}")
        elif not path.exists() and (not isinstance(given, str) or path.suffix.lower() not in IMAGE_SUFFIXES):
            # a name or a row of numbers given to an image model (a missing photo.jpg is named later)
            raise ConfigError(
                f"inputs: {item!r} is not an image file: this model was trained on images; give image "
                "files, a folder of them, or a pattern such as photos/*.jpg"
            )
        else:
            found = [item]
        files += found
    return files


def _plain(inputs: Any) -> list[Any]:
    return OmegaConf.to_container(inputs) if isinstance(inputs, ListConfig) else list(inputs)


def _print(results: list[dict[str, Any]], output_format: str) -> None:
    if output_format == "json":
        print(json.dumps(results, indent=2))
        return
    table = Table(title="predictions")
    table.add_column("input")
    table.add_column("top classes (probability)")
    for result in results:
        top = ", ".join(f"{p['class']} ({p['probability']:.1%})" for p in result["predictions"])
        table.add_row(str(result["input"]), top)
    make_console().print(table)
