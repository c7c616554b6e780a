"""The loop's functions and the device batches, on hand-made tensors."""

import signal

import pytest
import torch
from torch import nn

from dlrun import metrics
from dlrun.config.schema import Trainer
from dlrun.data.batches import BatchAugment, Normalize, TensorBatches
from dlrun.engine.runtime import Precision
from dlrun.engine.state import Monitor, Outputs, Parts, Position, TrainingState
from dlrun.engine.train import LossWatch, NonFinite, RunningSums, evaluate, train_one_epoch
from dlrun.reporting.sinks import Sink, Sinks
from dlrun.signals import StopRequest

CPU = torch.device("cpu")


def batches(count=40, batch_size=8, shuffle=True, seed=0, features=4):
    inputs = torch.randn(count, features, generator=torch.Generator().manual_seed(99))
    targets = (inputs[:, 0] > 0).long()
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return TensorBatches(inputs, targets, batch_size, shuffle=shuffle, generator=generator)


def test_a_shuffled_epoch_visits_every_sample_once_in_a_seeded_order():
    first = [y for _, y in batches(seed=1)]
    seen = torch.cat([x for x, _ in batches(seed=1)])
    assert len(first) == 5 and seen.shape == (40, 4)
    assert torch.equal(torch.sort(seen[:, 0]).values, torch.sort(batches().inputs[:, 0]).values)
    again = [y for _, y in batches(seed=1)]
    other = torch.cat([x for x, _ in batches(seed=2)])
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(seen, other)


def test_skipping_batches_replays_the_rest_of_the_epoch_exactly():
    full = batches(seed=3)
    state = full.generator.get_state()
    whole = [x for x, _ in full.batches()]
    full.generator.set_state(state)
    rest = [x for x, _ in full.batches(skip=2)]
    assert len(rest) == 3 and all(torch.equal(a, b) for a, b in zip(whole[2:], rest))


def test_unshuffled_batches_keep_the_order_and_the_last_partial_batch():
    split = batches(count=10, batch_size=4, shuffle=False)
    sizes = [len(y) for _, y in split]
    assert sizes == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in split]), split.inputs)


def test_normalize_scales_uint8_images_per_channel():
    images = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 2, 1, 1).contiguous()
    out = Normalize([0.5, 0.0], [0.5, 1.0], CPU)(images)
    assert out[:, 0].flatten().tolist() == pytest.approx([-1.0, 1.0])
    assert out[:, 1].flatten().tolist() == pytest.approx([0.0, 1.0])


def test_augment_crops_and_flips_whole_batches_reproducibly():
    images = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    augment = BatchAugment(crop_padding=1, hflip=True)
    params = augment.draw(2, torch.Generator().manual_seed(0))
    out = augment(images, params)
    assert out.shape == images.shape and out.dtype == torch.uint8
    assert torch.equal(out, augment(images, augment.draw(2, torch.Generator().manual_seed(0))))
    # a crop offset of (1, 1) with padding 1 is the identity; a flip mirrors the columns
    identity = augment(
        images, {"offsets": torch.tensor([[1, 1], [1, 1]]), "flip": torch.tensor([False, True])}
    )
    assert torch.equal(identity[0], images[0]) and torch.equal(identity[1], images[1].flip(2))
    shifted = augment(images, {"offsets": torch.tensor([[0, 0], [2, 2]])})
    assert shifted[0, 0, 0, 0] == 0 and torch.equal(shifted[0, 0, 1:, 1:], images[0, 0, :3, :3])
    assert torch.equal(shifted[1, 0, :3, :3], images[1, 0, 1:, 1:])


def test_running_sums_are_read_once_per_interval():
    """The interval's loss and accuracy: summed over samples, read in one go, then reset."""
    sums = RunningSums((metrics.BUILT_IN["acc"],), CPU)
    three_right = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])  # predicts 0, 0, 0, 1
    sums.add(torch.tensor(1.0), three_right, torch.tensor([0, 0, 0, 0]))
    sums.add(torch.tensor(3.0), three_right, torch.tensor([1, 1, 1, 1]))
    loss, values, summed, samples = sums.read()
    assert (loss, values, samples) == (pytest.approx(2.0), {"acc": pytest.approx(0.5)}, 8)
    assert summed == [[4.0, 8]]  # correct, samples: what an epoch adds up exactly
    assert sums.read()[3] == 0  # reset after reading


def test_the_loss_watch_reports_a_non_finite_loss_it_copied_once():
    watch = LossWatch(CPU)
    assert watch.look() is None  # nothing copied yet
    watch.copy(torch.tensor(0.5), step=7)
    assert watch.look() is None
    watch.copy(torch.tensor(float("inf")), step=8)
    assert watch.look() == (8, float("inf"))
    assert watch.look() is None  # looked at already


class Recorded(Sink):
    """A logger that notes each logging interval, and raises the stop signal at `stop_at`."""

    def __init__(self, stop: StopRequest, stop_at=None):
        self.stop, self.stop_at = stop, stop_at
        self.logs = []

    def logged(self, step, values):
        self.logs.append((step, values.get("train/acc")))
        if self.stop_at is not None and step >= self.stop_at:
            self.stop.signum = signal.SIGTERM


def train(
    model,
    split,
    lr=0.1,
    grad_clip=None,
    on_nonfinite="stop",
    log_every=50,
    stop_at=None,
    limit=None,
    task=metrics.CLASSIFICATION,
    criterion=None,
    position=None,
    logs=None,
):
    """One epoch through train_one_epoch, as a run calls it; `logs` collects the logged intervals."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    parts = Parts.of(model, optimizer, criterion or nn.CrossEntropyLoss(), split, task=task)
    parts.stop = StopRequest()
    recorded = Recorded(parts.stop, stop_at)
    trainer = Trainer(
        epochs=1,
        log_every_n_steps=log_every,
        grad_clip=grad_clip,
        on_nonfinite=on_nonfinite,
        limit_train_batches=limit,
    )
    state = TrainingState(best=Monitor("val/acc", "max"), position=position or Position())
    result = train_one_epoch(parts, state, Outputs.quiet(sinks=Sinks([recorded])), trainer)
    if logs is not None:
        logs.extend(recorded.logs)
    return result


def test_an_epoch_learns_and_logs_per_interval():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    logs = []
    for _ in range(15):
        result = train(model, batches(), log_every=2, logs=logs)
    assert result.steps == 5 and result.samples == 40
    assert result.metrics["acc"] >= 0.85
    assert [step for step, _ in logs[:3]] == [2, 4, 5]  # every 2 steps, and the end of the epoch


def test_a_task_without_accuracy_reports_none():
    """The loop does not ask which task it runs: no accuracy comes back when the task counts none."""
    images = torch.rand(16, 1, 2, 2)
    split = TensorBatches(
        images, torch.zeros(16, dtype=torch.long), 4, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    autoencoder = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Unflatten(1, (1, 2, 2)))
    logs = []
    result = train(
        autoencoder, split, log_every=2, logs=logs, task=metrics.RECONSTRUCTION, criterion=nn.MSELoss()
    )
    assert result.metrics == {} and result.samples == 16
    assert logs and all(acc is None for _, acc in logs)


def test_gradient_clipping_bounds_each_update():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    before = [p.detach().clone() for p in model.parameters()]
    train(model, batches(), lr=1.0, grad_clip=0.01, limit=1)
    moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in zip(model.parameters(), before)))
    assert 0 < moved <= 0.01 + 1e-6


def poisoned(batch_index: int, value: float = float("nan")) -> TensorBatches:
    """Five unshuffled batches of 8; one sample of batch `batch_index` (1-based) holds `value`."""
    split = batches(shuffle=False)
    split.inputs[(batch_index - 1) * 8, 0] = value
    return split


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_stops_the_run_naming_its_step_and_batch(value):
    model = nn.Linear(4, 2)
    with pytest.raises(NonFinite, match=r"became (nan|inf) at step 3 \(epoch 1, batch 3 of 5\)"):
        train(model, poisoned(3, value))


class SqrtAtZero(nn.Module):
    """sqrt(p * 0) is a fine 0, but its gradient for p is 0/0: a NaN gradient, a finite loss."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(4, 2)
        self.p = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.linear(x) + torch.sqrt(self.p * x[:, :1].abs())


def test_a_non_finite_gradient_stops_the_run_at_the_next_step():
    # the NaN gradient of step 2 makes the weights NaN, so step 3's loss
    with pytest.raises(NonFinite, match=r"became nan at step 3 \(epoch 1, batch 3 of 5\)"):
        train(SqrtAtZero(), poisoned(2, 0.0))


def test_skip_catches_a_non_finite_gradient_in_its_own_step():
    model = SqrtAtZero()
    result = train(model, poisoned(2, 0.0), on_nonfinite="skip")
    assert result.skipped == 1 and all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_leaves_the_weights_of_a_bad_step_alone_and_counts_it():
    model = nn.Linear(4, 2)
    torch.manual_seed(0)
    clean = nn.Linear(4, 2)
    clean.load_state_dict(model.state_dict())
    split = poisoned(3)
    result = train(model, split, on_nonfinite="skip")
    assert result.skipped == 1 and result.steps == 5 and result.samples == 32
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the same epoch without batch 3 gives the same weights: the bad step changed nothing
    kept = TensorBatches(
        torch.cat([split.inputs[:16], split.inputs[24:]]),
        torch.cat([split.targets[:16], split.targets[24:]]),
        8,
        shuffle=False,
    )
    train(clean, kept)
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clean.parameters()))


def test_a_stop_request_ends_the_epoch_after_the_current_step():
    position = Position()
    logs = []
    result = train(nn.Linear(4, 2), batches(), log_every=1, stop_at=2, position=position, logs=logs)
    assert result.interrupted and position.step_in_epoch == 2 and position.global_step == 2
    assert [step for step, _ in logs] == [1, 2]  # the figures up to the stop are read


def test_evaluate_classification_counts_every_sample():
    model = nn.Linear(4, 2)
    split = batches(count=10, batch_size=3, shuffle=False)
    classification = metrics.TASKS[metrics.CLASSIFICATION]
    measured = (metrics.BUILT_IN["acc"],)
    result = evaluate(
        model, split, nn.CrossEntropyLoss(), classification, measured, 2, precision=Precision("32", CPU)
    )
    predictions = model(split.inputs).argmax(1)
    assert result.metrics["acc"] == pytest.approx((predictions == split.targets).float().mean().item())
    assert result.confusion.sum() == 10 and result.probabilities.shape == (10, 2)
    assert len(result.per_class_acc) == 2
    assert not model.training  # evaluation switches to eval mode


def test_evaluate_reconstruction_reports_mse_against_the_input():
    class Half(nn.Module):
        def forward(self, x):
            return x * 0.5

    inputs = torch.ones(6, 1, 2, 2)
    split = TensorBatches(inputs, torch.zeros(6, dtype=torch.long), 4)
    reconstruction = metrics.TASKS[metrics.RECONSTRUCTION]
    measured = (metrics.BUILT_IN["mse"],)
    result = evaluate(
        Half(), split, nn.MSELoss(), reconstruction, measured, 1, precision=Precision("32", CPU)
    )
    assert result.metrics["mse"] == pytest.approx(0.25) and result.metrics["loss"] == pytest.approx(0.25)
    assert result.examples[0].shape == (4, 1, 2, 2)


def test_a_training_features_own_state_is_saved_and_restored_by_name(tmp_path):
    """Parts.extras: what a feature adds (here a second copy of the weights, as an average of them
    would be) goes into every checkpoint under its name and comes back on resume."""
    from dlrun.checkpoints.format import read_checkpoint
    from dlrun.engine.state import CheckpointFiles, restore
    from dlrun.errors import CheckpointError
    from dlrun.runs.folder import RunFolder

    def parts_with(average):
        model = nn.Linear(4, 2)
        parts = Parts.of(model, torch.optim.SGD(model.parameters(), lr=0.1), nn.CrossEntropyLoss(), batches())
        parts.extras = {"average": average} if average is not None else {}
        return parts

    saved = parts_with(nn.Linear(4, 2))
    folder = RunFolder(tmp_path)
    state = TrainingState(best=Monitor("val/acc", "max"))
    CheckpointFiles(folder, {}, saved.data.facts).save((folder.last,), saved, state)
    payload = read_checkpoint(folder.last)
    assert torch.equal(payload["average"]["weight"], saved.extras["average"].weight)

    fresh = parts_with(nn.Linear(4, 2))
    restore(fresh, TrainingState(best=Monitor("val/acc", "max")), payload, folder.last)
    assert torch.equal(fresh.extras["average"].weight, saved.extras["average"].weight)
    del payload["average"]
    with pytest.raises(CheckpointError, match="does not fit"):
        restore(
            parts_with(nn.Linear(4, 2)), TrainingState(best=Monitor("val/acc", "max")), payload, folder.last
        )
