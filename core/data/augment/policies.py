"""The policies, each a function of a batch and a NumPy generator.

Every policy draws a fixed number of random values per batch, whatever it then does with them,
so one image's augmentation never depends on what another image's drew.
"""

from __future__ import annotations

import numpy as np

from core.data.augment.ops import OPS, SIGNED, magnitudes

RANDAUGMENT_OPS = (
    "Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "Brightness", "Color",
    "Contrast", "Sharpness", "Posterize", "Solarize", "AutoContrast", "Equalize",
)  # fmt: skip
RANDAUGMENT_BINS = 31  # magnitudes 0..30, as in torchvision
AUTOAUGMENT_BINS = 10  # the policy's magnitudes 0..9

# (operation, probability, magnitude step) pairs: AutoAugment's 25 sub-policies learned on
# reduced CIFAR-10 (Cubuk et al. 2019), as torchvision lists them.
AUTOAUGMENT_CIFAR10: tuple[tuple[tuple[str, float, int], tuple[str, float, int]], ...] = (
    (("Invert", 0.1, 0), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 0), ("Equalize", 0.9, 0)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 0), ("Equalize", 0.5, 0)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 0), ("AutoContrast", 0.4, 0)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 0)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 0), ("Equalize", 0.6, 0)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 0)),
    (("AutoContrast", 0.8, 0), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 0)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 0), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 0), ("Invert", 0.1, 0)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 0)),
)


def _apply_each(x: np.ndarray, ops: list[str | None], amounts: np.ndarray) -> np.ndarray:
    """Image i gets ``ops[i]`` (None: left alone) at ``amounts[i]``; one call per operation."""
    out = x.copy()
    names = np.array([o or "" for o in ops])
    for op in sorted({o for o in ops if o is not None}):
        idx = np.flatnonzero(names == op)
        out[idx] = OPS[op](x[idx], amounts[idx])
    return out


def _draws(rng: np.random.Generator, high: int, n: int) -> np.ndarray:
    """``n`` integers in ``[0, high)``."""
    return np.asarray(rng.integers(high, size=n), np.int64)


def _signs(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.where(rng.random(n) < 0.5, -1.0, 1.0)


def randaugment(
    x: np.ndarray, rng: np.random.Generator, *, num_ops: int, magnitude: int
) -> np.ndarray:
    """RandAugment: ``num_ops`` operations in a row per image, each drawn uniformly from the
    14, all at strength ``magnitude`` of 30 (signed ones with a random sign)."""
    n, h, w = x.shape[:3]
    strength = np.array(
        [magnitudes(op, RANDAUGMENT_BINS, h, w)[magnitude] for op in RANDAUGMENT_OPS]
    )
    signed = np.array([op in SIGNED for op in RANDAUGMENT_OPS])
    for _ in range(num_ops):
        chosen = _draws(rng, len(RANDAUGMENT_OPS), n)
        signs = _signs(rng, n)
        amounts = strength[chosen] * np.where(signed[chosen], signs, 1.0)
        x = _apply_each(x, [RANDAUGMENT_OPS[k] for k in chosen], amounts)
    return x


def autoaugment_cifar10(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """AutoAugment's CIFAR-10 policy: per image one of the 25 sub-policies, each of its two
    operations applied with its probability at its strength (of 10)."""
    n, h, w = x.shape[:3]
    chosen = _draws(rng, len(AUTOAUGMENT_CIFAR10), n)
    applied = rng.random((n, 2))
    signs = _signs(rng, 2 * n).reshape(n, 2)
    for step in range(2):
        ops: list[str | None] = []
        amounts = np.zeros(n)
        for i, k in enumerate(chosen):
            op, prob, level = AUTOAUGMENT_CIFAR10[k][step]
            ops.append(op if applied[i, step] < prob else None)
            sign = signs[i, step] if op in SIGNED else 1.0
            amounts[i] = magnitudes(op, AUTOAUGMENT_BINS, h, w)[level] * sign
        x = _apply_each(x, ops, amounts)
    return x


def cutout_at(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
    """Zero a ``size`` x ``size`` square centred at (rows[i], cols[i]) in image i, clipped to
    the image (rows ``r - size//2`` up to ``r - size//2 + size``, excluded)."""
    h, w = x.shape[1:3]
    top = np.asarray(rows)[:, None] - size // 2
    left = np.asarray(cols)[:, None] - size // 2
    in_rows = (np.arange(h)[None, :] >= top) & (np.arange(h)[None, :] < top + size)
    in_cols = (np.arange(w)[None, :] >= left) & (np.arange(w)[None, :] < left + size)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return np.where(square[..., None], np.zeros((), x.dtype), x)


def cutout(x: np.ndarray, rng: np.random.Generator, *, size: int) -> np.ndarray:
    """Cutout: a square of ``size`` zeroed in each image, centred anywhere in it."""
    n, h, w = x.shape[:3]
    return cutout_at(x, _draws(rng, h, n), _draws(rng, w, n), size)


def mixup(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, alpha: float, prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """mixup: with probability ``prob``, ``lam * batch + (1 - lam) * shuffled batch`` for the
    images and the (one-hot) labels alike; one ``lam ~ Beta(alpha, alpha)`` per batch."""
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(len(x))
    if rng.random() >= prob:
        return x, y
    return mix_images(x, partner, lam), lam * y + (1.0 - lam) * y[partner]


def mix_images(x: np.ndarray, partner: np.ndarray, lam: float) -> np.ndarray:
    return (lam * x + (1.0 - lam) * x[partner]).astype(np.float32)


def cutmix(
    x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, alpha: float, prob: float
) -> tuple[np.ndarray, np.ndarray]:
    """CutMix: with probability ``prob``, a box of each partner's image pasted into each image
    (one box per batch, of area about ``1 - lam``, centred anywhere, clipped), the labels
    weighted by the area each image keeps."""
    n, h, w = x.shape[:3]
    lam = float(rng.beta(alpha, alpha))
    partner = rng.permutation(n)
    centre = (int(rng.integers(h)), int(rng.integers(w)))
    if rng.random() >= prob:
        return x, y
    return paste_box(x, y, partner, box_for(lam, centre, h, w))


def box_for(lam: float, centre: tuple[int, int], h: int, w: int) -> tuple[int, int, int, int]:
    """Yun et al.'s box: sides ``sqrt(1 - lam)`` of the image's, about ``centre``, clipped."""
    ratio = np.sqrt(1.0 - lam)
    ch, cw = int(h * ratio), int(w * ratio)
    top, bottom = np.clip([centre[0] - ch // 2, centre[0] + ch // 2], 0, h)
    left, right = np.clip([centre[1] - cw // 2, centre[1] + cw // 2], 0, w)
    return int(top), int(bottom), int(left), int(right)


def paste_box(
    x: np.ndarray, y: np.ndarray, partner: np.ndarray, box: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Image i with ``box`` (top, bottom, left, right) from image ``partner[i]``; the labels
    weighted by the pixels each contributes."""
    h, w = x.shape[1:3]
    top, bottom, left, right = box
    out = x.copy()
    out[:, top:bottom, left:right] = x[partner, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return out, kept * y + (1.0 - kept) * y[partner]
