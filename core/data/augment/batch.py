"""A parsed ``augment`` string and its parameters as one function of a training batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core.data.augment.policies import autoaugment_cifar10, cutmix, cutout, mixup, randaugment
from core.data.augment.spec import AugmentParams, AugmentSpec

# Each stage draws from its own stream: naming cutout does not change what RandAugment draws.
_PER_IMAGE, _CUTOUT, _MIX = 0, 1, 2


@dataclass(frozen=True)
class BatchPolicy:
    """The policies after the base transform, applied to a float32 batch in [0, 255].

    Attributes:
        spec: what is applied (the base is the pipeline's part, not this one's).
        params: the policies' parameters.
        num_classes: the width of the one-hot labels that label mixing produces.
    """

    spec: AugmentSpec
    params: AugmentParams
    num_classes: int

    def __call__(
        self, x: np.ndarray, y: np.ndarray, entropy: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(images, labels)`` augmented from ``entropy`` alone (non-negative integers: the
        run's seed, the epoch, the batch...).

        Returns:
            float32 images of the same shape, in [0, 255]; with label mixing float32
            ``(B, num_classes)`` labels whose rows sum to 1, else the labels as given.
        """
        spec, p = self.spec, self.params
        key = [int(k) % 2**64 for k in entropy]
        x = np.asarray(x, np.float32)
        if spec.per_image is not None:
            rng = np.random.default_rng([*key, _PER_IMAGE])
            pixels = np.clip(np.rint(x), 0, 255).astype(np.uint8)
            if spec.per_image == "randaugment":
                pixels = randaugment(
                    pixels, rng, num_ops=p.randaugment.num_ops, magnitude=p.randaugment.magnitude
                )
            else:
                pixels = autoaugment_cifar10(pixels, rng)
            x = pixels.astype(np.float32)
        if spec.cutout:
            x = cutout(x, np.random.default_rng([*key, _CUTOUT]), size=p.cutout.size)
        if spec.mix is None:
            return x, y
        soft = np.eye(self.num_classes, dtype=np.float32)[np.asarray(y, np.int64)]
        rng = np.random.default_rng([*key, _MIX])
        mixed = (
            mixup(x, soft, rng, alpha=p.mixup.alpha, prob=p.mixup.prob)
            if spec.mix == "mixup"
            else cutmix(x, soft, rng, alpha=p.cutmix.alpha, prob=p.cutmix.prob)
        )
        return mixed[0].astype(np.float32), mixed[1].astype(np.float32)


def batch_policy(
    spec: AugmentSpec,
    params: AugmentParams | None,
    *,
    num_classes: int,
    multi_label: bool,
    image_shape: tuple[int, int, int],
) -> BatchPolicy | None:
    """The policy a training pipeline applies after its base transform; None if none is named.

    Raises:
        ValueError: label mixing on multi-label data (its labels are sets, and neither the
            binary accuracy nor the mAP of a mixed set means anything), or a Cutout square
            larger than the image.
    """
    if not spec.policies:
        return None
    params = params or AugmentParams()
    if spec.mixes_labels and multi_label:
        raise ValueError(
            f"augmentation {spec.name!r}: {spec.mix} mixes one class label per image; this "
            "data is multi-label, so it is refused (use it without mixup or cutmix)"
        )
    side = min(image_shape[:2])
    if spec.cutout and params.cutout.size > side:
        raise ValueError(
            f"augment_params.cutout.size {params.cutout.size} exceeds the {image_shape[0]}x"
            f"{image_shape[1]} input: choose at most {side}"
        )
    return BatchPolicy(spec, params, num_classes)
