"""`dlrun-predict`: the top-k classes of new inputs, from a checkpoint alone.

Inputs are what the model was trained on: names (folded and encoded with the run's vocabulary),
image files (prepared like the run's validation images), or rows of numbers (standardized with
the run's training statistics, which the checkpoint keeps).
"""

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from rich.table import Table

from dlrun.commands.restore import restore
from dlrun.config.trust import Trust
from dlrun.data.batches import Normalize
from dlrun.data.facts import Facts
from dlrun.data.names import encode, fold_to_ascii
from dlrun.engine.runtime import select_device
from dlrun.errors import ConfigError, DataError
from dlrun.reporting.terminal import make_console

FORMATS = ("table", "json")


def predict_from_checkpoint(cfg: DictConfig, trust: Trust) -> list[dict[str, Any]]:
    if cfg.format not in FORMATS:
        raise ConfigError(f"format={cfg.format} is not valid; valid: {', '.join(FORMATS)}")
    if cfg.topk < 1:
        raise ConfigError(f"topk={cfg.topk} must be at least 1")
    device = select_device(cfg.device)
    restored = restore(cfg.ckpt, device, trust)
    facts = restored.facts
    if facts.task != "classification":
        raise ConfigError(
            f"{restored.path} is an autoencoder: it reconstructs, it does not classify; use dlrun-eval"
        )
    inputs = _plain(cfg.inputs)
    if not inputs:
        raise ConfigError("inputs=[...] is empty; give at least one input")
    batch = prepare(inputs, facts, restored.cfg, device)
    with torch.no_grad():
        probabilities = restored.model(batch).float().softmax(dim=1)
    top = probabilities.topk(min(cfg.topk, facts.num_classes), dim=1)
    results = [
        {
            "input": item,
            "predictions": [
                {"class": facts.class_names[i], "probability": round(p, 6)}
                for p, i in zip(values.tolist(), indices.tolist())
            ],
        }
        for item, values, indices in zip(inputs, top.values, top.indices)
    ]
    _print(results, cfg.format)
    return results


def prepare(inputs: list[Any], facts: Facts, run_cfg: DictConfig, device: torch.device) -> torch.Tensor:
    if facts.kind == "text":
        names = [fold_to_ascii(str(item)) for item in inputs]
        length = max(facts.input_shape[0], max(len(name) for name in names))
        return encode(names, facts.vocab, length).to(device)
    if facts.kind == "image":
        return _images(inputs, facts, run_cfg, device)
    return _rows(inputs, facts).to(device)  # a table, or other tensors given as rows of numbers


def _rows(inputs: list[Any], facts: Facts) -> torch.Tensor:
    """Rows of numbers, standardized as in training (tables of dlrun's), shaped as the inputs."""
    width = math.prod(facts.input_shape)
    rows = []
    for item in inputs:
        values = item if isinstance(item, list) else [item]
        if len(values) != width:
            raise ConfigError(
                f"each input row needs {width} numbers ({', '.join(facts.feature_names) or 'the features'}), "
                f"got {len(values)}: {values}"
            )
        try:
            rows.append([float(value) for value in values])
        except (TypeError, ValueError):
            raise ConfigError(f"input row {values} holds something that is not a number") from None
    raw = torch.tensor(rows, dtype=torch.float32)
    if facts.mean is not None:
        raw = (raw - torch.tensor(facts.mean)) / torch.tensor(facts.std)
    return raw.view(len(rows), *facts.input_shape)


def _images(inputs: list[Any], facts: Facts, run_cfg: DictConfig, device: torch.device) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms import v2

    channels, height, width = facts.input_shape
    if run_cfg.dataset.get("loader") == "imagefolder":
        from dlrun.data.imagefolder import pipeline

        transform = pipeline(run_cfg.dataset.val_transforms, "dataset.val_transforms")
    else:  # in-memory datasets are fixed-size: bring any image to that size
        transform = v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((height, width), antialias=True),
                v2.ToDtype(torch.uint8, scale=True),
                v2.ToPureTensor(),
            ]
        )
    images = []
    for item in inputs:
        path = Path(str(item)).expanduser()
        try:
            with Image.open(path) as image:
                image = image.convert("L" if channels == 1 else "RGB")
                images.append(transform(image))
        except FileNotFoundError:
            raise DataError(f"image file not found: {path}") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read {path} as an image: {error}") from None
    batch = torch.stack(images).to(device)
    if list(batch.shape[1:]) != [channels, height, width]:
        raise DataError(
            f"images became {list(batch.shape[1:])} after the run's transforms; "
            f"the model expects {facts.input_shape}"
        )
    if facts.mean is None:  # a dataset of the user's that gives float images: pixels in [0, 1]
        return batch.float() / 255
    return Normalize(facts.mean, facts.std, device)(batch)


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
