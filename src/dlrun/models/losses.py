"""dlrun's own losses: torch's, taking class labels as the classification tasks give them.

Classification batches carry class numbers; reconstruction batches compare with the inputs. MSE
and BCE compare with one-hot vectors when given class numbers, and NLL takes the log-softmax of
the outputs itself, which leaves a model that already ends in log-softmax as it is (log-softmax of
log-probabilities changes nothing), so no loss needs the model wrapped or changed. Each also
takes class probabilities as targets (MixUp, CutMix: data/mixing.py).
"""

from torch import Tensor, nn


class NLLLoss(nn.NLLLoss):
    def forward(self, outputs: Tensor, labels: Tensor) -> Tensor:
        if labels.is_floating_point():  # class probabilities (MixUp, CutMix): cross-entropy is
            # the NLL of the log-softmax, and takes them
            return nn.functional.cross_entropy(outputs, labels, weight=self.weight, reduction=self.reduction)
        return super().forward(outputs.log_softmax(dim=1), labels)


class MSELoss(nn.MSELoss):
    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return super().forward(outputs, one_hot_if_labels(targets, outputs))


class BCEWithLogitsLoss(nn.BCEWithLogitsLoss):
    def forward(self, outputs: Tensor, targets: Tensor) -> Tensor:
        return super().forward(outputs, one_hot_if_labels(targets, outputs))


def one_hot_if_labels(targets: Tensor, outputs: Tensor) -> Tensor:
    """Class numbers [N] for outputs [N, classes] become one-hot rows; anything else is as given."""
    if targets.is_floating_point() or targets.dim() != outputs.dim() - 1:
        return targets
    return nn.functional.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
