"""Where each of our weights comes from in a published file: one plan per source.

A plan maps each of our layers (names as :func:`core.models.layout.weight_shapes` lists them)
to the source tensors its weights are taken from, in Keras' weight order, with the change of
layout each needs:

- **torchvision** (ResNet-18…152, ResNeXt; v1.5): ``conv1``, ``bn1``, ``layer{s}.{b}.conv{i}``,
  ``.bn{i}``, ``.downsample.0/1``, ``fc``. Kernels are OIHW (filters first), ours HWIO; the
  classifier's weight is (classes, features), ours (features, classes). Batch norm's ε is 1e-5
  in both.
- **keras** (``keras.applications`` ResNet50/101/152; v1): ``conv1_conv``, ``conv1_bn``,
  ``conv{s+1}_block{b}_{i}_conv``, ``_{i}_bn``, ``_0_conv``/``_0_bn`` (the projection),
  ``predictions``. Its convolutions have biases and ours do not: each bias b is folded into the
  batch norm that follows (BN(z + b) with mean μ is BN(z) with mean μ − b, exactly). Its batch
  norms use ε = 1.001e-5 and ours 1e-5: the difference is added to the moving variance. Its
  images are BGR: the stem kernel's input channels are reversed so that ours take RGB.
- **model** (a ``.keras`` model of ours): every layer by its own name.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from core.models.layout import BN_WEIGHTS, HEAD, Shape, weight_shapes
from core.models.specs import ArchSpec, Padding, StrideIn

Source = Literal["torchvision", "keras", "model"]
SOURCES: tuple[Source, ...] = ("torchvision", "keras", "model")

OUR_BN_EPSILON = 1e-5  # core.models.builder's batch norms
KERAS_BN_EPSILON = 1.001e-5  # keras.applications ResNet's
# torchvision's buffer that counts batches; nothing of ours corresponds.
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass(frozen=True)
class Layout:
    """The architecture options a source's weights were trained with."""

    stride_in: StrideIn
    padding: Padding


@dataclass(frozen=True)
class Preprocessing:
    """What the source model does to [0, 255] RGB pixels, as our ``per_channel`` mode does it:
    ``(x - mean) / std`` (the BGR order of Keras' "caffe" mode is taken into the stem kernel)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]


LAYOUTS: dict[str, Layout] = {
    "torchvision": Layout("3x3", "symmetric"),
    "keras": Layout("1x1", "symmetric"),
}
PREPROCESSING: dict[str, Preprocessing] = {
    # torchvision: x/255, then the ImageNet mean and std: (x - 255·m) / (255·s)
    "torchvision": Preprocessing(
        mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255)
    ),
    # keras.applications.resnet.preprocess_input ("caffe"): BGR, minus the BGR mean, no scaling
    "keras": Preprocessing(mean=(123.68, 116.779, 103.939), std=(1.0, 1.0, 1.0)),
}


@dataclass(frozen=True)
class Take:
    """One of our weights: a source tensor, changed as it must be to fit ours."""

    name: str
    transpose: tuple[int, ...] | None = None
    flip_axis: int | None = None  # reversed along this axis (BGR → RGB)
    minus: str | None = None  # another source tensor subtracted (a conv bias folded into BN)
    plus: float = 0.0  # a constant added (the difference of two batch norm ε)

    def source_shape(self, ours: Shape) -> Shape:
        """The shape the source tensor must have for this weight to come out as ``ours``."""
        if self.transpose is None:
            return ours
        return tuple(ours[self.transpose.index(axis)] for axis in range(len(ours)))


Plan = dict[str, list[Take]]

_OIHW_TO_HWIO = (2, 3, 1, 0)


def supports(source: Source, spec: ArchSpec) -> str | None:
    """None if ``source`` publishes weights of ``spec``'s shape; else why not."""
    if source == "model":
        return None
    if spec.family != "imagenet" or spec.preact or spec.kind not in ("resnet", "resnext"):
        return f"{source} weights are for ImageNet ResNets; {spec.name!r} is not one"
    if source == "keras" and (spec.kind != "resnet" or spec.block != "bottleneck"):
        return "keras.applications publishes ResNet50, ResNet101 and ResNet152 only"
    return None


def make_plan(source: Source, spec: ArchSpec, *, head: bool) -> Plan:
    """Our layers (with the head when ``head``) → the source tensors of their weights."""
    if source == "torchvision":
        return _torchvision_plan(spec, head=head)
    if source == "keras":
        return _keras_plan(spec, head=head)
    shapes = weight_shapes(spec, num_classes=1 if head else None)
    return {layer: [Take(f"{layer}/{i}") for i in range(len(s))] for layer, s in shapes.items()}


def _blocks(spec: ArchSpec) -> list[tuple[int, int, str]]:
    """(stage, block, our name prefix) for every block, stages and blocks counted from 1."""
    return [
        (s, b, f"stage{s}_block{b}")
        for s, stage in enumerate(spec.stages, 1)
        for b in range(1, stage.blocks + 1)
    ]


def _torchvision_plan(spec: ArchSpec, *, head: bool) -> Plan:
    def conv(name: str) -> list[Take]:
        return [Take(f"{name}.weight", transpose=_OIHW_TO_HWIO)]

    def bn(name: str) -> list[Take]:
        return [Take(f"{name}.{w}") for w in ("weight", "bias", "running_mean", "running_var")]

    plan: Plan = {"stem_conv": conv("conv1"), "stem_bn": bn("bn1")}
    convs = 2 if spec.block == "basic" else 3
    ours = weight_shapes(spec)
    for s, b, name in _blocks(spec):
        theirs = f"layer{s}.{b - 1}"
        for i in range(1, convs + 1):
            plan[f"{name}_conv{i}"] = conv(f"{theirs}.conv{i}")
            plan[f"{name}_bn{i}"] = bn(f"{theirs}.bn{i}")
        if f"{name}_shortcut_conv" in ours:
            plan[f"{name}_shortcut_conv"] = conv(f"{theirs}.downsample.0")
            plan[f"{name}_shortcut_bn"] = bn(f"{theirs}.downsample.1")
    if head:
        plan[HEAD] = [Take("fc.weight", transpose=(1, 0)), Take("fc.bias")]
    return plan


def _keras_plan(spec: ArchSpec, *, head: bool) -> Plan:
    epsilon = KERAS_BN_EPSILON - OUR_BN_EPSILON

    def bn(name: str, conv: str) -> list[Take]:
        gamma, beta, mean, variance = (f"{name}/{w}" for w in BN_WEIGHTS)
        return [
            Take(gamma),
            Take(beta),
            Take(mean, minus=f"{conv}/bias"),
            Take(variance, plus=epsilon),
        ]

    plan: Plan = {
        "stem_conv": [Take("conv1_conv/kernel", flip_axis=2)],
        "stem_bn": bn("conv1_bn", "conv1_conv"),
    }
    ours = weight_shapes(spec)
    for s, b, name in _blocks(spec):
        theirs = f"conv{s + 1}_block{b}"
        for i in (1, 2, 3):
            plan[f"{name}_conv{i}"] = [Take(f"{theirs}_{i}_conv/kernel")]
            plan[f"{name}_bn{i}"] = bn(f"{theirs}_{i}_bn", f"{theirs}_{i}_conv")
        if f"{name}_shortcut_conv" in ours:
            plan[f"{name}_shortcut_conv"] = [Take(f"{theirs}_0_conv/kernel")]
            plan[f"{name}_shortcut_bn"] = bn(f"{theirs}_0_bn", f"{theirs}_0_conv")
    if head:
        plan[HEAD] = [Take("predictions/kernel"), Take("predictions/bias")]
    return plan


def source_shapes(plan: Plan, ours: dict[str, list[Shape]]) -> dict[str, Shape]:
    """Every source tensor the plan reads, with the shape it must have."""
    shapes: dict[str, Shape] = {}
    for layer, takes in plan.items():
        for take, shape in zip(takes, ours[layer], strict=True):
            shapes[take.name] = take.source_shape(shape)
            if take.minus is not None:
                shapes[take.minus] = shape
    return shapes


def compare_named(
    expected: dict[str, Shape], found: dict[str, Shape], *, limit: int = 5
) -> list[str]:
    """What keeps a named file from fitting: tensors missing, of another shape, or extra."""
    problems = []
    missing = [n for n in expected if n not in found]
    wrong = [n for n in expected if n in found and tuple(found[n]) != expected[n]]
    extra = [n for n in found if n not in expected and not n.endswith(IGNORED_SUFFIXES)]
    if missing:
        problems.append(f"{len(missing)} tensors missing ({_some(missing, limit)})")
    for name in wrong[:limit]:
        problems.append(f"{name} is {_dims(found[name])}, expected {_dims(expected[name])}")
    if len(wrong) > limit:
        problems.append(f"and {len(wrong) - limit} more of another shape")
    if extra:
        problems.append(
            f"{len(extra)} tensors the architecture has no place for ({_some(extra, limit)})"
        )
    return problems


def compare_shapes(expected: dict[str, Shape], found: dict[str, Shape]) -> list[str]:
    """For a file whose tensors are not named: the same shapes, as many times each."""
    want, have = Counter(expected.values()), Counter(map(tuple, found.values()))
    if want == have:
        return []
    short = sorted((want - have).items())[:3]
    surplus = sorted((have - want).items())[:3]
    return [
        f"{sum(want.values())} tensors expected and {sum(have.values())} found"
        + (f"; missing e.g. {', '.join(f'{n}× {_dims(s)}' for s, n in short)}" if short else "")
        + (f"; extra e.g. {', '.join(f'{n}× {_dims(s)}' for s, n in surplus)}" if surplus else "")
    ]


def _some(names: list[str], limit: int) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def _dims(shape: Shape) -> str:
    return "×".join(map(str, shape)) or "a scalar"
