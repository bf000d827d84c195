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
against the formulas written out with scipy). Each image's draws are a SplitMix64 stream keyed by
``(seed, epoch, index)``, computed for a whole batch at once in numpy, so the stream does not
depend on thread count or batch order and little Python runs per image; ``cv2.warpAffine``
releases the GIL, so the loader's threads run in parallel.

Which ImageDataGenerator: the one of the study's time, ``keras_preprocessing`` <= 1.1.2 (Keras
2.x), whose ``transform_matrix_offset_center`` pivots at ``size / 2 + 0.5``. The
``ImageDataGenerator`` that Keras 3 (3.15 here) still ships pivots at ``size / 2 - 0.5``; the two
differ by up to 0.079 (intensity in [0, 1]) on the same parameters, and with Keras 3's own
transform given the 1.1.2 pivot they agree to 2e-6 (``tests/test_augment.py``). Exactness
against the formulas, largest difference over the test's transforms and both fill modes
(``tests/test_augment.py``), measured with OpenCV 5.0.0 and 5.1.0: 3.3e-7 on a smooth image,
1.8e-5 on uniform noise (their float32 ``warpAffine`` interpolates at the exact coordinates; the
float bilinear of :mod:`augment_graph` agrees with it to 1e-4); with OpenCV 4.10.0 and 4.14.0:
4.6e-4 and 2.2e-2 (coordinates rounded to 1/32 pixel; the in-graph check fails), so
``pyproject.toml`` requires OpenCV 5.

Any ImageDataGenerator argument of :class:`AugmentSpec` can be set over a named augmentation
(``--augment-spec '{"width_shift_range": 0.1}'`` in the training scripts;
:func:`with_overrides`).

Research use only - not a medical device.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
    # the other reading of section 5.2 ("changed some of the parameters" of the 5.1.1 generator):
    # rotation 90, reflect fill, no flip changed; shifts, zoom and shear 0.2 kept
    "geometric_rot90_reflect": AugmentSpec(
        "geometric_rot90_reflect", 90.0, 0.2, 0.2, 0.2, 0.2, fill_mode="reflect",
        description="ImageDataGenerator(rotation_range=90, width_shift_range=0.2, height_shift_range=0.2, "
                    "zoom_range=0.2, shear_range=0.2, horizontal_flip=False, fill_mode='reflect'): the 5.1.1 "
                    "generator with the parameters section 5.2 names changed"),
}
OVERRIDE_FIELDS = {"rotation_range": float, "width_shift_range": float, "height_shift_range": float,
                   "zoom_range": float, "shear_range": float, "horizontal_flip": bool, "vertical_flip": bool,
                   "rot90": bool, "fill_mode": str, "cval": float}
_LIMITS = {"rotation_range": 360.0, "width_shift_range": 1.0, "height_shift_range": 1.0, "zoom_range": 0.99,
           "shear_range": 89.0, "cval": 1.0}


def check_overrides(over) -> None:
    """Refuse unknown ImageDataGenerator arguments, wrong types and out-of-range values."""
    import math

    for k, v in dict(over).items():
        kind = OVERRIDE_FIELDS.get(k)
        if kind is None:
            raise MammoError(f"augment spec: unknown argument {k!r}; choose from {', '.join(OVERRIDE_FIELDS)}")
        if kind is bool and not isinstance(v, bool):
            raise MammoError(f"augment spec: {k} must be true or false, got {v!r}")
        if kind is float and (isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)
                              or not 0 <= v <= _LIMITS[k]):
            raise MammoError(f"augment spec: {k} must be a number in [0, {_LIMITS[k]:g}], got {v!r}")
        if kind is str and v not in FILL_MODES:
            raise MammoError(f"augment spec: fill_mode must be one of {', '.join(FILL_MODES)}, got {v!r}")


def describe(spec: AugmentSpec) -> str:
    """The ImageDataGenerator call a spec stands for (plus rot90 when set)."""
    args = [f"{k}={getattr(spec, k)!r}" for k in OVERRIDE_FIELDS if k != "rot90"]
    return f"ImageDataGenerator({', '.join(args)})" + (" + a random k x 90 deg rotation" if spec.rot90 else "")


def with_overrides(spec: AugmentSpec, over) -> AugmentSpec:
    """``spec`` with ImageDataGenerator arguments ``over`` (checked); the same spec when empty."""
    over = dict(over)
    if not over:
        return spec
    check_overrides(over)
    out = replace(spec, name=f"{spec.name}+custom", **{k: OVERRIDE_FIELDS[k](v) for k, v in over.items()})
    return replace(out, description=describe(out))
AUGMENT_NAMES = tuple(AUGMENT_SPECS)


def get_spec(name: str | AugmentSpec) -> AugmentSpec:
    if isinstance(name, AugmentSpec):
        return name
    try:
        return AUGMENT_SPECS[name]
    except KeyError:
        raise MammoError(f"unknown augmentation {name!r}; choose one of {', '.join(AUGMENT_NAMES)}") from None


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
N_DRAWS = 9  # uniforms per element: theta, tx, ty, shear, zx, zy, h-flip, v-flip, k90


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (vectorised, wrapping uint64 arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def element_uniforms(seed: int, epoch: int, indices, n: int = N_DRAWS) -> np.ndarray:
    """``(len(indices), n)`` uniforms in [0, 1): row j is a function of ``(seed, epoch,
    indices[j])`` only (a SplitMix64 stream per element, computed for the whole batch at once),
    so an element's transform does not depend on its batch, position or thread."""
    idx = np.asarray(indices, dtype=np.int64).astype(np.uint64).reshape(-1, 1)
    with np.errstate(over="ignore"):
        key = _splitmix64(_splitmix64(np.uint64(int(seed) & 0xFFFFFFFFFFFFFFFF))  # type: ignore[arg-type]
                          + np.uint64(int(epoch) & 0xFFFFFFFFFFFFFFFF))
        base = _splitmix64(key + idx * _GOLDEN)
        z = _splitmix64(base + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0xD1B54A32D192ED03))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def draw_params(spec: AugmentSpec, u: np.ndarray, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """ImageDataGenerator's ``get_random_transform`` for the geometric arguments, for a batch:
    ``u`` is :func:`element_uniforms` (one row per element); returns one array per parameter.

    ``tx`` is drawn from ``height_shift_range`` times the height and ``ty`` from
    ``width_shift_range`` times the width, as there (its matrix then moves ``tx`` along the
    columns after its axis swap; with equal ranges on a square patch the distribution is the
    same either way)."""
    h, w = shape
    u = np.atleast_2d(u)

    def sym(col, r):  # U(-r, r)
        return (2.0 * u[:, col] - 1.0) * r if r else np.zeros(len(u))

    z = spec.zoom_range
    return {
        "theta": sym(0, spec.rotation_range),
        "tx": sym(1, spec.height_shift_range) * h,
        "ty": sym(2, spec.width_shift_range) * w,
        "shear": sym(3, spec.shear_range),
        "zx": 1 - z + 2 * z * u[:, 4] if z else np.ones(len(u)),
        "zy": 1 - z + 2 * z * u[:, 5] if z else np.ones(len(u)),
        "flip_horizontal": (u[:, 6] < 0.5) & spec.horizontal_flip,
        "flip_vertical": (u[:, 7] < 0.5) & spec.vertical_flip,
        "k90": (u[:, 8] * 4).astype(np.int64) if spec.rot90 else np.zeros(len(u), dtype=np.int64),
    }


def affine_matrices(p: dict, shape: tuple[int, int]) -> np.ndarray:
    """``(B, 3, 3)`` matrices mapping an output pixel (x = column, y = row) to its input position:
    the affine of ImageDataGenerator (rotation @ shift @ shear @ zoom about the centre
    ``size / 2 + 0.5``) followed by the flips, as OpenCV's ``WARP_INVERSE_MAP`` wants it.

    ImageDataGenerator builds its matrix in (a, b) coordinates, centres it with (h, w), then
    swaps the axes for scipy's (row, col) indexing; in OpenCV's (col, row) order that swap is
    undone, so this is its pre-swap matrix with a = column and b = row."""
    h, w = shape
    t = np.radians(np.asarray(p["theta"], dtype=np.float64).ravel())
    s = np.radians(np.asarray(p["shear"], dtype=np.float64).ravel())
    tx = np.asarray(p["tx"], dtype=np.float64).ravel()
    ty = np.asarray(p["ty"], dtype=np.float64).ravel()
    zx = np.asarray(p["zx"], dtype=np.float64).ravel()
    zy = np.asarray(p["zy"], dtype=np.float64).ravel()
    c, si = np.cos(t), np.sin(t)
    # rot @ shift @ shear @ zoom, multiplied out
    shift_a = c * tx - si * ty
    shift_b = si * tx + c * ty
    a00, a01 = c * zx, (-c * np.sin(s) - si * np.cos(s)) * zy
    a10, a11 = si * zx, (-si * np.sin(s) + c * np.cos(s)) * zy
    oa, ob = h / 2 + 0.5, w / 2 + 0.5
    m = np.zeros((len(t), 3, 3))
    m[:, 0, 0], m[:, 0, 1] = a00, a01
    m[:, 1, 0], m[:, 1, 1] = a10, a11
    m[:, 0, 2] = shift_a + oa - a00 * oa - a01 * ob  # offset @ m @ reset
    m[:, 1, 2] = shift_b + ob - a10 * oa - a11 * ob
    m[:, 2, 2] = 1.0
    # flips are applied to the warped image: output (x, y) reads warped (w-1-x, y) / (x, h-1-y)
    fh = np.asarray(p["flip_horizontal"], dtype=bool).ravel()
    fv = np.asarray(p["flip_vertical"], dtype=bool).ravel()
    m[fh, :, 2] += m[fh, :, 0] * (w - 1)
    m[fh, :, 0] *= -1
    m[fv, :, 2] += m[fv, :, 1] * (h - 1)
    m[fv, :, 1] *= -1
    return m


def affine_matrix(p: dict, shape: tuple[int, int]) -> np.ndarray:
    """The 3x3 matrix of one element's parameters (scalars); see :func:`affine_matrices`."""
    return affine_matrices({k: np.atleast_1d(v) for k, v in p.items()}, shape)[0]


_BORDER = {"nearest": "BORDER_REPLICATE", "reflect": "BORDER_REFLECT", "constant": "BORDER_CONSTANT"}


def warp(img: np.ndarray, m: np.ndarray, fill_mode: str = "nearest", cval: float = 0.0) -> np.ndarray:
    """One bilinear resample of a 2-D float32 image through ``m`` (see :func:`affine_matrix`)."""
    import cv2

    if fill_mode not in _BORDER:
        raise MammoError(f"fill mode must be one of {', '.join(FILL_MODES)}, got {fill_mode!r}")
    h, w = img.shape
    return cv2.warpAffine(np.ascontiguousarray(img), np.ascontiguousarray(m[:2], dtype=np.float64), (w, h),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=getattr(cv2, _BORDER[fill_mode]), borderValue=float(cval))


def augment_batch(x: np.ndarray, indices: np.ndarray, spec: AugmentSpec | str, seed: int, epoch: int) -> np.ndarray:
    """Augment ``x[j]`` ((B, H, W) or (B, H, W, 1) float32) with the draws of ``(seed, epoch,
    indices[j])``: parameters and matrices for the whole batch in numpy, then one
    ``cv2.warpAffine`` per image (which releases the GIL)."""
    spec = get_spec(spec)
    x = np.asarray(x, dtype=np.float32)
    if spec.is_identity or len(x) == 0:
        return x
    squeeze = x.ndim == 4
    imgs = x[..., 0] if squeeze else x
    shape = imgs.shape[1:3]
    p = draw_params(spec, element_uniforms(seed, epoch, indices), shape)
    affine = bool(spec.rotation_range or spec.width_shift_range or spec.height_shift_range or spec.zoom_range
                  or spec.shear_range or spec.horizontal_flip or spec.vertical_flip)
    mats = affine_matrices(p, shape) if affine else None
    out = np.empty_like(imgs)
    for j, img in enumerate(imgs):
        if p["k90"][j]:
            img = np.rot90(img, int(p["k90"][j]))
        out[j] = warp(img, mats[j], spec.fill_mode, spec.cval) if affine else img
    return out[..., None] if squeeze else out
