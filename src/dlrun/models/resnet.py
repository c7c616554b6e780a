"""torchvision's ResNet-18 for transfer learning: ImageNet weights, a new head for the data.

Weights are read only as plain tensors (`weights_only=True`); the ImageNet file comes from the
torch hub cache, downloaded there first when the machine is online.
"""

import re
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from dlrun.errors import ConfigError


def resnet18_classifier(
    in_shape: list[int],
    num_classes: int,
    pretrained: bool = True,
    weights_path: Optional[str] = None,
    freeze_backbone: bool = False,
) -> nn.Module:
    from torchvision.models import resnet18

    model = resnet18(weights=None)
    if weights_path is not None:
        _load_backbone(model, _read_state_dict(Path(weights_path).expanduser()), weights_path)
    elif pretrained:
        _load_backbone(model, imagenet_state_dict(), "ImageNet weights")
    if in_shape[0] != 3:
        model.conv1 = _first_conv_for(in_shape[0], model.conv1)
    if freeze_backbone:
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, num_classes)  # the new head always trains
    return model


def imagenet_state_dict() -> dict[str, torch.Tensor]:
    """ResNet-18's ImageNet weights through torchvision's weights API, from the local cache."""
    from torchvision.models import ResNet18_Weights

    url = ResNet18_Weights.IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = re.search(r"-([a-f0-9]+)\.", path.name)
        try:
            torch.hub.download_url_to_file(
                url, str(path), hash_prefix=digest.group(1) if digest else None, progress=False
            )
        except Exception as error:  # URLError offline, HTTPError, a hash mismatch
            raise ConfigError(
                f"ResNet-18 ImageNet weights are not in the torch cache ({path}) and could not be "
                f"downloaded ({type(error).__name__}); copy {path.name} there, set "
                "model.weights_path=FILE, or train from scratch with model.pretrained=false"
            ) from None
    return _read_state_dict(path)


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"model.weights_path: no file at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigError(
            f"cannot read weights from {path} as a plain state dict: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(
            f"{path} is not a state dict of tensors (save one with torch.save(model.state_dict(), path))"
        )
    return state


def _load_backbone(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    # the old head (e.g. ImageNet's 1000 classes) is replaced anyway: leave it out
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [key for key in missing if not key.startswith("fc.")]
    if missing or unexpected:
        raise ConfigError(
            f"{source} do not fit ResNet-18: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )


def _first_conv_for(channels: int, conv: nn.Conv2d) -> nn.Conv2d:
    """The stem for 1-channel (or other) input, keeping what the RGB filters learned."""
    new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
    with torch.no_grad():
        # a grey pixel is R = G = B: summing the RGB filters gives the same response
        summed = conv.weight.sum(dim=1, keepdim=True)
        new.weight.copy_(summed.repeat(1, channels, 1, 1) / channels)
    return new
