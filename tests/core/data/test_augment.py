"""The augmentation policies (core.data.augment): names, operations, policies, known answers.

Pure NumPy: the pipelines that apply them are tested in test_pipeline_augment.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from core.data.augment import AugmentParams, batch_policy, ops, parse_augment
from core.data.augment.policies import (
    AUTOAUGMENT_CIFAR10,
    RANDAUGMENT_OPS,
    cutmix,
    cutout,
    cutout_at,
    mixup,
    paste_box,
)
from core.data.augment.spec import POLICIES, CutoutParams, MixupParams

RNG = np.random.default_rng(0)
IMAGES = RNG.integers(0, 256, (6, 12, 10, 3)).astype(np.uint8)
LOW_CONTRAST = (IMAGES // 4 + 60).astype(np.uint8)


def pil_each(x: np.ndarray, fn) -> np.ndarray:
    return np.stack([np.asarray(fn(Image.fromarray(a))) for a in x])


# --------------------------------------------------------------------------- names


def test_names_are_a_set_stored_in_the_order_they_apply():
    spec = parse_augment("cifar+mixup+cutout+randaugment")
    assert spec.name == "cifar+randaugment+cutout+mixup"
    assert spec.mixes_labels and spec.policies == ("randaugment", "cutout", "mixup")
    assert parse_augment(" CIFAR ").name == "cifar"
    assert not parse_augment("imagenet+autoaugment-cifar10").mixes_labels


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("cifar+autoaugment", "Unknown augmentation: 'autoaugment'"),
        ("cifar+cutout+cutout", "'cutout' twice"),
        ("cifar+imagenet", "2 of the base transforms"),
        ("cifar+randaugment+autoaugment-cifar10", "per-image polic"),
        ("cifar+mixup+cutmix", "label-mixing polic"),
        ("cutout", "names no base transform: start with one of none, cifar, imagenet"),
        ("", "Unknown augmentation: ''"),
    ],
)
def test_bad_names_are_refused_saying_why(text, says):
    with pytest.raises(ValueError, match=says.replace("(", r"\(").replace("+", r"\+")):
        parse_augment(text)


def test_an_unknown_name_lists_the_valid_ones():
    with pytest.raises(ValueError) as err:
        parse_augment("cifar+bogus")
    for name in POLICIES:
        assert name in str(err.value)


def test_label_mixing_is_refused_on_multi_label_data_and_cutout_larger_than_the_image():
    with pytest.raises(ValueError, match="multi-label"):
        batch_policy(
            parse_augment("none+cutmix"),
            None,
            num_classes=4,
            multi_label=True,
            image_shape=(8, 8, 3),
        )
    params = AugmentParams(cutout=CutoutParams(size=9))
    with pytest.raises(ValueError, match=r"cutout\.size 9 exceeds the 8x8 input"):
        batch_policy(
            parse_augment("cifar+cutout"),
            params,
            num_classes=4,
            multi_label=False,
            image_shape=(8, 8, 3),
        )
    assert (
        batch_policy(
            parse_augment("cifar"), None, num_classes=4, multi_label=False, image_shape=(8, 8, 3)
        )
        is None
    )


# --------------------------------------------------------------------------- operations


def test_rotation_by_90_degrees_is_rot90_and_translation_fills_grey():
    square = RNG.integers(0, 256, (2, 5, 5, 3)).astype(np.uint8)
    assert np.array_equal(ops.rotate(square, np.array([90.0, 90.0])), np.rot90(square, axes=(1, 2)))
    moved = ops.translate_x(IMAGES, np.full(6, 2.0))
    assert np.array_equal(moved[:, :, 2:], IMAGES[:, :, :-2])
    assert np.all(moved[:, :, :2] == ops.FILL)
    up = ops.translate_y(IMAGES, np.full(6, -3.0))
    assert np.array_equal(up[:, :-3], IMAGES[:, 3:]) and np.all(up[:, -3:] == ops.FILL)


def test_shear_x_shifts_each_row_by_its_distance_from_the_centre():
    x = RNG.integers(0, 256, (1, 5, 9, 1)).astype(np.uint8)
    out = ops.shear_x(x, np.array([1.0]))
    for r in range(5):
        shift = r - 2  # the output's column c reads the input's c + shift
        for c in range(9):
            src = c + shift
            expected = x[0, r, src, 0] if 0 <= src < 9 else ops.FILL
            assert out[0, r, c, 0] == expected


@pytest.mark.parametrize(
    ("ours", "pils"),
    [
        (lambda x: ops.equalize(x), ImageOps.equalize),
        (lambda x: ops.posterize(x, np.full(len(x), 3)), lambda im: ImageOps.posterize(im, 3)),
        (lambda x: ops.solarize(x, np.full(len(x), 100.0)), lambda im: ImageOps.solarize(im, 100)),
        (lambda x: ops.invert(x), ImageOps.invert),
    ],
)
def test_pixel_operations_equal_pils(ours, pils):
    for x in (IMAGES, LOW_CONTRAST):
        assert np.array_equal(ours(x), pil_each(x, pils))


@pytest.mark.parametrize(
    ("op", "enhancer"),
    [
        (ops.brightness, ImageEnhance.Brightness),
        (ops.color, ImageEnhance.Color),
        (ops.contrast, ImageEnhance.Contrast),
        (ops.sharpness, ImageEnhance.Sharpness),
    ],
)
@pytest.mark.parametrize("factor", [0.3, 1.7])
def test_enhancements_are_pils_to_one_level(op, enhancer, factor):
    ours = op(IMAGES, np.full(6, factor)).astype(int)
    theirs = pil_each(IMAGES, lambda im: enhancer(im).enhance(factor)).astype(int)
    assert np.abs(ours - theirs).max() <= 1  # PIL rounds its fixed-point blend its own way


def test_autocontrast_stretches_each_channel_to_the_full_range():
    out = ops.autocontrast(LOW_CONTRAST)
    assert np.all(out.min(axis=(1, 2)) == 0) and np.all(out.max(axis=(1, 2)) == 255)
    theirs = pil_each(LOW_CONTRAST, ImageOps.autocontrast).astype(int)
    assert np.abs(out.astype(int) - theirs).max() <= 1
    flat = np.full((1, 4, 4, 3), 77, np.uint8)
    assert np.array_equal(ops.autocontrast(flat), flat)


def test_every_policy_operation_exists_and_the_cifar10_policy_has_25_pairs():
    assert len(AUTOAUGMENT_CIFAR10) == 25
    named = {op for pair in AUTOAUGMENT_CIFAR10 for op, _, _ in pair} | set(RANDAUGMENT_OPS)
    assert named <= set(ops.OPS)
    for op in named:  # and each does what it does on gray images too
        out = ops.OPS[op](IMAGES[..., :1], np.full(6, 0.5 if op != "Posterize" else 4))
        assert out.shape == IMAGES[..., :1].shape and out.dtype == np.uint8


# --------------------------------------------------------------------------- policies


def test_cutout_zeroes_exactly_a_square_of_the_given_size():
    x = np.full((2, 12, 12, 3), 200, np.float32)
    out = cutout_at(x, np.array([6, 0]), np.array([5, 11]), 4)
    inside = np.zeros((12, 12), bool)
    inside[4:8, 3:7] = True
    assert np.all(out[0][inside] == 0) and np.all(out[0][~inside] == 200)
    corner = np.zeros((12, 12), bool)  # centred on the top-right corner: a clipped 2x1
    corner[0:2, 9:12] = True
    assert np.array_equal(out[1][..., 0] == 0, corner)


def test_random_cutout_squares_are_size_by_size_where_they_fit():
    x = np.full((50, 16, 16, 1), 9.0, np.float32)
    out = cutout(x, np.random.default_rng(1), size=6)
    for img in out[..., 0] == 0:
        rows, cols = np.flatnonzero(img.any(axis=1)), np.flatnonzero(img.any(axis=0))
        assert img.sum() == len(rows) * len(cols)  # a rectangle
        assert len(rows) <= 6 and len(cols) <= 6
    assert sum(img.sum() == 36 for img in out[..., 0] == 0) > 10


def test_mixup_weighs_images_and_labels_by_the_same_lambda():
    x = RNG.uniform(0, 255, (8, 4, 4, 3)).astype(np.float32)
    y = np.eye(5, dtype=np.float32)[[0, 1, 2, 3, 4, 0, 1, 2]]
    out_x, out_y = mixup(x, y, np.random.default_rng(3), alpha=0.4, prob=1.0)
    draws = np.random.default_rng(3)
    lam, partner = draws.beta(0.4, 0.4), draws.permutation(8)
    np.testing.assert_allclose(out_x, lam * x + (1 - lam) * x[partner], rtol=1e-6, atol=1e-4)
    np.testing.assert_allclose(out_y, lam * y + (1 - lam) * y[partner], rtol=1e-6)
    np.testing.assert_allclose(out_y.sum(axis=1), 1.0, rtol=1e-6)
    same_x, same_y = mixup(x, y, np.random.default_rng(3), alpha=0.4, prob=0.0)
    assert same_x is x and same_y is y


def test_cutmix_labels_weigh_the_pixels_each_image_gave():
    n = 10
    x = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None], (n, 16, 16, 3)).copy()
    y = np.eye(n, dtype=np.float32)
    for seed in range(5):
        out_x, out_y = cutmix(x, y, np.random.default_rng(seed), alpha=1.0, prob=1.0)
        for i in range(n):
            own = float(np.mean(out_x[i] == i))
            assert out_y[i, i] == pytest.approx(own) or own == 1.0  # a partner may be itself
            assert out_y[i].sum() == pytest.approx(1.0)
    pasted, labels = paste_box(x, y, np.roll(np.arange(n), 1), (2, 6, 0, 8))
    assert np.all(pasted[3, 2:6, 0:8] == 2) and np.all(pasted[3, 6:] == 3)
    assert labels[3, 2] == pytest.approx(32 / 256) and labels[3, 3] == pytest.approx(1 - 32 / 256)


@pytest.mark.parametrize(
    "augment",
    [
        "cifar+randaugment",
        "cifar+autoaugment-cifar10",
        "cifar+cutout",
        "cifar+mixup",
        "cifar+cutmix",
        "cifar+autoaugment-cifar10+cutout+cutmix",
    ],
)
def test_each_policy_keeps_shape_dtype_range_and_label_mass(augment):
    spec = parse_augment(augment)
    params = AugmentParams(cutout=CutoutParams(size=4))
    policy = batch_policy(spec, params, num_classes=4, multi_label=False, image_shape=(12, 10, 3))
    assert policy is not None
    x = IMAGES.astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1])
    out_x, out_y = policy(x, y, (7, 0, 2, 0))
    assert out_x.shape == x.shape and out_x.dtype == np.float32
    assert out_x.min() >= 0.0 and out_x.max() <= 255.0
    assert not np.array_equal(out_x, x)
    if spec.mixes_labels:
        assert out_y.shape == (6, 4) and out_y.dtype == np.float32
        np.testing.assert_allclose(out_y.sum(axis=1), 1.0, rtol=1e-6)
    else:
        assert np.array_equal(out_y, y)
    again = policy(x, y, (7, 0, 2, 0))
    assert np.array_equal(again[0], out_x) and np.array_equal(again[1], out_y)
    other = policy(x, y, (7, 0, 3, 0))  # the next batch draws anew
    assert not np.array_equal(other[0], out_x)


def test_a_policys_draws_do_not_depend_on_the_others_named():
    x, y = IMAGES.astype(np.float32), np.zeros(6, np.int64)
    alone = batch_policy(
        parse_augment("none+randaugment"),
        None,
        num_classes=2,
        multi_label=False,
        image_shape=(12, 10, 3),
    )
    with_cutout = batch_policy(
        parse_augment("none+randaugment+cutout"),
        AugmentParams(cutout=CutoutParams(size=1), mixup=MixupParams(alpha=0.5)),
        num_classes=2,
        multi_label=False,
        image_shape=(12, 10, 3),
    )
    assert alone is not None and with_cutout is not None
    a, b = alone(x, y, (1, 2))[0], with_cutout(x, y, (1, 2))[0]
    assert np.sum(a != b) <= 6 * 3  # one zeroed pixel per image at most


def _candidates(img: np.ndarray, op: str, amount: float) -> list[np.ndarray]:
    """``op`` applied to one image at ``amount``, with either sign where it is signed."""
    signs = (1.0, -1.0) if op in ops.SIGNED else (1.0,)
    return [ops.OPS[op](img[None], np.array([s * amount]))[0] for s in signs]


def test_randaugment_gives_each_image_one_of_its_operations_at_magnitude_m():
    from core.data.augment.ops import magnitudes
    from core.data.augment.policies import RANDAUGMENT_BINS, randaugment

    x = IMAGES
    out = randaugment(x, np.random.default_rng(4), num_ops=1, magnitude=12)
    for img, got in zip(x, out, strict=True):
        options = [
            c
            for op in RANDAUGMENT_OPS
            for c in _candidates(img, op, magnitudes(op, RANDAUGMENT_BINS, 12, 10)[12])
        ]
        assert any(np.array_equal(got, c) for c in options)


def test_autoaugment_gives_each_image_a_sub_policy_with_some_of_its_steps():
    from core.data.augment.ops import magnitudes
    from core.data.augment.policies import AUTOAUGMENT_BINS, autoaugment_cifar10

    out = autoaugment_cifar10(IMAGES, np.random.default_rng(5))
    for img, got in zip(IMAGES, out, strict=True):
        found = False
        for (op1, _, m1), (op2, _, m2) in AUTOAUGMENT_CIFAR10:
            a1 = magnitudes(op1, AUTOAUGMENT_BINS, 12, 10)[m1]
            a2 = magnitudes(op2, AUTOAUGMENT_BINS, 12, 10)[m2]
            firsts = [img, *_candidates(img, op1, a1)]
            results = [f for f in firsts] + [c for f in firsts for c in _candidates(f, op2, a2)]
            if any(np.array_equal(got, r) for r in results):
                found = True
                break
        assert found
