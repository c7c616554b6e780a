"""Surnames -> language, character by character (the classic char-RNN tutorial's data).

`<root>/names/<Language>.txt` holds one name per line; the file's stem is the label. Names are
folded to ASCII as the tutorial does (NFD, drop combining marks, keep letters and " .,;'"), then
stored as one padded tensor of character ids (0 pads) with a stratified, seeded split.
"""

import string
import unicodedata
from collections.abc import Callable
from pathlib import Path

import torch

from dlrun.data import LoadOptions, Splits
from dlrun.data.facts import Facts
from dlrun.data.split import carve
from dlrun.data.text_files import read_utf8
from dlrun.errors import ConfigError, DataError

KEPT = frozenset(string.ascii_letters + " .,;'")


def fold_to_ascii(name: str) -> str:
    """'Ślusàrski' -> 'Slusarski': accents dropped, other characters outside KEPT removed."""
    decomposed = unicodedata.normalize("NFD", name.strip())
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn" and c in KEPT)


def encode(names: list[str], vocab: str, length: int) -> torch.Tensor:
    """Character ids, padded with 0 to `length`; characters outside the vocabulary are dropped."""
    index = {char: position + 1 for position, char in enumerate(vocab)}
    tokens = torch.zeros(len(names), length, dtype=torch.int64)
    for row, name in enumerate(names):
        ids = [index[char] for char in name if char in index][:length]
        tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.int64)
    return tokens


def load_names(
    root: str, val_fraction: float = 0.1, test_fraction: float = 0.1, *, options: LoadOptions
) -> Splits:
    """Every <root>/names/<Language>.txt, one name per line, as padded character ids."""
    folder = Path(root).expanduser().resolve() / "names"
    files = sorted(folder.glob("*.txt"))
    if not files:
        raise DataError(
            f"no names/*.txt files in {folder}: put one <Language>.txt per language there "
            "(UTF-8, one name per line), or point dataset.root at the folder that holds names/"
        )
    names, labels = _read(files)
    vocab = "".join(sorted(set("".join(names))))
    tokens = encode(names, vocab, max(len(name) for name in names))
    train, val, test = carve(tokens, torch.tensor(labels), val_fraction, test_fraction, options.seed)
    return Splits(
        train=train,
        val=val,
        test=test,
        facts=Facts(
            kind="text",
            task=options.task,
            input_shape=[tokens.shape[1]],
            num_classes=len(files),
            class_names=[file.stem for file in files],
            vocab=vocab,
        ),
    )


def _read(files: list[Path]) -> tuple[list[str], list[int]]:
    names: list[str] = []
    labels: list[int] = []
    for label, file in enumerate(files):
        lines = read_utf8(file, "names files must be UTF-8 text, one name per line").splitlines()
        folded = [fold_to_ascii(line) for line in lines]
        kept = [name for name in folded if name]
        if not kept:
            raise DataError(f"{file} holds no names; remove it or add one name per line")
        names += kept
        labels += [label] * len(kept)
    if len(files) < 2:
        raise DataError(
            f"names data needs at least two languages (files) in {files[0].parent}, found {len(files)}"
        )
    return names, labels


def prepare_names(
    inputs: list, facts: Facts, device: torch.device, warn: Callable[[str], None]
) -> torch.Tensor:
    """Names as training read them: folded to ASCII, encoded with the run's vocabulary. A name
    with no character of the vocabulary is refused; characters left out are told to `warn`."""
    names = [_name_for(item, facts.vocab, warn) for item in inputs]
    length = max(facts.input_shape[0], max(len(name) for name in names))
    return encode(names, facts.vocab, length).to(device)


def _name_for(item, vocab: str, warn: Callable[[str], None]) -> str:
    """`item` as the model reads it: the characters of its vocabulary, after folding."""
    if isinstance(item, (list, dict)):
        raise ConfigError(
            f"inputs: {item} is not a name: this model was trained on names (text), one per input, "
            "as in inputs=[Jones,Satō]"
        )
    typed = str(item)
    read = "".join(char for char in fold_to_ascii(typed) if char in vocab)
    letters = sum(char.isalpha() for char in vocab)
    marks = " ".join(repr(char) for char in vocab if not char.isalpha())
    alphabet = f"{letters} letters" + (f" and {marks}" if marks else "")
    if not read:
        raise ConfigError(
            f"inputs: {typed!r} has no character this model was trained on (its alphabet: "
            f"{alphabet}): it reads names written in letters, as in inputs=[Jones,Satō]"
        )
    seen = set(unicodedata.normalize("NFD", typed.strip())) - set(vocab)
    unknown = sorted(char for char in seen if unicodedata.category(char) != "Mn")  # accents fold away
    if unknown:
        warn(
            f"inputs: {typed!r} has characters the model never saw in training "
            f"({' '.join(unknown)}), left out: the answer is for {read!r}"
        )
    return read
