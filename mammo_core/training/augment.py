"""The study's augmentation, as Keras' ``ImageDataGenerator`` did it, in numpy/OpenCV.

One combined affine per image (rotation, independent x/y shift, independent x/y zoom, shear
angle in degrees, optional flips) applied with one ``cv2.warpAffine`` (one resample, bilinear
like ImageDataGenerator's ``interpolation_order=1``) and the study's fill mode. The parameters are
drawn as ImageDataGenerator drew them:

- ``theta ~ U(-rotation_range, rotation_range)`` degrees;
- shifts ``~ U(-range, range)`` times the image size, one per axis;
- ``shear ~ U(-shear_range, shear_range)`` **degrees** (one shear angle, as ImageDataGenerator's
  ``shear_range``; not Keras 3 ``RandomShear``'s shear factor);
- ``zx, zy ~ U(1 - zoom_range, 1 + zoom_range)`` independently (the aspect ratio changes);
- each flip with probability 1/2.

The matrix is ImageDataGenerator's ``apply_affine_transform`` (rotation @ shift @ shear @ zoom,
centred at ``size / 2 + 0.5``), so a transform here equals ImageDataGenerator's for the same
parameters up to OpenCV's fixed-point bilinear weights (``tests/test_augment.py`` checks this
against the formulas written out with scipy). Each image's parameters come from its own
generator seeded by ``(seed, epoch, index)``, so the stream does not depend on thread count or
batch order. ``cv2.warpAffine`` releases the GIL: the loader's threads run in parallel.

Research use only - not a medical device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mammo_core.errors import MammoError

FILL_MODES = ("nearest", "reflect", "constant")


@dataclass(frozen=True)
class AugmentSpec:
    """ImageDataGenerator's geometric arguments (plus ``rot90``: a random multiple of 90 deg)."""

    name: str
    rotation_range: float = 0.0  # degrees
    width_shift_range: float = 0.0  # fraction of the width
    height_shift_range: float = 0.0  # fraction of the height
    zoom_range: float = 0.0  # zx, zy in [1 - z, 1 + z], drawn independently
    shear_range: float = 0.0  # degrees (ImageDataGenerator's shear angle)
    horizontal_flip: bool = False
    vertical_flip: bool = False
    rot90: bool = False  # rotate by k * 90 deg, k uniform in 0..3 (exact, no resample)
    fill_mode: str = "nearest"
    cval: float = 0.0
    description: str = ""

    @property
    def is_identity(self) -> bool:
        return not (self.rotation_range or self.width_shift_range or self.height_shift_range
                    or self.zoom_range or self.shear_range or self.horizontal_flip
                    or self.vertical_flip or self.rot90)


AUGMENT_SPECS: dict[str, AugmentSpec] = {
    "none": AugmentSpec("none", description="no augmentation"),
    "geometric": AugmentSpec(
        "geometric", 40.0, 0.2, 0.2, 0.2, 0.2, horizontal_flip=True, fill_mode="nearest",
        description="ImageDataGenerator(rotation_range=40, width_shift_range=0.2, "
                    "height_shift_range=0.2, zoom_range=0.2, shear_range=0.2, horizontal_flip=True, "
                    "fill_mode='nearest')"),
    "geometric_noflip": AugmentSpec(
        "geometric_noflip", 40.0, 0.2, 0.2, 0.2, 0.2, fill_mode="nearest",
        description="as geometric without the horizontal flip"),
    "rotate90_reflect": AugmentSpec(
        "rotate90_reflect", rotation_range=90.0, fill_mode="reflect",
        description="ImageDataGenerator(rotation_range=90, horizontal_flip=False, fill_mode='reflect'): "
                    "any angle in +-90 deg, reflect fill"),
    "rot90": AugmentSpec(
        "rot90", rot90=True,
        description="a rotation by 0, 90, 180 or 270 deg, no flips (exact, no fill)"),
}
AUGMENT_NAMES = tuple(AUGMENT_SPECS)


def get_spec(name: str | AugmentSpec) -> AugmentSpec:
    if isinstance(name, AugmentSpec):
        return name
    try:
        return AUGMENT_SPECS[name]
    except KeyError:
        raise MammoError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENT_NAMES)}") from None


def element_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator of one element's transform: a function of (seed, epoch, index) only."""
    return np.random.default_rng([int(seed), int(epoch), 0, int(index)])


def draw_params(spec: AugmentSpec, rng: np.random.Generator, shape: tuple[int, int]) -> dict:
    """ImageDataGenerator's ``get_random_transform`` for the geometric arguments.

    ``tx`` is drawn from ``height_shift_range`` times the height and ``ty`` from
    ``width_shift_range`` times the width, as there (its matrix then moves ``tx`` along the
    columns after its axis swap; with equal ranges on a square patch the distribution is the
    same either way)."""
    h, w = shape
    p = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
         "flip_horizontal": False, "flip_vertical": False, "k90": 0}
    if spec.rot90:
        p["k90"] = int(rng.integers(0, 4))
    if spec.rotation_range:
        p["theta"] = float(rng.uniform(-spec.rotation_range, spec.rotation_range))
    if spec.height_shift_range:
        p["tx"] = float(rng.uniform(-spec.height_shift_range, spec.height_shift_range)) * h
    if spec.width_shift_range:
        p["ty"] = float(rng.uniform(-spec.width_shift_range, spec.width_shift_range)) * w
    if spec.shear_range:
        p["shear"] = float(rng.uniform(-spec.shear_range, spec.shear_range))
    if spec.zoom_range:
        zx, zy = rng.uniform(1 - spec.zoom_range, 1 + spec.zoom_range, 2)
        p["zx"], p["zy"] = float(zx), float(zy)
    if spec.horizontal_flip:
        p["flip_horizontal"] = bool(rng.random() < 0.5)
    if spec.vertical_flip:
        p["flip_vertical"] = bool(rng.random() < 0.5)
    return p


def affine_matrix(p: dict, shape: tuple[int, int]) -> np.ndarray:
    """3x3 matrix mapping an output pixel (x = column, y = row) to its input position: the
    affine of ImageDataGenerator (rotation @ shift @ shear @ zoom about the centre
    ``size / 2 + 0.5``) followed by the flips, as OpenCV's ``WARP_INVERSE_MAP`` wants it."""
    h, w = shape
    t = math.radians(p["theta"])
    s = math.radians(p["shear"])
    # ImageDataGenerator builds the matrix in (a, b) coordinates, centres it with (h, w), then
    # swaps the axes for scipy's (row, col) indexing; in OpenCV's (col, row) order that swap is
    # undone, so the matrix below is its pre-swap matrix with a = column and b = row.
    rot = np.array([[math.cos(t), -math.sin(t), 0], [math.sin(t), math.cos(t), 0], [0, 0, 1]])
    shift = np.array([[1, 0, p["tx"]], [0, 1, p["ty"]], [0, 0, 1]])
    shear = np.array([[1, -math.sin(s), 0], [0, math.cos(s), 0], [0, 0, 1]])
    zoom = np.array([[p["zx"], 0, 0], [0, p["zy"], 0], [0, 0, 1]])
    m = rot @ shift @ shear @ zoom
    oa, ob = h / 2 + 0.5, w / 2 + 0.5
    m = np.array([[1, 0, oa], [0, 1, ob], [0, 0, 1]]) @ m @ np.array([[1, 0, -oa], [0, 1, -ob], [0, 0, 1]])
    # flips are applied to the warped image: output (x, y) reads warped (w-1-x, y) / (x, h-1-y)
    flip = np.eye(3)
    if p["flip_horizontal"]:
        flip = np.array([[-1, 0, w - 1], [0, 1, 0], [0, 0, 1]]) @ flip
    if p["flip_vertical"]:
        flip = np.array([[1, 0, 0], [0, -1, h - 1], [0, 0, 1]]) @ flip
    return m @ flip


_BORDER = {"nearest": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT", "constant": "BORDER_CONSTANT"}


def warp(img: np.ndarray, m: np.ndarray, fill_mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
    """One bilinear resample of a 2-D float32 image through ``m`` (see :func:`affine_matrix`)."""
    import cv2

    if fill_mode not in _BORDER:
        raise MammoError(f"fill mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
    h, w = img.shape
    return cv2.warpAffine(img, np.ascontiguousarray(m[:2], dtype=np.float64), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=getattr(cv2, _BORDER[fill_mode]), borderValue=float(cval))


def augment_image(img: np.ndarray, spec: AugmentSpec, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of ``img`` (H, W) or (H, W, 1) float32 in [0, 1]; same shape back."""
    spec = get_spec(spec)
    if spec.is_identity:
        return img
    squeeze = img.ndim == 3
    a = np.asarray(img[..., 0] if squeeze else img, dtype=np.float32)
    p = draw_params(spec, rng, a.shape)
    if p["k90"]:
        a = np.rot90(a, p["k90"])
    if spec.rotation_range or spec.width_shift_range or spec.height_shift_range or spec.zoom_range \
            or spec.shear_range or p["flip_horizontal"] or p["flip_vertical"]:
        a = warp(a, affine_matrix(p, a.shape), spec.fill_mode, spec.cval)
    a = np.ascontiguousarray(a, dtype=np.float32)
    return a[..., None] if squeeze else a


def augment_batch(x: np.ndarray, indices: np.ndarray, spec: AugmentSpec | str, seed: int, epoch: int) -> np.ndarray:
    """Augment ``x[j]`` with the generator of ``(seed, epoch, indices[j])`` for every j."""
    spec = get_spec(spec)
    if spec.is_identity:
        return np.asarray(x, dtype=np.float32)
    return np.stack([augment_image(img, spec, element_rng(seed, epoch, int(i))) for img, i in zip(x, indices)])
