"""Discriminative learning rates: the backbone learns at a fraction of the head's rate.

Fine-tuning pretrained weights under a new head, the head starts from nothing and the backbone
from something worth keeping: the backbone's updates are scaled by ``backbone_lr_multiplier``,
the head's (every variable of the layers in ``head_layers``) are not. Keras optimizers take one
learning rate, so these subclasses scale it per variable in ``update_step``, which every backend
calls once per variable with the schedule's current rate.

AdamW's decoupled weight decay is an update too: :class:`DiscriminativeAdamW` applies it in the
same step, scaled alike (Keras' AdamW decays every variable at the full rate before the step).
The classes are registered, so a checkpoint resumes with them.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from core.models.layers import PACKAGE

HEAD_LAYERS = ("logits",)


class _Discriminative:
    """Mixed into a Keras optimizer: scale the learning rate of non-head variables."""

    def __init__(
        self,
        *args: Any,
        backbone_lr_multiplier: float = 1.0,
        head_layers: tuple[str, ...] | list[str] = HEAD_LAYERS,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not 0.0 < backbone_lr_multiplier <= 1.0:
            raise ValueError(
                f"backbone_lr_multiplier must lie in (0, 1]; got {backbone_lr_multiplier}"
            )
        self.backbone_lr_multiplier = float(backbone_lr_multiplier)
        self.head_layers = tuple(head_layers)
        self._in_backbone: list[bool] = []

    def build(self, variables: list[Any]) -> None:
        super().build(variables)  # type: ignore[misc]
        # By index, the key update_step can look up (under TensorFlow it gets the tf.Variable).
        self._in_backbone = [v.path.split("/", 1)[0] not in self.head_layers for v in variables]

    def scaled_rate(self, variable: Any, learning_rate: Any) -> Any:
        if self._in_backbone[self._get_variable_index(variable)]:  # type: ignore[attr-defined]
            return learning_rate * self.backbone_lr_multiplier
        return learning_rate

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        super().update_step(gradient, variable, self.scaled_rate(variable, learning_rate))  # type: ignore[misc]

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),  # type: ignore[misc]
            "backbone_lr_multiplier": self.backbone_lr_multiplier,
            "head_layers": list(self.head_layers),
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiscriminativeSGD(_Discriminative, keras.optimizers.SGD):
    """SGD (momentum, Nesterov) whose backbone learns at ``backbone_lr_multiplier`` × the rate."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiscriminativeAdam(_Discriminative, keras.optimizers.Adam):
    """Adam whose backbone learns at ``backbone_lr_multiplier`` × the rate."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiscriminativeAdamW(_Discriminative, keras.optimizers.Adam):
    """AdamW (decoupled weight decay) whose backbone decays and learns at the scaled rate."""

    def __init__(self, *args: Any, decoupled_weight_decay: float = 0.004, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.decoupled_weight_decay = float(decoupled_weight_decay)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        rate = self.scaled_rate(variable, learning_rate)
        decay = ops.cast(self.decoupled_weight_decay, variable.dtype)
        # Keras' AdamW: w ← w − w·λ·lr before the Adam step (here with the variable's rate).
        variable.assign(variable - variable * decay * ops.cast(rate, variable.dtype))
        keras.optimizers.Adam.update_step(self, gradient, variable, rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "decoupled_weight_decay": self.decoupled_weight_decay}


# For loading a checkpoint (compiled: with its optimizer) in safe mode.
OPTIMIZERS = {
    cls.__name__: cls for cls in (DiscriminativeSGD, DiscriminativeAdam, DiscriminativeAdamW)
}


def discriminative_optimizer(
    name: str,
    *,
    learning_rate: Any,
    backbone_lr_multiplier: float,
    momentum: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
) -> keras.optimizers.Optimizer:
    """The optimizer ``name`` (``sgd``, ``adam``, ``adamw``) with a scaled backbone rate."""
    if name == "sgd":
        return DiscriminativeSGD(
            learning_rate=learning_rate,
            momentum=momentum,
            nesterov=nesterov,
            backbone_lr_multiplier=backbone_lr_multiplier,
        )
    if name == "adam":
        return DiscriminativeAdam(
            learning_rate=learning_rate, backbone_lr_multiplier=backbone_lr_multiplier
        )
    return DiscriminativeAdamW(
        learning_rate=learning_rate,
        decoupled_weight_decay=weight_decay,
        backbone_lr_multiplier=backbone_lr_multiplier,
    )
