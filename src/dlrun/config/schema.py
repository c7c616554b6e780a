"""Every option of every config group: a typed dataclass that is the option itself.

Each dataclass below is registered as a Hydra option by `@option(group, name)`, so `model=mlp`
composes MLPModel: its `_target_` names the code (dlrun's own is built exactly like a user's),
its fields are the settings with their defaults, each bound or closed set of values sits beside
its field, and what dlrun must know before torch loads sits on the class (`reads`: the kinds of
data a model takes; `task`: what it does; `kind`: what a dataset is; `fits`: the tasks a loss
fits). A misspelt key or a value of the wrong type fails while Hydra composes, and every other
rule in config/checks.py reads these declarations: nothing here imports torch.

Model schemas mirror the keyword arguments of the model classes, defaults included;
tests/test_config.py keeps the two in step.
"""

from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from typing import Any, ClassVar, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

AUTO = "auto"

# group -> option name -> the dataclass (or an instance of it, for a variant) that is the option
OPTIONS: dict[str, dict[str, Any]] = {}


def option(group: str, option_name: str, **changed: Any):
    """Register the decorated dataclass as `group=option_name`; `changed` makes a variant of it
    (`model=gru` is RowRNNModel with cell=gru)."""

    def register(schema: type) -> type:
        OPTIONS.setdefault(group, {})[option_name] = schema(**changed) if changed else schema
        return schema

    return register


def schema_of(node: Any) -> Optional[type]:
    """The dataclass of an option (a class, or an instance for a variant)."""
    return node if isinstance(node, type) else type(node) if is_dataclass(node) else None


# -- what a field may hold, beside the field ------------------------------------------------------


def within(bounds: str, default: Any, *, auto: bool = False, help: str = "") -> Any:
    """A number within `bounds` (interval notation: "[0, 1)", "(0, inf)"); `auto` also allows
    the word auto. None always passes (an optional setting left unset)."""
    return _field(default, bounds=bounds, auto=auto, help=help)


def each_within(bounds: str, default: list, *, help: str = "") -> Any:
    """A list whose every element lies within `bounds`."""
    return _field(default, each=bounds, help=help)


def one_of(choices: type[Enum], default: Any, *, help: str = "") -> Any:
    """One of the values of `choices`, as typed (the Enum's values: "32", "bf16", "16")."""
    return _field(default.value if isinstance(default, Enum) else default, choices=choices, help=help)


def path(default: Any = MISSING, *, help: str = "") -> Any:
    """A file or folder: typed as it is on the command line (spaces, `=`, `~` included)."""
    return _field(default, path=True, help=help)


def described(default: Any, help: str) -> Any:
    return _field(default, help=help)


def _field(default: Any, **metadata: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: _copy(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return [_copy(item) for item in value]
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


# -- closed sets ------------------------------------------------------------------------------------


class Kind(str, Enum):
    """What a sample of the data is."""

    IMAGE = "image"
    TABLE = "table"
    TEXT = "text"


class Task(str, Enum):
    CLASSIFICATION = "classification"
    RECONSTRUCTION = "reconstruction"


class Precision(str, Enum):
    FP32 = "32"
    BF16 = "bf16"
    FP16 = "16"


class OnNonFinite(str, Enum):
    STOP = "stop"  # stop the run within one step, naming it
    SKIP = "skip"  # leave the step out: no weight changes


class Mode(str, Enum):
    AUTO = "auto"  # max for accuracy, min for losses and errors
    MIN = "min"
    MAX = "max"


class Interval(str, Enum):
    EPOCH = "epoch"
    STEP = "step"


class Activation(str, Enum):
    RELU = "relu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    GELU = "gelu"
    LEAKY_RELU = "leaky_relu"


class Cell(str, Enum):
    RNN = "rnn"
    GRU = "gru"
    LSTM = "lstm"


class TorchvisionSet(str, Enum):
    """The image sets dlrun reads through torchvision (data/vision.py: SOURCES)."""

    MNIST = "mnist"
    FASHION_MNIST = "fashion_mnist"
    CIFAR10 = "cifar10"


class AutoAugment(str, Enum):
    # torchvision.transforms.v2's policies, one random draw per image
    TRIVIALAUGMENT = "trivialaugment"  # TrivialAugmentWide: one op at a random strength
    RANDAUGMENT = "randaugment"  # RandAugment: two ops at strength 9 of 31
    AUTOAUGMENT = "autoaugment"  # AutoAugment's ImageNet policy


class BadImages(str, Enum):
    ERROR = "error"  # name the file and stop
    SKIP = "skip"  # leave it out, count it, name it in dlrun.log


class Progress(str, Enum):
    AUTO = "auto"  # a bar on a terminal, lines otherwise
    BAR = "bar"
    LINES = "lines"
    OFF = "off"


class ConfigView(str, Enum):
    AUTO = "auto"  # brief for a run, overrides for a sweep job
    BRIEF = "brief"  # each group's option and the settings that differ from its defaults
    FULL = "full"
    OVERRIDES = "overrides"
    OFF = "off"


class Split(str, Enum):
    VAL = "val"
    TEST = "test"


class Format(str, Enum):
    TABLE = "table"
    JSON = "json"


class ExportFormat(str, Enum):
    ONNX = "onnx"
    TORCH_EXPORT = "torch_export"
    TORCHSCRIPT = "torchscript"


# ---------------------------------------------------------------------------------------------
# dataset


@dataclass
class Mixing:
    """MixUp / CutMix of training batches for image classification (data/mixing.py); 0: off."""

    mixup_alpha: float = within("[0, inf)", 0.0)  # Beta(alpha, alpha) draws the share; 0.2 is usual
    cutmix_alpha: float = within("[0, inf)", 0.0)  # 1.0 is usual; with both, each batch takes one


@dataclass
class Augment(Mixing):
    """Augmentation of training images held in memory (off unless asked for): crops and flips of
    whole batches on the device, a policy and erasing per image (data/batches.py), mixing."""

    crop_padding: int = within("[0, inf)", 0)  # pixels of zero padding before a random crop back to size
    hflip: bool = False
    auto: Optional[str] = one_of(AutoAugment, None)  # trivialaugment, randaugment or autoaugment
    random_erasing: float = within("[0, 1]", 0.0)  # the chance each image has a rectangle erased


DATA_ROOT = "${oc.env:DLRUN_DATA,data}"


@option("dataset", "csv")
@option("dataset", "wine", path="${dlrun.package_file:data/wine.csv}")
@dataclass
class CSVDataset:
    """Any CSV table: one row per sample, a label column, numeric features (dataset.path is
    required). Train / val / test are stratified, seeded splits; features are standardized with the
    training split's statistics. `wine` is the UCI Wine table shipped inside dlrun (178 wines, 3
    cultivars in column 0, 13 chemical features), so the default run works offline."""

    _target_: str = "dlrun.data.tabular.load_csv"
    kind: ClassVar[Kind] = Kind.TABLE
    path: str = path()
    label_column: Any = 0  # column index, or the header name
    delimiter: str = ","  # one character, e.g. ';' or '\t'
    val_fraction: float = within("[0, 1)", 0.2)
    test_fraction: float = within("[0, 1)", 0.2)
    standardize: bool = True  # features scaled by the training split's mean and std


@option("dataset", "mnist", name=TorchvisionSet.MNIST.value)
@option("dataset", "fashion_mnist", name=TorchvisionSet.FASHION_MNIST.value)
@option("dataset", "cifar10", name=TorchvisionSet.CIFAR10.value)
@dataclass
class TorchvisionDataset:
    """MNIST digits, Fashion-MNIST clothing (60k train + 10k test, 1x28x28) or CIFAR-10 (50k + 10k,
    3x32x32) through torchvision; val is carved from the training split. Files live under
    dataset.root (default ./data, or $DLRUN_DATA), downloaded when missing unless
    dataset.download=false; held on the training device as uint8, normalized there per batch."""

    _target_: str = "dlrun.data.vision.load_torchvision"
    kind: ClassVar[Kind] = Kind.IMAGE
    name: str = one_of(TorchvisionSet, MISSING)
    root: str = path(DATA_ROOT)
    download: bool = True  # when the files are missing under root (needs internet)
    val_fraction: float = within("[0, 1)", 0.1)  # carved from the official training split
    augment: Augment = field(default_factory=Augment)  # e.g. crop_padding=4, hflip=true for CIFAR


@option("dataset", "names")
@dataclass
class NamesDataset:
    """Surnames -> language, one character at a time: <root>/names/<Language>.txt, one name per
    line (18 languages, ~20k names in the classic tutorial's data); accents are folded to ASCII."""

    _target_: str = "dlrun.data.names.load_names"
    kind: ClassVar[Kind] = Kind.TEXT
    root: str = path(DATA_ROOT)  # reads <root>/names/*.txt
    val_fraction: float = within("[0, 1)", 0.1)
    test_fraction: float = within("[0, 1)", 0.1)


@option("dataset", "imagefolder")
@dataclass
class ImageFolderDataset:
    """Any folder of images: <root>/train/<class>/*.jpg and <root>/val/<class>/*.jpg (without
    val/, a seeded split of train/). Transforms are torchvision.transforms.v2 classes by name;
    images are decoded by DataLoader workers and normalized on the device with mean/std."""

    _target_: str = "dlrun.data.imagefolder.load_imagefolder"
    kind: ClassVar[Kind] = Kind.IMAGE
    root: str = path()  # <root>/train/<class>/*, optionally <root>/val/<class>/*
    # the data's own folder under root, for a preset that names it (hymenoptera_data), so that
    # its dataset.root is the same data root as MNIST's
    folder: Optional[str] = None
    val_fraction: float = within("[0, 1)", 0.2)  # used only when there is no val/ folder
    # torchvision.transforms.v2 transforms by _target_ (a Compose, or a list of them), with their
    # arguments; the output size must be fixed. None: RandomResizedCrop(224), RandomHorizontalFlip
    # for training; Resize(256), CenterCrop(224) for val and test. They stay settings
    # (_recursive_: false): the loader builds them, and a checkpoint keeps them for dlrun-predict
    _recursive_: bool = False
    train_transforms: Any = None
    val_transforms: Any = None
    # ImageNet statistics, as the pretrained ResNet expects
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])
    bad_images: str = one_of(BadImages, BadImages.ERROR)  # a file that does not decode
    # MixUp / CutMix; policies and erasing go in train_transforms (v2.TrivialAugmentWide...)
    augment: Mixing = field(default_factory=Mixing)
    num_workers: int = within("[0, inf)", 2)
    prefetch_factor: int = within("[1, inf)", 2)
    persistent_workers: bool = True


# ---------------------------------------------------------------------------------------------
# model (fields mirror each model's keyword arguments; shapes and class counts come from the data)

IMAGE_OR_TABLE = (Kind.IMAGE, Kind.TABLE)


@option("model", "linear")
@dataclass
class LinearModel:
    """Logistic regression: one linear layer from the flattened input to the classes."""

    _target_: str = "dlrun.models.linear.LogisticRegression"
    reads: ClassVar[tuple[Kind, ...]] = IMAGE_OR_TABLE


@option("model", "mlp")
@dataclass
class MLPModel:
    """Multi-layer perceptron on the flattened input (the classic 784-1000-10 MNIST net)."""

    _target_: str = "dlrun.models.mlp.MLP"
    reads: ClassVar[tuple[Kind, ...]] = IMAGE_OR_TABLE
    hidden_sizes: list[int] = each_within("[1, inf)", [1000])
    activation: str = one_of(Activation, Activation.RELU)
    dropout: float = within("[0, 1)", 0.0)


@option("model", "lenet")
@dataclass
class LeNetModel:
    """LeNet-5: conv 6@5x5, tanh, avg-pool, conv 16@5x5, tanh, avg-pool, 120-84-classes."""

    _target_: str = "dlrun.models.lenet.LeNet5"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    activation: str = one_of(Activation, Activation.TANH)
    padding: int = within("[0, inf)", 2)  # on the first conv: 28x28 MNIST keeps LeNet-5's 32x32 geometry


@option("model", "cnn")
@dataclass
class ConvNetModel:
    """The classic CIFAR ConvNet: (conv-relu-maxpool) per channel width, then fully connected."""

    _target_: str = "dlrun.models.convnet.ConvNet"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    channels: list[int] = each_within("[1, inf)", [6, 16])
    kernel_size: int = within("[1, inf)", 5)
    hidden_sizes: list[int] = each_within("[1, inf)", [120, 84])


@option("model", "lstm")
@option("model", "gru", cell=Cell.GRU.value)
@option("model", "rnn", cell=Cell.RNN.value)
@dataclass
class RowRNNModel:
    """Reads an image as a sequence of its rows (28 steps of 28 pixels for MNIST) with an LSTM,
    a GRU (`model=gru`) or a plain RNN (`model=rnn`)."""

    _target_: str = "dlrun.models.row_rnn.RowRNN"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    cell: str = one_of(Cell, Cell.LSTM)
    hidden_size: int = within("[1, inf)", 128)
    num_layers: int = within("[1, inf)", 2)
    bidirectional: bool = False


@option("model", "char_rnn")
@dataclass
class CharRNNModel:
    """Character-level recurrent classifier for dataset=names (padded batches, packed sequences)."""

    _target_: str = "dlrun.models.char_rnn.CharRNN"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.TEXT,)
    cell: str = one_of(Cell, Cell.GRU)
    hidden_size: int = within("[1, inf)", 128)
    num_layers: int = within("[1, inf)", 1)
    embedding_dim: int = within("[0, inf)", 0)  # 0 feeds one-hot letters, as the classic tutorial
    bidirectional: bool = False
    dropout: float = within("[0, 1)", 0.0)


@option("model", "resnet18")
@dataclass
class ResNet18Model:
    """torchvision ResNet-18 with a new head sized to the data's classes (transfer learning)."""

    _target_: str = "dlrun.models.resnet.resnet18_classifier"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    pretrained: bool = True  # ImageNet weights through torchvision's weights API
    weights_path: Optional[str] = path(None)  # a state dict file to load instead
    freeze_backbone: bool = False  # train only the new head


@option("model", "autoencoder")
@dataclass
class AutoencoderModel:
    """Linear autoencoder (784-128-64-12-6 and its mirror, sigmoid output): reconstructs its input."""

    _target_: str = "dlrun.models.autoencoder.LinearAutoencoder"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    task: ClassVar[Task] = Task.RECONSTRUCTION
    hidden_sizes: list[int] = each_within("[1, inf)", [128, 64, 12, 6])


@option("model", "conv_autoencoder")
@dataclass
class ConvAutoencoderModel:
    """Convolutional autoencoder: stride-2 convs down to 64x1x1, transposed convs back, sigmoid."""

    _target_: str = "dlrun.models.autoencoder.ConvAutoencoder"
    reads: ClassVar[tuple[Kind, ...]] = (Kind.IMAGE,)
    task: ClassVar[Task] = Task.RECONSTRUCTION
    channels: list[int] = each_within("[1, inf)", [16, 32, 64])


# ---------------------------------------------------------------------------------------------
# loss (each its own settings: a setting the chosen loss does not use is refused)

CLASSIFICATION = (Task.CLASSIFICATION,)


@option("loss", "cross_entropy")
@dataclass
class CrossEntropyLoss:
    """Cross-entropy on logits (classification)."""

    _target_: str = "torch.nn.CrossEntropyLoss"
    fits: ClassVar[tuple[Task, ...]] = CLASSIFICATION
    label_smoothing: float = within("[0, 1)", 0.0)


@option("loss", "nll")
@dataclass
class NLLLoss:
    """Negative log-likelihood of log-probabilities: the loss takes the log-softmax of the model's
    outputs, which leaves a model that already ends in log-softmax as it is."""

    _target_: str = "dlrun.models.losses.NLLLoss"
    fits: ClassVar[tuple[Task, ...]] = CLASSIFICATION


@option("loss", "mse")
@dataclass
class MSELoss:
    """Mean squared error: against the input for autoencoders, against one-hot labels otherwise."""

    _target_: str = "dlrun.models.losses.MSELoss"
    fits: ClassVar[tuple[Task, ...]] = (Task.CLASSIFICATION, Task.RECONSTRUCTION)


@option("loss", "bce_with_logits")
@dataclass
class BCEWithLogitsLoss:
    """Binary cross-entropy on logits against one-hot labels (one sigmoid per class)."""

    _target_: str = "dlrun.models.losses.BCEWithLogitsLoss"
    fits: ClassVar[tuple[Task, ...]] = CLASSIFICATION


# ---------------------------------------------------------------------------------------------
# optimizer (instantiated with _partial_: the parameters are given in code)


@option("optimizer", "sgd")
@dataclass
class SGD:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = within("(0, inf)", 0.01)
    momentum: float = within("[0, 1)", 0.9)
    nesterov: bool = False
    weight_decay: float = within("[0, inf)", 0.0)


@option("optimizer", "adam")
@dataclass
class Adam:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = within("(0, inf)", 0.001)
    betas: list[float] = each_within("[0, 1)", [0.9, 0.999])
    eps: float = within("(0, inf)", 1e-8)
    weight_decay: float = within("[0, inf)", 0.0)


@option("optimizer", "adamw")
@dataclass
class AdamW:
    _target_: str = "torch.optim.AdamW"
    _partial_: bool = True
    lr: float = within("(0, inf)", 0.001)
    betas: list[float] = each_within("[0, 1)", [0.9, 0.999])
    eps: float = within("(0, inf)", 1e-8)
    weight_decay: float = within("[0, inf)", 0.01)


@option("optimizer", "rmsprop")
@dataclass
class RMSprop:
    _target_: str = "torch.optim.RMSprop"
    _partial_: bool = True
    lr: float = within("(0, inf)", 0.01)
    alpha: float = within("[0, 1)", 0.99)
    momentum: float = within("[0, 1)", 0.0)
    weight_decay: float = within("[0, inf)", 0.0)


# ---------------------------------------------------------------------------------------------
# scheduler (`interval` says when it steps; `monitor` is for plateau only; neither reaches torch)


@dataclass
class Warmup:
    """dlrun's linear warm-up before any scheduler: the lr rises from warmup_start_factor x the
    scheduler's lr to it over warmup_steps optimizer steps (or warmup_epochs epochs)."""

    warmup_steps: int = within("[0, inf)", 0)
    warmup_epochs: int = within("[0, inf)", 0)
    warmup_start_factor: float = within("(0, 1]", 0.1)


@option("scheduler", "none")
@dataclass
class NoScheduler(Warmup):
    """A constant learning rate."""

    interval: str = one_of(Interval, Interval.EPOCH)


@option("scheduler", "step")
@dataclass
class StepLR(Warmup):
    """Multiply the lr by gamma every step_size epochs."""

    _target_: str = "torch.optim.lr_scheduler.StepLR"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.EPOCH)
    step_size: int = within("[1, inf)", 7)
    gamma: float = within("(0, inf)", 0.1)


@option("scheduler", "multistep")
@dataclass
class MultiStepLR(Warmup):
    """Multiply the lr by gamma at each milestone epoch."""

    _target_: str = "torch.optim.lr_scheduler.MultiStepLR"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.EPOCH)
    milestones: list[int] = each_within("[1, inf)", [30, 60])
    gamma: float = within("(0, inf)", 0.1)


@option("scheduler", "exponential")
@dataclass
class ExponentialLR(Warmup):
    """Multiply the lr by gamma every epoch."""

    _target_: str = "torch.optim.lr_scheduler.ExponentialLR"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.EPOCH)
    gamma: float = within("(0, inf)", 0.95)


@option("scheduler", "cosine")
@dataclass
class CosineLR(Warmup):
    """Cosine annealing from the lr down to eta_min over T_max epochs."""

    _target_: str = "torch.optim.lr_scheduler.CosineAnnealingLR"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.EPOCH)
    T_max: Optional[int] = within("[1, inf)", None)  # None: the run's number of epochs
    eta_min: float = 0.0


@option("scheduler", "plateau")
@dataclass
class PlateauLR(Warmup):
    """Multiply the lr by factor when a validation metric stops improving."""

    _target_: str = "torch.optim.lr_scheduler.ReduceLROnPlateau"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.EPOCH)
    monitor: str = AUTO  # auto: the run's monitored validation metric
    mode: str = one_of(Mode, Mode.AUTO)
    factor: float = within("(0, 1)", 0.1)
    patience: int = within("[0, inf)", 3)
    threshold: float = 1e-4
    min_lr: float = 0.0


@option("scheduler", "onecycle")
@dataclass
class OneCycleLR(Warmup):
    """The one-cycle policy, stepped every optimizer step."""

    _target_: str = "torch.optim.lr_scheduler.OneCycleLR"
    _partial_: bool = True
    interval: str = one_of(Interval, Interval.STEP)
    max_lr: Optional[float] = within("(0, inf)", None)  # None: optimizer.lr
    pct_start: float = within("(0, 1)", 0.3)
    anneal_strategy: str = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4


# ---------------------------------------------------------------------------------------------
# logger: where results go besides the terminal; `logger=[tensorboard,csv,mlflow]` takes several,
# each option a node of its own under `logger`


@option("logger", "tensorboard")
@dataclass
class TensorBoardLogger:
    """TensorBoard event files in the run folder; each kind of output has its switch."""

    _target_: str = "dlrun.reporting.tensorboard.TensorBoardSink"
    graph: bool = True
    images: bool = True  # a grid of training inputs (image datasets)
    pr_curves: bool = True
    confusion_matrix: bool = True
    reconstructions: bool = True
    hparams: bool = True
    config_text: bool = True
    histograms: bool = False  # weights and gradients, once per epoch
    summary: bool = True  # the model's layers as text: type, output shape, parameters


@option("logger", "csv")
@dataclass
class CSVLogger:
    """steps.csv (each logging interval) and epochs.csv (each epoch) beside metrics.json."""

    _target_: str = "dlrun.reporting.csv_log.CSVSink"


@option("logger", "mlflow")
@dataclass
class MLflowLogger:
    """A real MLflow run (pip install "dlrun[mlflow]"): params, per-epoch metrics, the config and
    best.pt as artifacts."""

    _target_: str = "dlrun.reporting.mlflow_log.MLflowSink"
    tracking_uri: Optional[str] = None  # None: a file store in ./mlruns of the folder dlrun starts in
    experiment: str = "dlrun"
    artifacts: bool = True  # config.yaml and best.pt


# ---------------------------------------------------------------------------------------------
# trainer, terminal and the root


@dataclass
class EarlyStopping:
    enabled: bool = False
    monitor: str = AUTO  # auto: trainer.monitor
    mode: str = one_of(Mode, Mode.AUTO)
    patience: int = within("[1, inf)", 5)  # validations without improvement before stopping
    min_delta: float = within("[0, inf)", 0.0)


@dataclass
class MovingAverage:
    """`trainer.ema.decay=0.999`: validation, best.pt, dlrun-eval and dlrun-predict use an
    exponential moving average of the weights (engine/weight_average.py)."""

    decay: Optional[float] = within("(0, 1)", None)  # None: off
    warmup: bool = True  # the decay rises to its setting over the first updates, as timm's


@dataclass
class LRFind:
    """dlrun-lr-find: the learning rate rises exponentially from start_lr to end_lr over `steps`
    optimizer steps, stopping early once the smoothed loss exceeds stop_factor x its lowest."""

    steps: int = within("[10, inf)", 100)
    start_lr: float = within("(0, inf)", 1e-7)
    end_lr: float = within("(0, inf)", 1.0)
    stop_factor: float = within("(1, inf)", 4.0)


@option("trainer", "default")
@option(
    "trainer",
    "debug",
    epochs=1,
    limit_train_batches=5,
    limit_val_batches=2,
    limit_test_batches=2,
    log_every_n_steps=1,
)  # a quick end-to-end check of a config: one epoch of a few batches, scored on a few
@dataclass
class Trainer:
    # auto: scaled to the data (data/training_length.py): 10 epochs of 64, more and smaller for
    # a small training split; a number is taken as it is
    epochs: Any = within("[1, inf)", AUTO, auto=True)
    batch_size: Any = within("[1, inf)", AUTO, auto=True)  # the global batch (split between processes)
    eval_batch_size: Optional[int] = within("[1, inf)", None)  # None: 4 x batch_size
    device: str = AUTO  # auto (cuda, then mps, then cpu) | cpu | cuda | cuda:N | mps
    deterministic: bool = False
    num_threads: int = within("[0, inf)", 0)  # CPU threads for torch; 0: this job's share of the cores
    precision: str = one_of(Precision, Precision.FP32)
    compile: bool = False  # torch.compile the model
    channels_last: bool = False
    limit_train_batches: Optional[int] = within("[1, inf)", None)
    limit_val_batches: Optional[int] = within("[1, inf)", None)
    limit_test_batches: Optional[int] = within("[1, inf)", None)  # the final score of best.pt
    # micro-batches of batch_size whose summed gradient makes one optimizer step
    accumulate_grad_batches: int = within("[1, inf)", 1)
    log_every_n_steps: int = within("[1, inf)", 50)
    grad_clip: Optional[float] = within("(0, inf)", None)  # max gradient norm
    on_nonfinite: str = one_of(OnNonFinite, OnNonFinite.STOP)  # a NaN/inf loss or gradient
    monitor: str = AUTO  # auto: the task's metric (val/acc; val/mse for autoencoders)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    ema: MovingAverage = field(default_factory=MovingAverage)
    # torch.profiler over steps 6-10: profile.json in the run folder, the top operators printed
    profile: bool = False
    lr_find: LRFind = field(default_factory=LRFind)  # dlrun-lr-find's sweep (a run ignores it)
    checkpoint_every_n_steps: Optional[int] = within("[1, inf)", None)  # mid-epoch last.pt too
    resume: Optional[str] = path(None)  # a checkpoint path, a run folder, last (inside one) or auto
    resume_force: bool = False  # accept config changes on resume (more epochs, a new lr)


@dataclass
class Terminal:
    """What the terminal shows (dlrun.log keeps every line either way)."""

    progress: str = one_of(Progress, Progress.AUTO)
    config: str = one_of(ConfigView, ConfigView.AUTO)  # brief, the whole tree, the settings typed, or nothing
    summary: bool = False  # the model's layers at start: type, output shape, parameters (frozen too)


# dlrun's own keys in an option a user wrote for these groups (a YAML naming their `_target_`):
# never passed to that code, and settable from the command line without Hydra's `+`
OWN_KEYS = {
    "dataset": (
        "val_fraction",
        "test_fraction",
        "in_memory",
        "num_workers",
        "standardize",
        "augment",
        "eval_transform",
    ),
    "scheduler": ("interval", "monitor", "warmup_steps", "warmup_epochs", "warmup_start_factor"),
}


def own_key(override: str) -> bool:
    """Whether `dataset.in_memory=false` (with or without Hydra's `++`) sets one of OWN_KEYS."""
    group, _, name = override.partition("=")[0].lstrip("+").partition(".")
    return "=" in override and name in OWN_KEYS.get(group, ())


# the facts a config may read as `${facts.NAME}` (data/facts.py fills them in)
FACT_NAMES = ("in_shape", "channels", "num_classes", "vocab_size", "class_names")


@dataclass
class Config:
    dataset: Any = MISSING
    model: Any = MISSING
    loss: Any = MISSING
    optimizer: Any = MISSING
    scheduler: Any = MISSING
    trainer: Trainer = field(default_factory=Trainer)
    logger: Any = field(default_factory=dict)  # name -> settings of each chosen logger
    terminal: Terminal = field(default_factory=Terminal)
    # measured besides the task's own: built-in names, or {name, _target_: fn(outputs, targets) ->
    # the batch's mean, better: max|min, percent: bool} for a function of yours (metrics.py)
    metrics: list[Any] = field(default_factory=list)
    seed: int = within("[0, inf)", 42)
    optimized_metric: str = AUTO  # what a sweep optimizes; auto: trainer.monitor
    # what the data says, for `${facts.NAME}` in any node but the dataset's: None while the config
    # is checked, filled once the data is loaded; never typed by hand
    facts: Any = field(default_factory=lambda: dict.fromkeys(FACT_NAMES))


# ---------------------------------------------------------------------------------------------
# the programs that start from a checkpoint (their usage text is generated from these)


@dataclass
class EvalConfig:
    """Rebuild the model and data from a dlrun checkpoint, print loss and metrics (per-class
    accuracy and the confusion matrix for classification) and write them as JSON."""

    ckpt: str = path(help="the checkpoint, e.g. runs/<date>/<run>/checkpoints/best.pt")
    split: str = one_of(Split, Split.TEST, help="the split to score")
    output: Optional[str] = path(None, help="the JSON report (default: <checkpoint>.<split>.json)")
    device: str = described(AUTO, "auto, cpu, cuda, cuda:N or mps")
    batch_size: Optional[int] = within("[1, inf)", None, help="default: the run's evaluation batch")
    dataset: Any = described({}, "replacements for the run's dataset settings: dataset.root=DIR")
    allow: list[str] = described([], "modules of yours the checkpoint may name: allow=[mypackage]")


@dataclass
class PredictConfig:
    """Predict with a dlrun checkpoint: names for a names model (inputs=[Jones,Satoshi]), image
    files for an image model (inputs=[ant.jpg], a folder, or 'photos/*.jpg'), rows of numbers
    for a table model (inputs=[[13.2,1.78,...]])."""

    ckpt: str = path(help="the checkpoint, e.g. runs/<date>/<run>/checkpoints/best.pt")
    inputs: list[Any] = described(
        MISSING,
        "what to classify (images: files, folders or patterns such as photos/*.jpg); one needs no brackets",
    )
    topk: int = within("[1, inf)", 3, help="classes shown per input")
    format: str = one_of(Format, Format.TABLE, help="table, or json for programs")
    device: str = described("cpu", "auto, cpu, cuda, cuda:N or mps")
    allow: list[str] = described([], "modules of yours the checkpoint may name: allow=[mypackage]")


@dataclass
class ExportConfig:
    """Export a dlrun checkpoint's model for use outside dlrun: ONNX (onnxruntime, serving stacks),
    a torch.export program (.pt2) or TorchScript, with its preprocessing facts beside it as JSON,
    checked on a batch of the run's data against the PyTorch model."""

    ckpt: str = path(help="the checkpoint, e.g. runs/<date>/<run>/checkpoints/best.pt")
    format: str = one_of(ExportFormat, ExportFormat.ONNX, help="onnx, torch_export or torchscript")
    output: Optional[str] = path(
        None, help="the file (default: beside the checkpoint: best.onnx, best.pt2, best.torchscript.pt)"
    )
    tolerance: float = within(
        "(0, inf)",
        1e-4,
        help="the largest difference from the PyTorch model allowed, relative to its largest output",
    )
    dataset: Any = described({}, "replacements for the run's dataset settings: dataset.root=DIR")
    allow: list[str] = described([], "modules of yours the checkpoint may name: allow=[mypackage]")


@dataclass
class ServeConfig:
    """Serve a dlrun checkpoint over HTTP: POST /predict takes what dlrun-predict takes (image files
    as multipart/form-data, table rows as JSON, names as JSON or plain text, one per line) and
    answers the class probabilities; GET /health; a page at / to try it in a browser. Requests
    that arrive together are answered from one batch."""

    ckpt: str = path(help="the checkpoint, e.g. runs/<date>/<run>/checkpoints/best.pt")
    host: str = described("127.0.0.1", "the address to listen on (0.0.0.0: every network this machine is on)")
    port: int = within("[1, 65535]", 8000, help="the port to listen on")
    topk: int = within(
        "[1, inf)", 3, help="classes listed first in each answer (all probabilities are there too)"
    )
    max_batch: int = within("[1, inf)", 64, help="the most inputs one run of the model takes")
    batch_wait_ms: float = within(
        "[0, inf)", 2.0, help="how long a request waits for others to share its batch"
    )
    device: str = described("cpu", "auto, cpu, cuda, cuda:N or mps")
    allow: list[str] = described([], "modules of yours the checkpoint may name: allow=[mypackage]")


# Settings (key prefixes) that say how a run is carried out, not what it computes: a resumed run
# may change them, they are no HPARAMS columns, and sweep job folders are not named after them.
BOOKKEEPING = (
    "logger",
    "terminal.",
    "trainer.resume",
    "trainer.device",
    "trainer.num_threads",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.profile",
    "trainer.lr_find",
    "dataset.root",
    "dataset.download",
    "dataset.num_workers",
    "dataset.prefetch_factor",
    "dataset.persistent_workers",
    "hydra.",
    "hparams_search",
)


def path_settings() -> tuple[str, ...]:
    """Every setting that holds a file or folder, dotted (`dataset.root`, `trainer.resume`, `ckpt`)."""
    keys: set[str] = set()
    for group, options in OPTIONS.items():
        for node in options.values():
            keys |= {f"{group}.{f.name}" for f in fields(schema_of(node)) if f.metadata.get("path")}
    for prefix, node in (
        ("trainer.", Trainer),
        ("", EvalConfig),
        ("", PredictConfig),
        ("", ExportConfig),
        ("", ServeConfig),
    ):
        keys |= {f"{prefix}{f.name}" for f in fields(node) if f.metadata.get("path")}
    return tuple(sorted(keys))


def required(f) -> bool:
    return f.default is MISSING or (f.default is NO_DEFAULT and f.default_factory is NO_DEFAULT)


# options of dlrun's that a project's configs/ folder replaces with a file of the same name
YIELDED: dict[str, set[str]] = {}


def yield_to_project(options: dict[str, set[str]]) -> None:
    """The project's `configs/<group>/<name>.yaml` wins over dlrun's option of that name: Hydra
    would otherwise merge the file into dlrun's schema (its "automatic schema matching"), so that
    dlrun's settings and code stayed under the user's. Called after store_schemas()."""
    repo = ConfigStore.instance().repo
    for group, names in options.items():
        for name in names & set(OPTIONS.get(group, {})):
            repo.get(group, {}).pop(f"{name}.yaml", None)
            YIELDED.setdefault(group, set()).add(name)


def store_schemas() -> None:
    """Register every option with Hydra (and the root schema config.yaml starts from)."""
    YIELDED.clear()
    store = ConfigStore.instance()
    store.store(name="schema_config", node=Config)
    for group, options in OPTIONS.items():
        for name, node in options.items():
            # each logger is a node of its own, so that several can be chosen at once
            store.store(group=group, name=name, node={name: node} if group == "logger" else node)
    store.store(group="logger", name="none", node={})
