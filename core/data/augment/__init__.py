"""Augmentation policies of the input pipeline: Cutout, mixup, CutMix, RandAugment and
AutoAugment's CIFAR-10 policy, named after a base transform in one ``augment`` string
(``"cifar+randaugment+cutout"``; see :mod:`core.data.augment.spec`).

The policies are written once, in NumPy, and both pipelines apply them to whole training
batches: the NumPy one directly, the ``tf.data`` one through ``tf.numpy_function``. Each batch's
draws come from the run's seed, the epoch and the batch's place in it, so a resumed run sees
the batches the uninterrupted one saw.
"""

from core.data.augment.batch import BatchPolicy, batch_policy
from core.data.augment.spec import (
    AUGMENT_HELP,
    AUGMENT_NAMES,
    BASES,
    POLICIES,
    AugmentParams,
    AugmentSpec,
    CutMixParams,
    CutoutParams,
    MixupParams,
    RandAugmentParams,
    parse_augment,
)

__all__ = [
    "AUGMENT_HELP",
    "AUGMENT_NAMES",
    "BASES",
    "POLICIES",
    "AugmentParams",
    "AugmentSpec",
    "BatchPolicy",
    "CutMixParams",
    "CutoutParams",
    "MixupParams",
    "RandAugmentParams",
    "batch_policy",
    "parse_augment",
]
