"""One builder: an :class:`ArchSpec` in, a Keras 3 functional model out.

Layer names are hierarchical and stable (``stage2_block3_conv1``), so weights can be found,
frozen and transferred by name. Only Keras layers and ``keras.ops`` are used, so the same model
trains under the TensorFlow and the JAX backends.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import keras

from core.models.layers import BatchNorm, Preprocess, ZeroPadShortcut
from core.models.limits import check_input_shape, check_spec_size
from core.models.specs import ArchSpec, Padding, Shortcut, Stage, StrideIn, parse_architecture


@dataclass(frozen=True)
class _Layers:
    """Layer factories sharing dtype policy and weight decay."""

    dtype: str | None
    weight_decay: float
    padding: Padding = "same"

    def _regularizer(self) -> keras.regularizers.Regularizer | None:
        # Keras' L2 adds l2·Σw², whose gradient is 2·l2·w; SGD weight decay λ adds λ·w.
        return keras.regularizers.L2(self.weight_decay / 2) if self.weight_decay else None

    def conv(
        self, x: Any, filters: int, kernel: int, stride: int, name: str, groups: int = 1
    ) -> Any:
        padding = "same"
        if self.padding == "symmetric" and stride > 1 and kernel > 1:
            # kernel//2 on every side, then no more: the grid Caffe and PyTorch sample.
            x = keras.layers.ZeroPadding2D(kernel // 2, dtype=self.dtype, name=f"{name}_pad")(x)
            padding = "valid"
        return keras.layers.Conv2D(
            filters,
            kernel,
            strides=stride,
            padding=padding,
            use_bias=False,
            groups=groups,
            kernel_initializer="he_normal",
            kernel_regularizer=self._regularizer(),
            dtype=self.dtype,
            name=name,
        )(x)

    def bn(self, x: Any, name: str) -> Any:
        return BatchNorm(momentum=0.9, epsilon=1e-5, dtype=self.dtype, name=name)(x)

    def max_pool(self, x: Any, name: str) -> Any:
        """The stem's 3×3/2 max pool; zero padding is max padding here (its input is a ReLU's)."""
        padding = "same"
        if self.padding == "symmetric":
            x = keras.layers.ZeroPadding2D(1, dtype=self.dtype, name=f"{name}_pad")(x)
            padding = "valid"
        return keras.layers.MaxPooling2D(3, 2, padding=padding, dtype=self.dtype, name=name)(x)

    def relu(self, x: Any, name: str) -> Any:
        return keras.layers.ReLU(dtype=self.dtype, name=name)(x)

    def bn_relu(self, x: Any, name: str, suffix: str = "") -> Any:
        return self.relu(self.bn(x, f"{name}_bn{suffix}"), f"{name}_relu{suffix}")

    def dense(self, x: Any, units: int, name: str) -> Any:
        return keras.layers.Dense(
            units,
            kernel_initializer="he_normal",
            kernel_regularizer=self._regularizer(),
            dtype=self.dtype,
            name=name,
        )(x)


def _shortcut(
    L: _Layers, x: Any, pre: Any, out: int, stride: int, kind: Shortcut, name: str, *, with_bn: bool
) -> Any:
    """The shortcut branch: identity when shapes agree, else option A or B."""
    if stride == 1 and x.shape[-1] == out:
        return x
    if kind == "A":
        return ZeroPadShortcut(out, stride, dtype=L.dtype, name=f"{name}_shortcut")(x)
    y = L.conv(pre, out, 1, stride, f"{name}_shortcut_conv")
    return L.bn(y, f"{name}_shortcut_bn") if with_bn else y


def _block(L: _Layers, x: Any, spec: ArchSpec, stage: Stage, stride: int, name: str) -> Any:
    """A basic (two 3×3) or bottleneck (1×1, 3×3, 1×1) block, post- or pre-activation."""
    if spec.preact:
        pre = L.bn_relu(x, name, "0")
        y = pre
    else:
        pre = x
        y = x
    if spec.block == "basic":
        convs = [(stage.out_channels, 3, stride, 1), (stage.out_channels, 3, 1, 1)]
    else:
        first, middle = (stride, 1) if spec.stride_in == "1x1" else (1, stride)
        convs = [
            (stage.inner_channels, 1, first, 1),
            (stage.inner_channels, 3, middle, stage.groups),
            (stage.out_channels, 1, 1, 1),
        ]
    for i, (filters, kernel, s, groups) in enumerate(convs, 1):
        last = i == len(convs)
        if spec.preact and i > 1:
            y = L.bn_relu(y, name, str(i - 1))
            if spec.dropout and i == len(convs):
                y = keras.layers.Dropout(spec.dropout, name=f"{name}_dropout")(y)
        y = L.conv(y, filters, kernel, s, f"{name}_conv{i}", groups)
        if not spec.preact:
            y = L.bn(y, f"{name}_bn{i}")
            if not last:
                y = L.relu(y, f"{name}_relu{i}")
    if spec.shortcut != "none":
        sc = _shortcut(
            L, x, pre, stage.out_channels, stride, spec.shortcut, name, with_bn=not spec.preact
        )
        y = keras.layers.Add(dtype=L.dtype, name=f"{name}_add")([sc, y])
    return y if spec.preact else L.relu(y, f"{name}_out")


def build_model(
    arch: str | ArchSpec,
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int = 10,
    shortcut: Shortcut | None = None,
    multi_label: bool = False,
    normalization: str = "per_pixel_mean",
    dtype_policy: str | None = None,
    weight_decay: float = 0.0,
    dropout: float | None = None,
    stride_in: StrideIn | None = None,
    padding: Padding | None = None,
) -> keras.Model:
    """Build a ResNet (or a variant) as a Keras functional model.

    The model takes pixels in [0, 255] and returns class probabilities (softmax), or per-label
    probabilities (sigmoid) when ``multi_label``. Input normalisation lives in its first layer
    (``preprocess``), whose statistics training fills in from the training set.

    Args:
        arch: an architecture name (see :mod:`core.models.specs`) or a spec.
        input_shape: (height, width, channels); defaults to 32×32×3 (CIFAR) or 224×224×3 (ImageNet).
        num_classes: size of the classifier head.
        shortcut: override the shortcut option ("A" or "B") of a residual net.
        multi_label: sigmoid head for multi-label data (e.g. MS COCO).
        normalization: see :class:`core.models.layers.Preprocess`.
        dtype_policy: a Keras dtype policy such as ``"mixed_bfloat16"``; the head stays float32.
        weight_decay: SGD-style weight decay on every kernel (paper: 1e-4).
        dropout: dropout between the convs of wide/pre-activation blocks.
        stride_in: override where a bottleneck block's stride sits, ``"3x3"`` (v1.5) or ``"1x1"``
            (v1, Keras applications' weights); see :data:`core.models.specs.StrideIn`.
        padding: override how strided convolutions pad, ``"same"`` or ``"symmetric"`` (as
            Caffe and PyTorch; published weights need it); see :data:`core.models.specs.Padding`.
    """
    spec = parse_architecture(arch) if isinstance(arch, str) else arch
    if shortcut is not None:
        spec = spec.with_shortcut(shortcut)
    if dropout is not None:
        spec = ArchSpec(**{**spec.__dict__, "dropout": float(dropout)})
    spec = spec.with_layout(stride_in=stride_in, padding=padding)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
    # The bounds of core.models.limits, as at the door: a shape taken from the data is checked
    # here, before Keras allocates anything.
    shape = check_input_shape(tuple(input_shape or spec.default_input_shape))
    check_spec_size(spec, input_shape=shape)
    L = _Layers(dtype_policy, weight_decay, spec.padding)
    # Keras walks the layer graph recursively: ResNet-1202 needs a few thousand frames.
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 20_000))

    inputs = keras.Input(shape=shape, name="image")
    resize = "crop" if spec.family == "imagenet" else "direct"
    x = Preprocess(normalization, shape, resize, name="preprocess")(inputs)
    if spec.family == "cifar":
        x = L.conv(x, spec.stem_channels, 3, 1, "stem_conv")
        if not spec.preact:
            x = L.relu(L.bn(x, "stem_bn"), "stem_relu")
    else:
        x = L.conv(x, spec.stem_channels, 7, 2, "stem_conv")
        x = L.relu(L.bn(x, "stem_bn"), "stem_relu")
        x = L.max_pool(x, "stem_pool")
    for s, stage in enumerate(spec.stages, 1):
        for b in range(1, stage.blocks + 1):
            stride = stage.stride if b == 1 else 1
            x = _block(L, x, spec, stage, stride, f"stage{s}_block{b}")
    if spec.preact:
        x = L.relu(L.bn(x, "final_bn"), "final_relu")
    x = keras.layers.GlobalAveragePooling2D(dtype=L.dtype, name="pool")(x)
    x = L.dense(x, num_classes, "logits")
    outputs = keras.layers.Activation(
        "sigmoid" if multi_label else "softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=spec.name)
