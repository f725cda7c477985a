"""How large an architecture may be: one table, checked wherever a name or an input shape enters.

The parser (:func:`core.models.specs.parse_architecture`) checks the name's numbers (depth,
widening factor, cardinality, group width) and the spec's size (parameters); the builder and the
training config check the input shape and the work per image (multiply-adds). The service's
``POST /v1/runs``, experiments and the CLI all parse names and validate configs through these, so
a run no worker could build is refused at the door, with the bound named, before it is queued.

The bounds hold every architecture of the catalogue with room to spare (the largest,
``resnext101_32x8d``, has 88.8 M parameters and 16.5 G multiply-adds at 224×224); they stop
names like ``resnet6000000002`` or ``wrn28_100000`` and inputs like 100000×100000, which would
exhaust a worker's memory while the model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.models.specs import ArchSpec


@dataclass(frozen=True)
class ArchLimits:
    """The bounds, in one place (the docs and the error messages read them from here)."""

    max_name_chars: int = 64  # runs store the name in a 64-character column
    max_number_digits: int = 6  # any number in a name; longer ones are refused before int()
    max_depth: int = 2000  # resnet1202 and preact_resnet1001 are the deepest published
    max_widen: int = 20  # WRN's k: the paper goes to 12
    max_cardinality: int = 64  # ResNeXt's groups: the paper goes to 64 (ImageNet)
    max_group_width: int = 256  # ResNeXt's d
    max_params: int = 150_000_000  # trainable parameters with a 1000-way head
    min_side: int = 8  # input height and width
    max_side: int = 1024
    max_channels: int = 4
    max_macs: int = 100_000_000_000  # multiply-adds per image at the input shape


LIMITS = ArchLimits()


class OutOfBounds(ValueError):
    """An architecture or input beyond :data:`LIMITS` (the message names the bound)."""


def check_number(text: str, what: str, name: str) -> int:
    """A number of an architecture name (ASCII digits only, as the parser's regexes match).

    Raises:
        ValueError: more digits than :attr:`ArchLimits.max_number_digits`.
    """
    if len(text) > LIMITS.max_number_digits:
        raise OutOfBounds(
            f"{what} {text[:12]}{'…' if len(text) > 12 else ''} of {name!r} has more than "
            f"{LIMITS.max_number_digits} digits"
        )
    return int(text)


def check_name_length(name: str) -> None:
    if len(name) > LIMITS.max_name_chars:
        raise OutOfBounds(
            f"Architecture name of {len(name)} characters: the limit is {LIMITS.max_name_chars}"
        )


def _bounded(value: int, limit: int, what: str, name: str) -> None:
    if value > limit:
        raise OutOfBounds(f"{what} {value} of {name!r} exceeds the limit of {limit}")


def check_spec_numbers(
    name: str, *, depth: int, widen: int = 1, cardinality: int = 1, group_width: int = 1
) -> None:
    """Depth, WRN widening factor, ResNeXt cardinality and group width within the table."""
    _bounded(depth, LIMITS.max_depth, "depth", name)
    _bounded(widen, LIMITS.max_widen, "widening factor", name)
    _bounded(cardinality, LIMITS.max_cardinality, "cardinality", name)
    _bounded(group_width, LIMITS.max_group_width, "group width", name)


def check_input_shape(shape: tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    """(height, width, channels) within the table.

    Raises:
        ValueError: not three numbers, or one out of bounds (named, with the bound).
    """
    if len(shape) != 3:
        raise ValueError(f"input_shape must be (height, width, channels); got {tuple(shape)}")
    height, width, channels = (int(v) for v in shape)
    for what, value in (("height", height), ("width", width)):
        if not LIMITS.min_side <= value <= LIMITS.max_side:
            raise OutOfBounds(
                f"input {what} {value} is out of bounds: it must lie in "
                f"[{LIMITS.min_side}, {LIMITS.max_side}]"
            )
    if not 1 <= channels <= LIMITS.max_channels:
        raise OutOfBounds(
            f"input channels {channels} is out of bounds: it must lie in [1, {LIMITS.max_channels}]"
        )
    return height, width, channels


@dataclass(frozen=True)
class Size:
    params: int  # trainable parameters
    macs: int  # multiply-adds per image (convs and the head, as core.models.count_flops)


def spec_size(
    spec: ArchSpec, *, input_shape: tuple[int, int, int] | None = None, num_classes: int = 1000
) -> Size:
    """Trainable parameters and multiply-adds of the model :func:`build_model` would make,
    counted from the spec alone (no Keras): equal to ``count_trainable_params`` (tested)."""
    height, width, channels = input_shape or spec.default_input_shape
    params = macs = 0

    def conv(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1) -> None:
        nonlocal params, macs, height, width
        height, width = -(-height // stride), -(-width // stride)  # padding "same"
        weights = kernel * kernel * (c_in // groups) * c_out
        params += weights
        macs += height * width * weights

    def bn(c: int) -> None:
        nonlocal params
        params += 2 * c  # gamma and beta; the moving statistics are not trained

    if spec.family == "cifar":
        conv(channels, spec.stem_channels, 3, 1)
        if not spec.preact:
            bn(spec.stem_channels)
    else:
        conv(channels, spec.stem_channels, 7, 2)
        bn(spec.stem_channels)
        height, width = -(-height // 2), -(-width // 2)  # the stem's max pool
    c_in = spec.stem_channels
    for stage in spec.stages:
        for b in range(stage.blocks):
            stride = stage.stride if b == 0 else 1
            in_h, in_w = height, width
            if spec.preact:
                bn(c_in)
            if spec.block == "basic":
                convs = [(c_in, stage.out_channels, 3, stride, 1)]
                convs.append((stage.out_channels, stage.out_channels, 3, 1, 1))
            else:
                first, middle = (stride, 1) if spec.stride_in == "1x1" else (1, stride)
                convs = [
                    (c_in, stage.inner_channels, 1, first, 1),
                    (stage.inner_channels, stage.inner_channels, 3, middle, stage.groups),
                    (stage.inner_channels, stage.out_channels, 1, 1, 1),
                ]
            for i, (a, b_out, kernel, s, groups) in enumerate(convs, 1):
                if spec.preact and i > 1:
                    bn(a)
                conv(a, b_out, kernel, s, groups)
                if not spec.preact:
                    bn(b_out)
            projected = not (stride == 1 and c_in == stage.out_channels)
            if spec.shortcut == "B" and projected:
                out_h, out_w = height, width
                height, width = in_h, in_w
                conv(c_in, stage.out_channels, 1, stride)
                height, width = out_h, out_w
                if not spec.preact:
                    bn(stage.out_channels)
            c_in = stage.out_channels
    if spec.preact:
        bn(c_in)
    params += c_in * num_classes + num_classes
    macs += c_in * num_classes
    return Size(params, macs)


def check_spec_size(spec: ArchSpec, *, input_shape: tuple[int, int, int] | None = None) -> Size:
    """Parameters (and, with an input shape, multiply-adds per image) within the table."""
    size = spec_size(spec, input_shape=input_shape)
    if size.params > LIMITS.max_params:
        raise OutOfBounds(
            f"{spec.name!r} has {size.params:,} parameters: the limit is {LIMITS.max_params:,}"
        )
    if input_shape is not None and size.macs > LIMITS.max_macs:
        raise OutOfBounds(
            f"{spec.name!r} at input {input_shape} needs {size.macs:,} multiply-adds per image: "
            f"the limit is {LIMITS.max_macs:,}"
        )
    return size
