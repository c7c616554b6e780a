"""`dlrun-export`: a checkpoint's model as a file that needs nothing of dlrun.

ONNX (for onnxruntime and serving stacks), a torch.export program (.pt2) or TorchScript, with a
JSON beside it that says how to prepare an input (class names, input shape, mean and std, the
vocabulary). Before the file is called done, it runs on a batch of the run's own data, and on
one input of it alone (the batch size is free), and its answers are compared with the PyTorch
model's: beyond `tolerance` the file is not kept.
"""

import contextlib
import io
import json
import logging
import os
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch import Tensor, nn

from dlrun.checkpoints.trust import Trust
from dlrun.commands.restore import Restored, restore, restored_data
from dlrun.data import LoadOptions
from dlrun.data.kinds import on_stderr
from dlrun.errors import DataError, DlrunError
from dlrun.quoting import shell_path
from dlrun.reporting.terminal import make_console

EXAMPLES = 8  # inputs of the run's data the exported model is checked on
SUFFIXES = {"onnx": ".onnx", "torch_export": ".pt2", "torchscript": ".torchscript.pt"}
INSTALL_ONNX = 'pip install "dlrun[onnx]" (or, in a checkout, pip install -e ".[onnx]")'


def export_checkpoint(cfg: DictConfig, trust: Trust) -> dict[str, Any]:
    device = torch.device("cpu")
    restored = restore(cfg.ckpt, device, trust, data_too=True)
    examples, origin = _examples(restored, cfg.dataset, device)
    output = Path(cfg.output).expanduser() if cfg.output else _beside(restored.path, cfg.format)
    difference, any_length = _written_if_close(cfg, restored, examples, origin, output)
    described = _description(restored, cfg.format, output, origin, difference, any_length)
    facts_file = output.with_name(output.name + ".json")
    facts_file.write_text(json.dumps(described, indent=2) + "\n")
    console = make_console()
    console.print(f"exported {described['model']} as {cfg.format}: {shell_path(output)}", soft_wrap=True)
    console.print(f"how to prepare its inputs: {shell_path(facts_file)}", soft_wrap=True)
    console.print(
        f"checked on {origin}: largest difference from the PyTorch model {difference:.2e}", soft_wrap=True
    )
    return described


def _written_if_close(
    cfg: DictConfig, restored: Restored, examples: Tensor, origin: str, output: Path
) -> tuple[float, bool]:
    """Export to a temporary name, read the file back, compare; renamed to `output` only when it
    answers as the PyTorch model does. (the largest difference, whether names of any length go)"""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")  # torch.export wants .pt2
    target = restored.cfg.model._target_
    with torch.no_grad():
        expected = restored.model(examples).float()
    try:
        run = _export(cfg.format, restored.model, examples, partial, target)
        difference, any_length = _difference(run, examples, expected)
        allowed = cfg.tolerance * max(1.0, expected.abs().max().item())
        if difference > allowed:
            raise DlrunError(
                f"the {cfg.format} export of {target} differs from the PyTorch model by up to "
                f"{difference:.3g} on {origin} (allowed: {allowed:.3g}, tolerance={cfg.tolerance}); not "
                "written. A larger tolerance=... accepts it"
            )
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, output)
    return difference, any_length


def _beside(checkpoint: Path, export_format: str) -> Path:
    return checkpoint.with_name(checkpoint.stem + SUFFIXES[export_format])


def _examples(restored: Restored, overrides: Any, device: torch.device) -> tuple[Tensor, str]:
    """(EXAMPLES inputs as the model reads them, where they come from): the run's validation
    data, read again; made-up inputs of the right shape, said, where that data is gone."""
    facts = restored.facts
    options = LoadOptions(
        task=facts.task, seed=restored.cfg.seed, batch_size=EXAMPLES, eval_batch_size=EXAMPLES, device=device
    )
    try:
        inputs, _ = next(iter(restored_data(restored, overrides, options).val.batches()))
        return inputs[:EXAMPLES], f"{len(inputs[:EXAMPLES])} inputs of the run's validation data"
    except DataError as error:
        on_stderr(
            f"the run's data cannot be read ({error}); the export is checked on made-up inputs "
            "instead (give dataset.root=... to check it on the data)"
        )
    generator = torch.Generator().manual_seed(0)
    if facts.kind == "text":
        inputs = torch.randint(1, facts.vocab_size, (EXAMPLES, facts.input_shape[0]), generator=generator)
        inputs[:, facts.input_shape[0] // 2 :] = 0  # names end before the padding
    else:
        inputs = torch.randn(EXAMPLES, *facts.input_shape, generator=generator)
    return inputs, f"{EXAMPLES} made-up inputs"


def _export(export_format: str, model: nn.Module, examples: Tensor, path: Path, target: str) -> Callable:
    """Write `model` to `path`; the exported model read back from it, as a function."""
    exporter = {"onnx": _onnx, "torch_export": _torch_export, "torchscript": _torchscript}[export_format]
    try:
        with warnings.catch_warnings(), _torch_logs_quiet():
            warnings.simplefilter("ignore")  # the exporters' notes on tracing and opsets
            return exporter(model, examples, path)
    except ImportError as error:
        raise DlrunError(f"format={export_format} needs {error.name or 'onnx'}: {INSTALL_ONNX}") from None
    except DlrunError:
        raise
    except Exception as error:
        raise DlrunError(cannot_export(error, export_format, target)) from None


@contextlib.contextmanager
def _torch_logs_quiet():
    """torch.export logs and prints what it could not trace (graphs, symbol names) before it
    raises: the one line dlrun-export ends with says it instead."""
    logger = logging.getLogger("torch")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    said = io.StringIO()  # and the graphs it prints of the code it could not follow
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            yield
    finally:
        logger.setLevel(level)


def _dynamic(examples: Tensor, length: bool = True) -> tuple[dict, ...]:
    """The batch size is free; so is a text model's length where the exporter can keep it so
    (torch.export fixes a recurrent layer's)."""
    dims = {0: torch.export.Dim("batch", min=1)}
    if length and examples.dtype == torch.int64:
        dims[1] = torch.export.Dim("length", min=2)
    return (dims,)


def _onnx(model: nn.Module, examples: Tensor, path: Path) -> Callable:
    import onnxruntime

    torch.onnx.export(
        model,
        (examples,),
        str(path),
        dynamo=True,
        input_names=["input"],
        output_names=["output"],
        dynamic_shapes=_dynamic(examples),
        external_data=False,
        verbose=False,
    )
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])


def _torch_export(model: nn.Module, examples: Tensor, path: Path) -> Callable:
    program = torch.export.export(model, (examples,), dynamic_shapes=_dynamic(examples, length=False))
    torch.export.save(program, str(path))
    return torch.export.load(str(path)).module()


def _torchscript(model: nn.Module, examples: Tensor, path: Path) -> Callable:
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, examples)
    for warning in said:
        # a trace records the one path its example took: a branch on a value would be frozen
        branch = issubclass(warning.category, torch.jit.TracerWarning) and "Python boolean" in str(
            warning.message
        )
        if branch and f"{os.sep}torch{os.sep}" not in warning.filename:  # torch's own checks are safe
            raise DlrunError(
                f"{Path(warning.filename).name}:{warning.lineno} branches on the value of a tensor, and a "
                "trace keeps only the branch its example took: the TorchScript file would answer "
                "other inputs wrongly. Write the branch with torch.where, or export format=onnx or "
                "torch_export, which refuse it by name"
            )
    traced.save(str(path))
    return torch.jit.load(str(path))


def _difference(run: Callable, examples: Tensor, expected: Tensor) -> tuple[float, bool]:
    """(The largest difference from the PyTorch model's outputs, whether a text model takes names
    of any length): on the batch, on its first input alone (a batch of one, which an exporter may
    have fixed the batch size against) and, for text, on the batch padded longer."""
    with torch.no_grad():
        whole = run(examples).float()
        alone = run(examples[:1]).float()
        difference = max((whole - expected).abs().max().item(), (alone - expected[:1]).abs().max().item())
        if examples.dtype != torch.int64:
            return difference, True
        try:
            longer = run(torch.nn.functional.pad(examples, (0, 4))).float()
        except Exception:  # the program fixed the length: names are padded or cut to it
            return difference, False
    return max(difference, (longer - expected).abs().max().item()), True


# "File ".../nets.py", line 16, in forward": the user's line that the exporter could not follow
USER_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)')


def cannot_export(error: BaseException, export_format: str, target: str) -> str:
    """What could not be exported, in one line: the innermost reason, and the line of the model's
    code where it happened when the exporter names one outside torch."""
    reasons = []
    while error is not None:
        reasons.append(error)
        error = error.__cause__ or error.__context__
    innermost = reasons[-1]
    text = " ".join(str(reason) for reason in reasons)
    frames = [frame for frame in USER_FRAME.findall(text) if "/torch/" not in frame[0]]
    where = f" ({Path(frames[-1][0]).name}:{frames[-1][1]}, in {frames[-1][2]})" if frames else ""
    first = next((line.strip() for line in str(innermost).splitlines() if line.strip()), "")
    fix = (
        "; a branch on the values of the inputs cannot be exported: write it with torch.where (or torch.cond)"
        if "data-dependent" in text
        else ""
    )
    kind = "" if isinstance(innermost, DlrunError) else f"{type(innermost).__name__}: "  # dlrun's own reason
    return f"cannot export {target} as {export_format}: {kind}{first[:300]}{where}{fix}"


def _description(
    restored: Restored, export_format: str, output: Path, origin: str, difference: float, any_length: bool
) -> dict:
    """What a consumer needs to feed the exported model, without dlrun."""
    facts = restored.facts
    batch = ["batch", *facts.input_shape]
    if facts.kind == "text":
        batch = ["batch", "length" if any_length else facts.input_shape[0]]
    return {
        "format": export_format,
        "file": output.name,
        "checkpoint": str(restored.path),
        "model": restored.cfg.model._target_,
        "task": facts.task,
        "kind": facts.kind,
        "input": {
            "name": "input",
            "shape": batch,
            "dtype": "int64" if facts.kind == "text" else "float32",
        },
        "output": {
            "name": "output",
            "shape": ["batch", facts.num_classes] if facts.task == "classification" else batch,
            "is": "logits: their softmax gives the class probabilities"
            if facts.task == "classification"
            else "the reconstructed input",
        },
        "class_names": facts.class_names,
        "preparation": _preparation(facts, any_length),
        "checked": {"on": origin, "largest_difference": difference},
    }


def _preparation(facts, any_length: bool) -> dict:
    if facts.kind == "text":
        padded = "to at least" if any_length else "(or cut) to exactly"
        return {
            "steps": "fold to ASCII (NFD, drop accents), keep the characters of vocab; character i of "
            f"vocab is token i + 1; pad with 0 {padded} length",
            "vocab": facts.vocab,
            "length": facts.input_shape[0],
        }
    if facts.kind == "image":
        return {
            "steps": "decode as RGB (L for one channel), apply transforms (torchvision.transforms.v2, in "
            "order; none: resize to the input shape), then per channel (pixel / 255 - mean) / std",
            "transforms": facts.eval_transforms,
            "mean": facts.mean,
            "std": facts.std,
        }
    return {
        "steps": "one row of numbers per input, in the order of features, then (x - mean) / std per feature",
        "features": facts.feature_names,
        "mean": facts.mean,
        "std": facts.std,
    }
