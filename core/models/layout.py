"""The weights an architecture has, by layer name, from its spec alone (no Keras).

:func:`weight_shapes` lists every layer with weights that :func:`core.models.build_model` makes,
in the order of ``layer.get_weights()``: a convolution's kernel (height, width, inputs per
group, filters), a batch norm's gamma, beta, moving mean and moving variance, the head's kernel
and bias. Imported weight files are checked against it where TensorFlow is not loaded (the
API process), and the importers fill it in. It is tested equal to the built models'.
"""

from __future__ import annotations

from core.models.specs import ArchSpec

Shape = tuple[int, ...]
# The weights of one batch norm layer, as Keras orders them.
BN_WEIGHTS = ("gamma", "beta", "moving_mean", "moving_variance")
HEAD = "logits"


def weight_shapes(
    spec: ArchSpec, *, channels: int = 3, num_classes: int | None = None
) -> dict[str, list[Shape]]:
    """Layer name → the shapes of its weights, for every layer with weights but ``preprocess``.

    Args:
        spec: the architecture (its stride placement does not change any shape).
        channels: input channels.
        num_classes: the head's classes; None leaves the head (``logits``) out.
    """
    shapes: dict[str, list[Shape]] = {}

    def conv(name: str, c_in: int, c_out: int, kernel: int, groups: int = 1) -> None:
        shapes[name] = [(kernel, kernel, c_in // groups, c_out)]

    def bn(name: str, c: int) -> None:
        shapes[name] = [(c,)] * len(BN_WEIGHTS)

    if spec.family == "cifar":
        conv("stem_conv", channels, spec.stem_channels, 3)
        if not spec.preact:
            bn("stem_bn", spec.stem_channels)
    else:
        conv("stem_conv", channels, spec.stem_channels, 7)
        bn("stem_bn", spec.stem_channels)
    c_in = spec.stem_channels
    for s, stage in enumerate(spec.stages, 1):
        for b in range(1, stage.blocks + 1):
            name = f"stage{s}_block{b}"
            stride = stage.stride if b == 1 else 1
            if spec.preact:
                bn(f"{name}_bn0", c_in)
            if spec.block == "basic":
                convs = [
                    (c_in, stage.out_channels, 3, 1),
                    (stage.out_channels, stage.out_channels, 3, 1),
                ]
            else:
                convs = [
                    (c_in, stage.inner_channels, 1, 1),
                    (stage.inner_channels, stage.inner_channels, 3, stage.groups),
                    (stage.inner_channels, stage.out_channels, 1, 1),
                ]
            for i, (a, out, kernel, groups) in enumerate(convs, 1):
                if spec.preact and i > 1:
                    bn(f"{name}_bn{i - 1}", a)
                conv(f"{name}_conv{i}", a, out, kernel, groups)
                if not spec.preact:
                    bn(f"{name}_bn{i}", out)
            projected = not (stride == 1 and c_in == stage.out_channels)
            if spec.shortcut == "B" and projected:
                conv(f"{name}_shortcut_conv", c_in, stage.out_channels, 1)
                if not spec.preact:
                    bn(f"{name}_shortcut_bn", stage.out_channels)
            c_in = stage.out_channels
    if spec.preact:
        bn("final_bn", c_in)
    if num_classes is not None:
        shapes[HEAD] = [(c_in, num_classes), (num_classes,)]
    return shapes


def feature_channels(spec: ArchSpec) -> int:
    """Channels of the pooled features the head reads."""
    return spec.stages[-1].out_channels
