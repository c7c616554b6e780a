"""Image files for predictions, prepared as the run's validation images were."""

from pathlib import Path

import torch

from dlrun.data.batches import Normalize
from dlrun.data.facts import Facts
from dlrun.data.imagefolder import pipeline
from dlrun.errors import DataError


def prepare_images(inputs: list, facts: Facts, device: torch.device) -> torch.Tensor:
    """Image files through the run's validation transforms (or resized to the input size of data
    held in memory), then normalized on the device like every training batch."""
    from PIL import Image, UnidentifiedImageError

    channels = facts.input_shape[0]
    transform = _transform(facts)
    images = []
    for item in inputs:
        file = Path(str(item)).expanduser()
        try:
            with Image.open(file) as image:
                images.append(transform(image.convert("L" if channels == 1 else "RGB")))
        except FileNotFoundError:
            raise DataError(f"image file not found: {file}") from None
        except (UnidentifiedImageError, OSError) as error:
            raise DataError(f"cannot read {file} as an image: {error}") from None
    batch = torch.stack(images).to(device)
    if list(batch.shape[1:]) != list(facts.input_shape):
        raise DataError(
            f"images became {list(batch.shape[1:])} after the run's transforms; "
            f"the model expects {facts.input_shape}"
        )
    if facts.mean is None:  # a dataset of the user's that gives float images: pixels in [0, 1]
        return batch.float() / 255
    return Normalize(facts.mean, facts.std, device)(batch)


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
