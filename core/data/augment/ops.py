"""The image operations of RandAugment and AutoAugment, on uint8 batches, in NumPy.

Each takes ``(n, H, W, C)`` uint8 images and one magnitude per image and returns new uint8
images. They follow PIL's definitions, which the AutoAugment and RandAugment papers (through
torchvision) used: an "enhance" blends the image with a degenerate one (black for brightness,
grey for colour, the mean grey for contrast, a smoothed copy for sharpness); geometric ones
sample with the nearest pixel about the image's centre and fill what falls outside with grey.

One implementation serves both input pipelines (the ``tf.data`` one calls it through
``tf.numpy_function``), so a policy means the same pixels on every backend.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

# The grey outside a sheared, rotated or translated image (the AutoAugment authors' fill).
FILL = 128
# PIL's "L" conversion in fixed point: (R*299 + G*587 + B*114) / 1000, rounded.
_LUMA = np.array([19595, 38470, 7471], np.int64)

Op = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _per_image(m: np.ndarray) -> np.ndarray:
    return np.asarray(m, np.float64)[:, None, None, None]


# --------------------------------------------------------------------------- geometry


def affine(x: np.ndarray, matrices: np.ndarray, *, fill: int = FILL) -> np.ndarray:
    """Resample each image through its own 2x3 matrix (nearest pixel).

    Args:
        x: uint8 ``(n, H, W, C)``.
        matrices: ``(n, 2, 3)``: an output pixel at (row, col), measured from the image's
            centre, takes the input pixel at ``matrix @ (row, col, 1)`` (also from the centre).
        fill: the value where that falls outside the image.
    """
    n, h, w, _ = x.shape
    cy, cx = (h - 1) / 2, (w - 1) / 2
    rows, cols = np.meshgrid(np.arange(h) - cy, np.arange(w) - cx, indexing="ij")
    grid = np.stack([rows, cols, np.ones_like(rows)], axis=-1)
    src = np.einsum("nij,hwj->nhwi", np.asarray(matrices, np.float64), grid)
    sr = np.rint(src[..., 0] + cy).astype(np.int64)
    sc = np.rint(src[..., 1] + cx).astype(np.int64)
    inside = (sr >= 0) & (sr < h) & (sc >= 0) & (sc < w)
    out = x[np.arange(n)[:, None, None], np.clip(sr, 0, h - 1), np.clip(sc, 0, w - 1)]
    out[~inside] = fill
    return out


def _matrices(n: int, rows: list[list[np.ndarray | float]]) -> np.ndarray:
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for r in rows for v in r], 1)


def rotate(x: np.ndarray, degrees: np.ndarray) -> np.ndarray:
    """Counter-clockwise by ``degrees`` about the centre (90 is ``np.rot90`` on a square)."""
    t = np.deg2rad(np.asarray(degrees, np.float64))
    c, s = np.cos(t), np.sin(t)
    m = _matrices(len(x), [[c, s, 0.0], [-s, c, 0.0]])
    return affine(x, m.reshape(-1, 2, 3))


def shear_x(x: np.ndarray, shear: np.ndarray) -> np.ndarray:
    """Row r shifts by ``-shear * r`` pixels (PIL's affine ``(1, shear, 0, 0, 1, 0)``)."""
    m = _matrices(len(x), [[1.0, 0.0, 0.0], [shear, 1.0, 0.0]])
    return affine(x, m.reshape(-1, 2, 3))


def shear_y(x: np.ndarray, shear: np.ndarray) -> np.ndarray:
    m = _matrices(len(x), [[1.0, shear, 0.0], [0.0, 1.0, 0.0]])
    return affine(x, m.reshape(-1, 2, 3))


def translate_x(x: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The content moves ``pixels`` to the right (left when negative)."""
    m = _matrices(len(x), [[1.0, 0.0, 0.0], [0.0, 1.0, -np.asarray(pixels, np.float64)]])
    return affine(x, m.reshape(-1, 2, 3))


def translate_y(x: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """The content moves ``pixels`` down (up when negative)."""
    m = _matrices(len(x), [[1.0, 0.0, -np.asarray(pixels, np.float64)], [0.0, 1.0, 0.0]])
    return affine(x, m.reshape(-1, 2, 3))


# --------------------------------------------------------------------------- colour


def grayscale(x: np.ndarray) -> np.ndarray:
    """uint8 ``(n, H, W, 1)``: PIL's luma of RGB; a gray image as it is."""
    if x.shape[-1] == 1:
        return x
    return ((x.astype(np.int64) @ _LUMA + 0x8000) >> 16).astype(np.uint8)[..., None]


def _blend(degenerate: np.ndarray, x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """PIL's ``Image.blend(degenerate, x, factor)``: factor 1 is x, 0 the degenerate image."""
    d = degenerate.astype(np.float64)
    return _to_uint8(d + _per_image(factor) * (x.astype(np.float64) - d))


def brightness(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    return _blend(np.zeros_like(x), x, factor)


def color(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Saturation: blended with the image's own grey (a gray image is unchanged)."""
    return _blend(np.broadcast_to(grayscale(x), x.shape), x, factor)


def contrast(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Blended with a flat image of the mean grey."""
    mean = np.floor(grayscale(x).mean(axis=(1, 2, 3), keepdims=True) + 0.5)
    return _blend(np.broadcast_to(mean, x.shape), x, factor)


def sharpness(x: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Blended with PIL's SMOOTH filter of the image (kernel 1 1 1 / 1 5 1 / 1 1 1, over 13);
    the border pixels are the image's own, as in PIL."""
    h, w = x.shape[1:3]
    if h < 3 or w < 3:
        return x.copy()
    f = x.astype(np.float64)
    total = sum(
        f[:, 1 + dr : h - 1 + dr, 1 + dc : w - 1 + dc] for dr in (-1, 0, 1) for dc in (-1, 0, 1)
    )
    smooth = f.copy()
    smooth[:, 1:-1, 1:-1] = (total + 4 * f[:, 1:-1, 1:-1]) / 13
    return _blend(_to_uint8(smooth), x, factor)


def posterize(x: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """Keep the ``bits`` most significant bits of every value."""
    keep = np.asarray(bits, np.int64).clip(0, 8)
    mask = ((0xFF << (8 - keep)) & 0xFF).astype(np.uint8)
    return x & mask[:, None, None, None]


def solarize(x: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Values at or above ``threshold`` are inverted."""
    return np.where(x >= _per_image(threshold), 255 - x, x).astype(np.uint8)


def invert(x: np.ndarray, _: np.ndarray | None = None) -> np.ndarray:
    return (255 - x).astype(np.uint8)


def identity(x: np.ndarray, _: np.ndarray | None = None) -> np.ndarray:
    return x.copy()


def autocontrast(x: np.ndarray, _: np.ndarray | None = None) -> np.ndarray:
    """Each channel stretched so that its darkest value is 0 and its lightest 255."""
    lo = x.min(axis=(1, 2), keepdims=True).astype(np.float64)
    hi = x.max(axis=(1, 2), keepdims=True).astype(np.float64)
    flat = hi <= lo
    scale = np.where(flat, 1.0, 255.0 / np.where(flat, 1.0, hi - lo))
    stretched = (x - np.where(flat, 0.0, lo)) * scale
    return _to_uint8(stretched)


def equalize(x: np.ndarray, _: np.ndarray | None = None) -> np.ndarray:
    """Each channel's histogram equalised, by PIL's ``ImageOps.equalize`` rule."""
    n, h, w, c = x.shape
    planes = x.transpose(0, 3, 1, 2).reshape(n * c, h * w).astype(np.int64)
    offsets = np.arange(n * c)[:, None] * 256
    hist = np.bincount((planes + offsets).ravel(), minlength=n * c * 256).reshape(n * c, 256)
    # PIL leaves out the count of the last value present: it maps to 255 whatever it is.
    last = 255 - np.argmax(hist[:, ::-1] > 0, axis=1)
    step = (hist.sum(axis=1) - hist[np.arange(n * c), last]) // 255
    below = np.cumsum(hist, axis=1) - hist  # pixels with a smaller value
    safe = np.maximum(step, 1)[:, None]
    lut = np.minimum((below + safe // 2) // safe, 255)
    lut = np.where(step[:, None] > 0, lut, np.arange(256)[None, :])
    out = np.take_along_axis(lut, planes, axis=1)
    return out.reshape(n, c, h, w).transpose(0, 2, 3, 1).astype(np.uint8)


OPS: dict[str, Op] = {
    "Identity": identity,
    "ShearX": shear_x,
    "ShearY": shear_y,
    "TranslateX": translate_x,
    "TranslateY": translate_y,
    "Rotate": rotate,
    "Brightness": lambda x, m: brightness(x, 1.0 + m),
    "Color": lambda x, m: color(x, 1.0 + m),
    "Contrast": lambda x, m: contrast(x, 1.0 + m),
    "Sharpness": lambda x, m: sharpness(x, 1.0 + m),
    "Posterize": posterize,
    "Solarize": solarize,
    "AutoContrast": autocontrast,
    "Equalize": equalize,
    "Invert": invert,
}
# Operations whose magnitude is drawn with a random sign.
SIGNED = frozenset(
    {
        "ShearX",
        "ShearY",
        "TranslateX",
        "TranslateY",
        "Rotate",
        "Brightness",
        "Color",
        "Contrast",
        "Sharpness",
    }
)


def magnitudes(op: str, bins: int, height: int, width: int) -> np.ndarray:
    """The magnitude of each of ``bins`` strength steps (torchvision's tables).

    Enhancements give the change of the factor (0.9: factor 1.9, or 0.1 with a minus sign),
    translations pixels (up to 150/331 of the side), posterize the bits kept (8 down to 4),
    solarize the threshold (255 down to 0). Operations without a magnitude give zeros.
    """
    if op in ("ShearX", "ShearY"):
        return np.linspace(0.0, 0.3, bins)
    if op == "TranslateX":
        return np.linspace(0.0, 150.0 / 331.0 * width, bins)
    if op == "TranslateY":
        return np.linspace(0.0, 150.0 / 331.0 * height, bins)
    if op == "Rotate":
        return np.linspace(0.0, 30.0, bins)
    if op in ("Brightness", "Color", "Contrast", "Sharpness"):
        return np.linspace(0.0, 0.9, bins)
    if op == "Posterize":
        return 8 - np.round(np.arange(bins) / ((bins - 1) / 4))
    if op == "Solarize":
        return np.linspace(255.0, 0.0, bins)
    return np.zeros(bins)
