"""The study's augmentation computed on the accelerator (Keras ops: JAX or TensorFlow), for when
the CPU loader cannot feed it (``benchmarks/bench_gpu.py`` says when).

The same affine as :mod:`mammo_core.training.augment`: the per-element parameters are drawn on
the host by the same seeded stream (:func:`augment.draw_params`, cheap: nine numbers per image)
and turned into the same matrices (:func:`augment.affine_matrices`, with the k x 90 deg rotation
folded in); only the resample runs in the graph: bilinear, with the ``nearest`` (edge replicate)
or ``reflect`` fill. It agrees with the CPU path (OpenCV 5's float32 ``warpAffine``, which
interpolates at the exact coordinates) to 1e-4 (tested); OpenCV 4's fixed-point coordinates
(1/32 pixel) would differ by up to ~0.025 on noise. ``constant`` fill is not offered here.
Research use only - not a medical device.
"""
from __future__ import annotations

import numpy as np

from mammo_core.errors import MammoError
from mammo_core.training.augment import AugmentSpec, affine_matrices, draw_params, element_uniforms, get_spec

GRAPH_FILL_MODES = ("nearest", "reflect")


def _rot90_matrix(k: int, size: int) -> np.ndarray:
    """(col, row) map of ``np.rot90(img, k)`` on a square image: rotated(x, y) = img(R(x, y))."""
    n = size - 1
    return {0: np.eye(3),
            1: np.array([[0, -1, n], [1, 0, 0], [0, 0, 1]], float),
            2: np.array([[-1, 0, n], [0, -1, n], [0, 0, 1]], float),
            3: np.array([[0, 1, 0], [-1, 0, n], [0, 0, 1]], float)}[int(k) % 4]


def batch_matrices(spec: AugmentSpec | str, indices, seed: int, epoch: int, shape: tuple[int, int]) -> np.ndarray:
    """(B, 2, 3) float32 inverse maps (output pixel -> input position) of the draws of
    ``(seed, epoch, indices[j])``, the k x 90 deg rotation included."""
    spec = get_spec(spec)
    if spec.fill_mode not in GRAPH_FILL_MODES:
        raise MammoError(f"in-graph augmentation supports fill modes {', '.join(GRAPH_FILL_MODES)}, "
                         f"not {spec.fill_mode!r}")
    if spec.rot90 and shape[0] != shape[1]:
        raise MammoError("in-graph k x 90 deg rotation needs square images")
    p = draw_params(spec, element_uniforms(seed, epoch, np.asarray(indices)), shape)
    m = affine_matrices(p, shape)
    m = np.stack([_rot90_matrix(k, shape[0]) @ mj for k, mj in zip(p["k90"], m)])
    return m[:, :2].astype(np.float32)


def _index(i, n: int, fill: str):
    from keras import ops

    if fill == "reflect":
        i = ops.where(i < 0, -i - 1, i)
        i = ops.where(i >= n, 2 * n - i - 1, i)
    return ops.clip(i, 0, n - 1)


def warp_graph(images, mats, fill_mode: str = "nearest"):
    """Bilinear resample of ``images`` ((B, H, W, 1) float32 tensor, on the device) through
    ``mats`` ((B, 2, 3), from :func:`batch_matrices`), in Keras ops."""
    from keras import ops

    b, h, w = int(images.shape[0]), int(images.shape[1]), int(images.shape[2])
    ys, xs = np.mgrid[:h, :w].astype(np.float32)
    mats = ops.convert_to_tensor(mats, dtype="float32")
    xs = ops.convert_to_tensor(xs.reshape(1, -1))
    ys = ops.convert_to_tensor(ys.reshape(1, -1))
    X = mats[:, 0, 0:1] * xs + mats[:, 0, 1:2] * ys + mats[:, 0, 2:3]
    Y = mats[:, 1, 0:1] * xs + mats[:, 1, 1:2] * ys + mats[:, 1, 2:3]
    x0f, y0f = ops.floor(X), ops.floor(Y)
    fx, fy = X - x0f, Y - y0f
    x0, y0 = ops.cast(x0f, "int32"), ops.cast(y0f, "int32")
    flat = ops.reshape(images, (b, h * w))

    def at(yy, xx):
        idx = _index(yy, h, fill_mode) * w + _index(xx, w, fill_mode)
        return ops.take_along_axis(flat, idx, axis=1)

    out = (at(y0, x0) * (1 - fx) * (1 - fy) + at(y0, x0 + 1) * fx * (1 - fy)
           + at(y0 + 1, x0) * (1 - fx) * fy + at(y0 + 1, x0 + 1) * fx * fy)
    return ops.reshape(out, (b, h, w, 1))


def augment_in_graph(images, indices, spec: AugmentSpec | str, seed: int, epoch: int):
    """:func:`augment.augment_batch` with the resample on the device: ``images`` (B, H, W, 1)."""
    spec = get_spec(spec)
    if spec.is_identity:
        return images
    mats = batch_matrices(spec, indices, seed, epoch, (int(images.shape[1]), int(images.shape[2])))
    return warp_graph(images, mats, spec.fill_mode)
