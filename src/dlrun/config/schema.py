"""Typed schema of every config group, and the one place that holds each setting's default.

Each YAML option in `configs/` starts from one of these dataclasses (its defaults list names
`/schema_<group>_<name>@_here_`) and writes only what it changes, so a misspelt key or a value
of the wrong type fails while Hydra composes, before torch is imported. Model schemas mirror the
keyword arguments of the model classes, defaults included; `tests/test_config.py` keeps the two
in step.
"""

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

# ---------------------------------------------------------------------------------------------
# dataset


@dataclass
class Augment:
    """Batched on-device augmentation of training images (off unless asked for)."""

    crop_padding: int = 0  # pixels of zero padding before a random crop back to full size
    hflip: bool = False


@dataclass
class CSVDataset:
    loader: str = "csv"
    path: str = MISSING
    label_column: Any = 0  # column index, or the header name
    delimiter: str = ","
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    standardize: bool = True  # features scaled by the training split's mean and std


@dataclass
class TorchvisionDataset:
    loader: str = MISSING  # mnist | fashion_mnist | cifar10
    root: str = "${oc.env:DLRUN_DATA,data}"
    download: bool = True  # when the files are missing under root (needs internet)
    val_fraction: float = 0.1  # carved from the official training split
    augment: Augment = field(default_factory=Augment)  # e.g. crop_padding=4, hflip=true for CIFAR


@dataclass
class NamesDataset:
    loader: str = "names"
    root: str = "${oc.env:DLRUN_DATA,data}"  # reads <root>/names/*.txt
    val_fraction: float = 0.1
    test_fraction: float = 0.1


@dataclass
class ImageFolderDataset:
    loader: str = "imagefolder"
    root: str = MISSING  # <root>/train/<class>/*, optionally <root>/val/<class>/*
    # the data's own folder under root, for a preset that names it (hymenoptera_data), so that
    # its dataset.root is the same data root as MNIST's
    folder: Optional[str] = None
    val_fraction: float = 0.2  # used only when there is no val/ folder
    # torchvision.transforms.v2 classes by name, with their arguments; the output size must be fixed
    train_transforms: list[Any] = field(
        default_factory=lambda: [{"name": "RandomResizedCrop", "size": 224}, {"name": "RandomHorizontalFlip"}]
    )
    val_transforms: list[Any] = field(
        default_factory=lambda: [{"name": "Resize", "size": 256}, {"name": "CenterCrop", "size": 224}]
    )
    # ImageNet statistics, as the pretrained ResNet expects
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    bad_images: str = "error"  # a file that does not decode: error (named) | skip (counted)
    num_workers: int = 2
    prefetch_factor: int = 2
    persistent_workers: bool = True


# ---------------------------------------------------------------------------------------------
# model (fields mirror each model's keyword arguments; shapes and class counts come from the data)


@dataclass
class LinearModel:
    arch: str = "linear"


@dataclass
class MLPModel:
    arch: str = "mlp"
    hidden_sizes: list[int] = field(default_factory=lambda: [1000])
    activation: str = "relu"  # relu | tanh | sigmoid | gelu | leaky_relu
    dropout: float = 0.0


@dataclass
class LeNetModel:
    arch: str = "lenet"
    activation: str = "tanh"
    padding: int = 2  # on the first conv: 28x28 MNIST keeps LeNet-5's 32x32 geometry


@dataclass
class ConvNetModel:
    arch: str = "cnn"
    channels: list[int] = field(default_factory=lambda: [6, 16])
    kernel_size: int = 5
    hidden_sizes: list[int] = field(default_factory=lambda: [120, 84])


@dataclass
class RowRNNModel:
    arch: str = "row_rnn"
    cell: str = "lstm"  # rnn | gru | lstm
    hidden_size: int = 128
    num_layers: int = 2
    bidirectional: bool = False


@dataclass
class CharRNNModel:
    arch: str = "char_rnn"
    cell: str = "gru"  # rnn | gru | lstm
    hidden_size: int = 128
    num_layers: int = 1
    embedding_dim: int = 0  # 0 feeds one-hot letters, as the classic tutorial
    bidirectional: bool = False
    dropout: float = 0.0


@dataclass
class ResNet18Model:
    arch: str = "resnet18"
    pretrained: bool = True  # ImageNet weights through torchvision's weights API
    weights_path: Optional[str] = None  # a state dict file to load instead
    freeze_backbone: bool = False  # train only the new head


@dataclass
class AutoencoderModel:
    arch: str = "autoencoder"
    hidden_sizes: list[int] = field(default_factory=lambda: [128, 64, 12, 6])


@dataclass
class ConvAutoencoderModel:
    arch: str = "conv_autoencoder"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64])


# ---------------------------------------------------------------------------------------------
# loss (each its own settings: a setting the chosen loss does not use is refused)


@dataclass
class CrossEntropyLoss:
    name: str = "cross_entropy"  # on logits
    label_smoothing: float = 0.0


@dataclass
class NLLLoss:
    name: str = "nll"  # the model then ends in log-softmax


@dataclass
class MSELoss:
    name: str = "mse"  # against the input for autoencoders, against one-hot labels otherwise


@dataclass
class BCEWithLogitsLoss:
    name: str = "bce_with_logits"  # one sigmoid per class, against one-hot labels


# ---------------------------------------------------------------------------------------------
# optimizer (instantiated with _partial_: the parameters are given in code)


@dataclass
class SGD:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = 0.01
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0


@dataclass
class Adam:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class AdamW:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = 0.001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    eps: float = 1e-8
    weight_decay: float = 0.01


@dataclass
class RMSprop:
    _target_: str = "torch.optim.RMSprop"
    _partial_: bool = True
    lr: float = 0.01
    alpha: float = 0.99
    momentum: float = 0.0
    weight_decay: float = 0.0


# ---------------------------------------------------------------------------------------------
# scheduler (`interval` says when it steps; `monitor` is for plateau only; neither reaches torch)


@dataclass
class NoScheduler:
    interval: str = "epoch"


@dataclass
class StepLR:
    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    interval: str = "epoch"
    step_size: int = 7
    gamma: float = 0.1


@dataclass
class MultiStepLR:
    _target_: str = "torch.optim.lr_scheduler.MultiStepLR"
    _partial_: bool = True
    interval: str = "epoch"
    milestones: list[int] = field(default_factory=lambda: [30, 60])
    gamma: float = 0.1


@dataclass
class ExponentialLR:
    _target_: str = "torch.optim.lr_scheduler.ExponentialLR"
    _partial_: bool = True
    interval: str = "epoch"
    gamma: float = 0.95


@dataclass
class CosineLR:
    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    interval: str = "epoch"
    T_max: Optional[int] = None  # None: the run's number of epochs
    eta_min: float = 0.0


@dataclass
class PlateauLR:
    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    interval: str = "epoch"
    monitor: str = "auto"  # auto: the run's monitored validation metric
    mode: str = "auto"  # auto: max for accuracy, min for losses
    factor: float = 0.1
    patience: int = 3
    threshold: float = 1e-4
    min_lr: float = 0.0


@dataclass
class OneCycleLR:
    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    _partial_: bool = True
    interval: str = "step"
    max_lr: Optional[float] = None  # None: optimizer.lr
    pct_start: float = 0.3
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4


# ---------------------------------------------------------------------------------------------
# trainer and logger


@dataclass
class EarlyStopping:
    enabled: bool = False
    monitor: str = "auto"  # auto: trainer.monitor
    mode: str = "auto"
    patience: int = 5  # validations without improvement before stopping
    min_delta: float = 0.0


@dataclass
class Trainer:
    # auto: scaled to the data (config/training_length.py): 10 epochs of 64, more and smaller
    # for a small training split; a number is taken as it is
    epochs: Any = "auto"
    batch_size: Any = "auto"  # the global batch (split between the processes of a torchrun)
    eval_batch_size: Optional[int] = None  # None: 4 x batch_size
    device: str = "auto"  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    deterministic: bool = False
    num_threads: int = 0  # CPU threads for torch; 0: this job's share of the cores
    precision: str = "32"  # 32 | bf16 | 16
    compile: bool = False  # torch.compile the model
    channels_last: bool = False
    limit_train_batches: Optional[int] = None
    limit_val_batches: Optional[int] = None
    log_every_n_steps: int = 50
    grad_clip: Optional[float] = None  # max gradient norm
    on_nonfinite: str = "stop"  # a NaN/inf loss or gradient: stop the run | skip that step
    monitor: str = "auto"  # auto: val/acc for classification, val/mse for reconstruction
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    checkpoint_every_n_steps: Optional[int] = None  # mid-epoch last.pt, besides every epoch end
    resume: Optional[str] = None  # a checkpoint path, or "last" inside a run folder
    resume_force: bool = False  # accept config changes on resume (more epochs, a new lr)


@dataclass
class Logger:
    tensorboard: bool = True
    graph: bool = True
    images: bool = True  # a grid of training inputs (image datasets)
    pr_curves: bool = True
    confusion_matrix: bool = True
    reconstructions: bool = True
    hparams: bool = True
    config_text: bool = True
    histograms: bool = False  # weights and gradients, once per epoch
    progress: str = "auto"  # auto (a bar on a terminal, lines otherwise) | bar | lines | off
    config: str = "auto"  # at the start: full (the tree) | overrides (the settings typed) | off; auto:
    # full for a run, overrides for a sweep job (the whole config is in each run's config.yaml)


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: Trainer = field(default_factory=Trainer)
    logger: Logger = field(default_factory=Logger)
    seed: int = 42
    optimized_metric: str = "auto"  # what a sweep optimizes; auto: trainer.monitor
    facts: Optional[Any] = None  # filled from the data at start-up; never typed by hand


@dataclass
class EvalConfig:
    """`dlrun-eval` arguments."""

    ckpt: str = MISSING
    split: str = "test"  # val | test
    output: Optional[str] = None  # None: <ckpt>.<split>.json beside the checkpoint
    device: str = "auto"
    batch_size: Optional[int] = None  # None: the run's eval batch size
    dataset: Any = field(default_factory=dict)  # overrides of the saved dataset config (root, path)
    allow: list[str] = field(default_factory=list)  # modules the checkpoint may name (config/trust.py)


@dataclass
class PredictConfig:
    """`dlrun-predict` arguments."""

    ckpt: str = MISSING
    inputs: list[Any] = MISSING  # names, image files, or rows of numbers
    topk: int = 3
    format: str = "table"  # table | json
    device: str = "cpu"
    allow: list[str] = field(default_factory=list)  # modules the checkpoint may name (config/trust.py)


# Settings (key prefixes) that say how a run is carried out, not what it computes: a resumed run
# may change them, they are no HPARAMS columns, and sweep job folders are not named after them.
BOOKKEEPING = (
    "logger.",
    "trainer.resume",
    "trainer.device",
    "trainer.num_threads",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "dataset.root",
    "dataset.download",
    "dataset.num_workers",
    "dataset.prefetch_factor",
    "dataset.persistent_workers",
    "hydra.",
    "hparams_search",
)


SCHEMAS = {
    "dataset": {
        "csv": CSVDataset,
        "torchvision": TorchvisionDataset,
        "names": NamesDataset,
        "imagefolder": ImageFolderDataset,
    },
    "model": {
        "linear": LinearModel,
        "mlp": MLPModel,
        "lenet": LeNetModel,
        "cnn": ConvNetModel,
        "row_rnn": RowRNNModel,
        "char_rnn": CharRNNModel,
        "resnet18": ResNet18Model,
        "autoencoder": AutoencoderModel,
        "conv_autoencoder": ConvAutoencoderModel,
    },
    "loss": {
        "cross_entropy": CrossEntropyLoss,
        "nll": NLLLoss,
        "mse": MSELoss,
        "bce_with_logits": BCEWithLogitsLoss,
    },
    "optimizer": {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop},
    "scheduler": {
        "none": NoScheduler,
        "step": StepLR,
        "multistep": MultiStepLR,
        "exponential": ExponentialLR,
        "cosine": CosineLR,
        "plateau": PlateauLR,
        "onecycle": OneCycleLR,
    },
}


def store_schemas() -> None:
    """Store the schemas where the YAML options' defaults lists find them."""
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    # top-level names, not a group, so `dlrun --help` lists only the groups users choose from
    for group, schemas in SCHEMAS.items():
        for name, node in schemas.items():
            store.store(name=f"schema_{group}_{name}", node=node)
