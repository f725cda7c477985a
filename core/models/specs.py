"""Architectures as data: a name parses into a spec of stages; one builder makes the model.

Names (case-insensitive):
- ``resnet{6n+2}``, ``plain{6n+2}``: He et al. 2016's CIFAR nets (``resnet20`` … ``resnet1202``);
  ``cifar_resnet{d}`` / ``cifar_plain{d}`` force the CIFAR family for any depth.
- ``resnet18/34/50/101/152``, ``plain18/34``: the ImageNet nets (v1.5: stride on the 3×3 conv;
  ``stride_in="1x1"`` is v1, as Keras applications' published weights have it).
- ``preact_resnet{d}``: pre-activation (He et al. 2016b); CIFAR for 6n+2 (basic) or 164/1001-style
  9n+2 bottlenecks, ImageNet for 18/34/50/101/152.
- ``wrn{d}_{k}``: Wide ResNet WRN-d-k (Zagoruyko & Komodakis 2016), d = 6n+4.
- ``resnext29_{c}x{w}d`` (CIFAR) and ``resnext{50,101,152}_{c}x{w}d`` (ImageNet), Xie et al. 2017.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Literal

from core.models.limits import (
    OutOfBounds,
    check_name_length,
    check_number,
    check_spec_numbers,
    check_spec_size,
)

Family = Literal["cifar", "imagenet"]
Shortcut = Literal["A", "B", "none"]
Block = Literal["basic", "bottleneck"]
# Where a bottleneck block that halves the resolution puts its stride: on the 3×3 convolution
# (v1.5, torchvision's; the default) or on the first 1×1 (v1, He et al.'s Caffe model and Keras
# applications'). Same weights' shapes, a different function: weights load exactly only into
# the placement they were trained with.
StrideIn = Literal["3x3", "1x1"]
STRIDE_INS: tuple[StrideIn, ...] = ("3x3", "1x1")
# How a strided convolution (and the stem's max pool) pads: "same" is TensorFlow's (the odd
# pixel padded at the bottom and right only), "symmetric" pads kernel//2 on every side, as
# Caffe, PyTorch and Keras applications' stem do. The output sizes are equal; the sampling grid
# is shifted by a pixel, so published weights reproduce their outputs only with "symmetric".
Padding = Literal["same", "symmetric"]
PADDINGS: tuple[Padding, ...] = ("same", "symmetric")

IMAGENET_DEPTHS: dict[int, tuple[Block, tuple[int, ...]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


@dataclass(frozen=True)
class Stage:
    blocks: int
    out_channels: int
    inner_channels: int  # the 3×3 conv's width (== out_channels for basic blocks)
    stride: int
    groups: int = 1


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to build one architecture."""

    name: str
    family: Family
    kind: Literal["resnet", "plain", "preact", "wide", "resnext"]
    block: Block
    depth: int
    stem_channels: int
    stages: tuple[Stage, ...]
    shortcut: Shortcut
    preact: bool = False
    dropout: float = 0.0
    stride_in: StrideIn = "3x3"
    padding: Padding = "same"

    @property
    def default_input_shape(self) -> tuple[int, int, int]:
        return (32, 32, 3) if self.family == "cifar" else (224, 224, 3)

    def with_layout(self, *, stride_in: str | None = None, padding: str | None = None) -> ArchSpec:
        """This spec with the stride placement and padding given (None keeps the spec's).

        Raises:
            ValueError: an unknown value, or ``stride_in="1x1"`` for a net without ImageNet
                bottleneck blocks (a basic block's stride can only sit on its first 3×3).
        """
        stride_in = self.stride_in if stride_in is None else stride_in
        padding = self.padding if padding is None else padding
        if stride_in not in STRIDE_INS:
            raise ValueError(f"Unknown stride_in {stride_in!r}. Expected one of {STRIDE_INS}.")
        if padding not in PADDINGS:
            raise ValueError(f"Unknown padding {padding!r}. Expected one of {PADDINGS}.")
        if stride_in == "1x1" and not self.has_stride_choice:
            raise ValueError(
                f"stride_in '1x1' applies to ImageNet bottleneck nets (resnet50/101/152, "
                f"resnext50…); {self.name!r} has {self.family} {self.block} blocks"
            )
        return replace(self, stride_in=stride_in, padding=padding)

    @property
    def has_stride_choice(self) -> bool:
        """Whether the stride of a downsampling block may sit on its 1×1 or its 3×3 conv."""
        return self.family == "imagenet" and self.block == "bottleneck"

    def with_shortcut(self, shortcut: Shortcut) -> ArchSpec:
        if self.kind == "plain":
            raise ValueError(f"{self.name!r} is a plain net: it has no shortcuts to choose.")
        if shortcut == "none":
            raise ValueError("Use the plain twin (e.g. 'plain20') for a net without shortcuts.")
        return replace(self, shortcut=shortcut)


def _cifar_stages(
    n: int, widths: tuple[int, ...], inner: tuple[int, ...] | None = None, groups: int = 1
) -> tuple[Stage, ...]:
    inner = inner or widths
    return tuple(
        Stage(n, w, i, 1 if s == 0 else 2, groups)
        for s, (w, i) in enumerate(zip(widths, inner, strict=True))
    )


def _imagenet_stages(
    depth: int, *, groups: int = 1, group_width: int = 0
) -> tuple[Block, tuple[Stage, ...]]:
    block, counts = IMAGENET_DEPTHS[depth]
    stages = []
    for s, blocks in enumerate(counts):
        base = 64 * 2**s
        if block == "basic":
            stages.append(Stage(blocks, base, base, 1 if s == 0 else 2))
        else:
            inner = groups * group_width * 2**s if groups > 1 else base
            stages.append(Stage(blocks, 4 * base, inner, 1 if s == 0 else 2, groups))
    return block, tuple(stages)


def _cifar_depth(depth: int, per_block: int) -> int:
    if depth < per_block + 2 or (depth - 2) % per_block:
        raise ValueError(f"CIFAR depth must be {per_block}n+2 with n >= 1; got {depth}.")
    return (depth - 2) // per_block


_PATTERNS = [
    ("wrn", re.compile(r"wrn([0-9]+)_([0-9]+)")),
    ("resnext", re.compile(r"resnext([0-9]+)_([0-9]+)x([0-9]+)d")),
    ("preact", re.compile(r"preact_resnet([0-9]+)")),
    ("cifar_plain", re.compile(r"cifar_plain([0-9]+)")),
    ("cifar_resnet", re.compile(r"cifar_resnet([0-9]+)")),
    ("plain", re.compile(r"plain([0-9]+)")),
    ("resnet", re.compile(r"resnet([0-9]+)")),
]
# [0-9], not \d: \d (and str.isdigit) also match other scripts' digits ("resnet٢٠"), which
# int() reads but nothing else in the house expects in a name.


def parse_architecture(name: str) -> ArchSpec:
    """Turn an architecture name into its spec, within the bounds of :mod:`core.models.limits`.

    Raises:
        ValueError: naming the architecture and the accepted forms, or the bound it exceeds.
    """
    check_name_length(name)
    key = name.strip().lower().replace("-", "")
    if any(ch.isdigit() and ch not in "0123456789" for ch in key):
        raise OutOfBounds(f"Invalid architecture {name!r}: digits must be ASCII 0-9")
    for kind, pattern in _PATTERNS:
        m = pattern.fullmatch(key)
        if m:
            try:
                nums = [check_number(g, "number", name) for g in m.groups()]
                spec = _build_spec(key, kind, nums)
                check_spec_numbers(
                    name,
                    depth=spec.depth,
                    widen=nums[1] if kind == "wrn" else 1,
                    cardinality=nums[1] if kind == "resnext" else 1,
                    group_width=nums[2] if kind == "resnext" else 1,
                )
                check_spec_size(spec)
                return spec
            except ValueError as exc:  # OutOfBounds stays OutOfBounds
                raise type(exc)(f"Invalid architecture {name!r}: {exc}") from None
    raise ValueError(
        f"Unknown architecture: {name!r}. Expected one of {', '.join(CATALOGUE_NAMES)}, "
        "or a pattern: resnet{6n+2}, plain{6n+2}, preact_resnet{d}, wrn{6n+4}_{k}, "
        "resnext29_{c}x{w}d, resnext50_{c}x{w}d."
    )


def _build_spec(key: str, kind: str, nums: list[int]) -> ArchSpec:
    if kind == "wrn":
        depth, k = nums
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6n+4 with n >= 1; got {depth}.")
        if k < 1:
            raise ValueError(f"WRN widening factor must be >= 1; got {k}.")
        n = (depth - 4) // 6
        widths = (16 * k, 32 * k, 64 * k)
        return ArchSpec(
            key, "cifar", "wide", "basic", depth, 16, _cifar_stages(n, widths), "B", preact=True
        )
    if kind == "resnext":
        depth, card, width = nums
        if card < 1 or width < 1:
            raise ValueError("ResNeXt cardinality and width must be >= 1.")
        if depth == 29:
            outs = (256, 512, 1024)
            inner = tuple(card * width * 2**s for s in range(3))
            return ArchSpec(
                key,
                "cifar",
                "resnext",
                "bottleneck",
                29,
                64,
                _cifar_stages(3, outs, inner, card),
                "B",
            )
        if depth in (50, 101, 152):
            block, stages = _imagenet_stages(depth, groups=card, group_width=width)
            return ArchSpec(key, "imagenet", "resnext", block, depth, 64, stages, "B")
        raise ValueError(f"ResNeXt depth must be 29 (CIFAR) or 50/101/152 (ImageNet); got {depth}.")
    (depth,) = nums
    if kind == "preact":
        if depth in IMAGENET_DEPTHS:
            block, stages = _imagenet_stages(depth)
            return ArchSpec(key, "imagenet", "preact", block, depth, 64, stages, "B", preact=True)
        if depth >= 164 and (depth - 2) % 9 == 0:
            n = _cifar_depth(depth, 9)
            stages = _cifar_stages(n, (64, 128, 256), (16, 32, 64))
            return ArchSpec(
                key, "cifar", "preact", "bottleneck", depth, 16, stages, "B", preact=True
            )
        n = _cifar_depth(depth, 6)
        return ArchSpec(
            key,
            "cifar",
            "preact",
            "basic",
            depth,
            16,
            _cifar_stages(n, (16, 32, 64)),
            "B",
            preact=True,
        )
    plain = kind in ("plain", "cifar_plain")
    if kind in ("resnet", "plain") and depth in IMAGENET_DEPTHS:
        if plain and depth not in (18, 34):
            raise ValueError("the paper's ImageNet plain nets are plain18 and plain34.")
        block, stages = _imagenet_stages(depth)
        return ArchSpec(
            key,
            "imagenet",
            "plain" if plain else "resnet",
            block,
            depth,
            64,
            stages,
            "none" if plain else "B",
        )
    n = _cifar_depth(depth, 6)
    return ArchSpec(
        key,
        "cifar",
        "plain" if plain else "resnet",
        "basic",
        depth,
        16,
        _cifar_stages(n, (16, 32, 64)),
        "none" if plain else "A",
    )


CATALOGUE_NAMES: tuple[str, ...] = (
    *(f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)),
    *(f"plain{d}" for d in (20, 32, 44, 56, 110, 1202)),
    *(f"resnet{d}" for d in IMAGENET_DEPTHS),
    "plain18",
    "plain34",
    "preact_resnet110",
    "preact_resnet164",
    "preact_resnet1001",
    *(f"preact_resnet{d}" for d in IMAGENET_DEPTHS),
    "wrn16_8",
    "wrn28_10",
    "wrn40_4",
    "resnext29_8x64d",
    "resnext29_16x64d",
    "resnext50_32x4d",
    "resnext101_32x8d",
)
