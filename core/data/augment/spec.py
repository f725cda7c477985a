"""What an ``augment`` string names, and the typed parameters of its policies.

An augmentation is a base transform (``none``, ``cifar``: the paper's pad-4 crop and flip,
``imagenet``: the random-resized crop and flip) and, joined to it with ``+``, any of these
policies, applied to each training batch after the base in this fixed order:

1. one per-image policy: ``randaugment`` (Cubuk et al. 2020) or ``autoaugment-cifar10``
   (Cubuk et al. 2019, the 25 sub-policies learned on CIFAR-10);
2. ``cutout`` (DeVries & Taylor 2017);
3. one label-mixing policy: ``mixup`` (Zhang et al. 2018) or ``cutmix`` (Yun et al. 2019).

So ``"cifar+autoaugment-cifar10+cutout"`` is the AutoAugment paper's CIFAR recipe. The names
are a set: ``"cifar+cutout+randaugment"`` means the same as ``"cifar+randaugment+cutout"``
and is stored in the order above.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

BASES = ("none", "cifar", "imagenet")
PER_IMAGE = ("randaugment", "autoaugment-cifar10")
MASKS = ("cutout",)
MIXES = ("mixup", "cutmix")
POLICIES = (*PER_IMAGE, *MASKS, *MIXES)
AUGMENT_NAMES = (*BASES, *POLICIES)
# The groups of which at most one may be named, and what to call them in an error.
_EXCLUSIVE = (
    (BASES, "base transform"),
    (PER_IMAGE, "per-image policy"),
    (MIXES, "label-mixing policy"),
)

AUGMENT_HELP = (
    "A base transform (none, cifar, imagenet), then any policies joined with '+': one of "
    "randaugment or autoaugment-cifar10, cutout, one of mixup or cutmix; e.g. "
    "cifar+autoaugment-cifar10+cutout. Their parameters are in augment_params."
)


@dataclass(frozen=True)
class AugmentSpec:
    """A parsed ``augment`` string: the base and the policies after it."""

    base: str
    per_image: str | None = None
    cutout: bool = False
    mix: str | None = None

    @property
    def name(self) -> str:
        """The canonical string: the base, then the policies in the order they apply."""
        parts = [self.base, self.per_image, "cutout" if self.cutout else None, self.mix]
        return "+".join(p for p in parts if p)

    @property
    def policies(self) -> tuple[str, ...]:
        return tuple(self.name.split("+")[1:])

    @property
    def mixes_labels(self) -> bool:
        """mixup and CutMix train on soft labels: one-hot labels, weighted and summed."""
        return self.mix is not None


def parse_augment(text: str) -> AugmentSpec:
    """``"cifar+cutout+mixup"`` → :class:`AugmentSpec`.

    Raises:
        ValueError: an unknown name (the valid ones listed), a name twice, two of one group
            (two bases, randaugment with autoaugment-cifar10, mixup with cutmix), or no base.
    """
    names = [part.strip().lower() for part in str(text).split("+")]
    unknown = [n for n in names if n not in AUGMENT_NAMES]
    if unknown:
        raise ValueError(
            f"Unknown augmentation: {unknown[0]!r}. Expected a base ({', '.join(BASES)}) "
            f"and any of {', '.join(POLICIES)} joined with '+', e.g. 'cifar+cutout'"
        )
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"augmentation {text!r} names {twice[0]!r} twice")
    for group, what in _EXCLUSIVE:
        named = [n for n in names if n in group]
        if len(named) > 1:
            raise ValueError(
                f"augmentation {text!r} names {len(named)} of the {what}s {', '.join(group)}: "
                "choose one"
            )
    bases = [n for n in names if n in BASES]
    if not bases:
        raise ValueError(
            f"augmentation {text!r} names no base transform: start with one of "
            f"{', '.join(BASES)} (e.g. 'cifar+{names[0]}')"
        )
    per_image = [n for n in names if n in PER_IMAGE]
    mix = [n for n in names if n in MIXES]
    return AugmentSpec(
        base=bases[0],
        per_image=per_image[0] if per_image else None,
        cutout="cutout" in names,
        mix=mix[0] if mix else None,
    )


# --------------------------------------------------------------------------- parameters


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CutoutParams(_Strict):
    size: int = Field(
        16,
        ge=1,
        le=4096,
        description="Side of the zeroed square in pixels (DeVries & Taylor: 16 on CIFAR-10, "
        "8 on CIFAR-100); its centre is anywhere in the image, so it may be clipped",
    )


class MixupParams(_Strict):
    alpha: float = Field(
        1.0, gt=0.0, le=100.0, description="lambda ~ Beta(alpha, alpha), one per batch"
    )
    prob: float = Field(1.0, ge=0.0, le=1.0, description="The chance a batch is mixed")


class CutMixParams(_Strict):
    alpha: float = Field(
        1.0, gt=0.0, le=100.0, description="lambda ~ Beta(alpha, alpha), one per batch"
    )
    prob: float = Field(
        0.5, ge=0.0, le=1.0, description="The chance a batch is mixed (Yun et al. on CIFAR: 0.5)"
    )


class RandAugmentParams(_Strict):
    num_ops: int = Field(2, ge=1, le=8, description="N: operations applied to each image")
    magnitude: int = Field(
        9, ge=0, le=30, description="M: the strength of every operation, of 30 steps"
    )


class AugmentParams(_Strict):
    """The policies' parameters; each is used when its policy is named in ``augment``."""

    cutout: CutoutParams = CutoutParams()
    mixup: MixupParams = MixupParams()
    cutmix: CutMixParams = CutMixParams()
    randaugment: RandAugmentParams = RandAugmentParams()
