"""The small record of facts that a dataset knows and a model is built from."""

from dataclasses import asdict, dataclass, field
from typing import Any, Optional


@dataclass
class Facts:
    kind: str  # image | table | text
    task: str  # classification | reconstruction
    input_shape: list[int]  # one sample: [C, H, W] | [features] | [max_length]
    num_classes: int
    class_names: list[str]
    # what raw inputs are normalized with: per channel for images (after scaling to [0, 1]),
    # per feature for tables; predict and the image grids need them to undo or redo it
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    vocab: Optional[str] = None  # text: character i of vocab is token i + 1; 0 pads
    feature_names: list[str] = field(default_factory=list)
    skipped_files: int = 0  # unreadable files left out (dataset.bad_images=skip)
    notes: list[str] = field(default_factory=list)  # what looks wrong with the data: said at start
    # image files for predictions: these transforms (an image folder's val_transforms), or, when
    # None, resized to input_shape (data held in memory at one size)
    eval_transforms: Optional[list[Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Facts":
        return cls(**values)

    def for_config(self) -> dict[str, Any]:
        """The config's `facts` node: this record, plus the names factories use (schema.FACT_NAMES)."""
        return {
            **self.to_dict(),
            "in_shape": list(self.input_shape),
            "channels": self.input_shape[0] if len(self.input_shape) == 3 else None,  # [C, H, W]
            "vocab_size": self.vocab_size if self.vocab else None,
        }

    @property
    def vocab_size(self) -> int:
        return len(self.vocab or "") + 1  # + the padding token
