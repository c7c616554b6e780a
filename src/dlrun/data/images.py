"""Image files for predictions, prepared as the run's validation images were."""

import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import torch

from dlrun.data.batches import Normalize
from dlrun.data.facts import Facts
from dlrun.data.imagefolder import pipeline
from dlrun.errors import DataError


def prepare_images(
    inputs: list, facts: Facts, device: torch.device, warn: Callable[[str], None]
) -> torch.Tensor:
    """Image files through the run's validation transforms (or resized to the input size of data
    held in memory), then normalized on the device like every training batch."""
    channels = facts.input_shape[0]
    transform = _transform(facts)
    mode = "L" if channels == 1 else "RGB"
    sources = [item if isinstance(item, Upload) else Path(str(item)).expanduser() for item in inputs]
    images = [_read(source, transform, mode, facts, warn) for source in sources]
    batch = torch.stack(images).to(device)
    if list(batch.shape[1:]) != list(facts.input_shape):
        raise DataError(
            f"images became {list(batch.shape[1:])} after the run's transforms; "
            f"the model expects {facts.input_shape}"
        )
    if facts.mean is None:  # a dataset of the user's that gives float images: pixels in [0, 1]
        return batch.float() / 255
    return Normalize(facts.mean, facts.std, device)(batch)


@dataclass
class Upload:
    """An image file's bytes, as an HTTP client sent them (dlrun-serve): read from memory, named
    by the file name the client gave."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


def _read(
    file: Union[Path, Upload], transform, mode: str, facts: Facts, warn: Callable[[str], None]
) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(file.data) if isinstance(file, Upload) else file) as image:
                prepared = transform(image.convert(mode))
    except FileNotFoundError:
        raise DataError(f"image file not found: {file}") from None
    except Image.DecompressionBombError as error:
        raise DataError(_too_large(file, error, facts)) from None
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read {file} as an image: {error}") from None
    for warning in said:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            warn(f"{file} is an image of {_pixels(warning.message)}: read anyway")
    return prepared


def _too_large(file: Path, error: Exception, facts: Facts) -> str:
    from PIL import Image

    return (
        f"{file} is an image of {_pixels(error)}, over Pillow's limit of "
        f"{2 * Image.MAX_IMAGE_PIXELS:,} (its guard against decompression bombs); scale it down "
        f"first: the model reads {facts.input_shape[-2]}x{facts.input_shape[-1]} pixels"
    )


def _pixels(said) -> str:
    """'400,000,000 pixels' from Pillow's "Image size (400000000 pixels) exceeds limit ..."."""
    found = re.search(r"\((\d+) pixels\)", str(said))
    return f"{int(found.group(1)):,} pixels" if found else "too many pixels"


def _transform(facts: Facts):
    if facts.eval_transforms is not None:
        return pipeline(facts.eval_transforms, "dataset.val_transforms")
    from torchvision.transforms import v2

    _, height, width = facts.input_shape
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((height, width), antialias=True),
            v2.ToDtype(torch.uint8, scale=True),
            v2.ToPureTensor(),
        ]
    )
