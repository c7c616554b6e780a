"""Checkpoint files as bytes on disk: written atomically, read only as plain tensors and containers
(what they hold, and its version, is format.py's).

Every read is `torch.load(..., weights_only=True)`: a file that carries pickled code (a hostile
`__reduce__`, a whole pickled model) is refused, whatever TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD says,
because an explicit argument wins over that variable.
"""

import io
import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlrun.errors import CheckpointError

TEMP_MARK = ".tmp-"


def save_file(path: Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` without ever leaving a partial file there.

    The bytes go to a temporary file in the same folder, are flushed to disk, then renamed over
    the old checkpoint in one step; if anything fails the old file is untouched. A write the
    disk refuses (full, read-only, over quota) raises OSError naming `path`.
    """
    buffer = io.BytesIO()  # serialized first: a refused write is then a plain OSError with its errno
    torch.save(payload, buffer)
    temporary = path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        _fsync_folder(path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None
    finally:
        temporary.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    # makes the rename itself durable; not every platform can open a folder
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def check_finite(weights: dict[str, Any], path: Path) -> None:
    """Refuse a checkpoint whose weights hold NaN or inf, naming the first bad tensor."""
    for name, tensor in weights.items():
        if (
            isinstance(tensor, torch.Tensor)
            and tensor.is_floating_point()
            and not torch.isfinite(tensor).all()
        ):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(
                f"{path} holds weights that are not finite: {name} has {bad} NaN/inf value(s) of "
                f"{tensor.numel()}; it cannot be used (the run diverged before it was saved?): take an "
                "earlier checkpoint"
            )


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete temporary files left by a save that was killed half-way."""
    stale = [p for p in folder.glob(f".*.pt{TEMP_MARK}*") if p.is_file()] if folder.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_file(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """What a checkpoint file holds, read safely, or one line saying what is wrong with the file."""
    _check_file(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        detail = str(error).splitlines()[0] if "Unsupported" in str(error) else "it holds pickled objects"
        raise CheckpointError(
            f"refusing to load {path}: it is not plain tensors and containers ({_short(detail)}); "
            "dlrun only loads weights-only checkpoints it wrote itself"
        ) from None
    except Exception as error:  # garbage makes torch's readers fail in many ways (IndexError, EOFError, ...)
        reason = _short(str(error)) or type(error).__name__
        raise CheckpointError(
            f"{path} is not a readable checkpoint (truncated or corrupt?): {reason}"
        ) from None
    return payload


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file; {_file_in(path)}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (a save was interrupted?); use another checkpoint")


def _file_in(folder: Path) -> str:
    """What to give instead of a folder: a checkpoint that is there, or what one looks like."""
    for candidate in (folder / "checkpoints" / "last.pt", folder / "last.pt", *sorted(folder.rglob("*.pt"))):
        if candidate.is_file():
            return f"give the file, e.g. {candidate}"
    return "give a checkpoint file that dlrun wrote (<run folder>/checkpoints/last.pt or best.pt)"


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) generator states as weights-only-loadable values."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"].cpu())
    if states["cuda"] and torch.cuda.is_available():
        # a checkpoint from a machine with more GPUs restores the devices that exist here
        count = min(len(states["cuda"]), torch.cuda.device_count())
        torch.cuda.set_rng_state_all([state.cpu() for state in states["cuda"][:count]])
