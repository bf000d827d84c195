"""Grad-CAM heatmaps through tf-keras-vis 0.8.7, colouring and overlays.

:func:`gradcam` returns a float32 ``(N, 150, 150)`` map in [0, 1] (never NaN; a constant image,
whose gradients vanish, gives an all-zero map). The score is the chosen class's *pre-softmax*
logit: the visualizer clones the model and replaces the last activation by a linear one
(``ReplaceToLinear``), so it is built once per (model, method) and cached. tf-keras-vis works
with Keras 3.15 for our functional models (checked by tests/test_explain.py); Sequential models
are not supported by ``ReplaceToLinear`` (tf-keras-vis issue) and are refused with a clear error.

Every map that leaves this module (a member's map from :func:`gradcam`, the ensemble's combined
map through :func:`finish_map`) is **normalised per patch** so that its maximum is exactly 1 (a
map without spatial information, i.e. constant over the tissue, becomes all zero), and
**background is masked out**: pixels at or below the tissue threshold (``20 / 255`` of the full
scale, the dataset builders' tissue level, :func:`tissue_mask`) get 0. So "red = most" holds
for every map, and the black film border of a patch at the image edge is never "hot".

Colouring (:func:`colorize`) and blending (:func:`overlay`) are separate, pure-numpy/matplotlib
functions: the GUI only draws their uint8 RGB output.
"""
from __future__ import annotations

import contextlib
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from mammo_core.contract import INPUT_SHAPE, PATCH_SHAPE, PATCH_SIZE
from mammo_core.errors import MammoError
from mammo_core.forward import SharedForward
from mammo_core.protocol import TISSUE_LEVEL

METHODS = ("gradcam", "gradcam++", "scorecam")
#: The map is damped linearly over this many pixels (two block4_conv3 cells) beside masked film
#: background AND beside the patch's frame. Why (benchmarks/heatmap_border.py, docs/trust.md):
#: the default map's border heat on the 20 samples is NOT made by VGG16's zero padding (with the
#: real mammogram around the patch instead of padding the border holds MORE heat, median 0.30 vs
#: 0.27), nor by the global-max pooled head (channel weights from interior gradients only: no
#: change), nor by the resize (half-pixel or pooling-footprint placement of the 18 x 18 cells: no
#: fewer samples over); it follows tissue content at the edge that the coarse layer (receptive
#: field 92 px) cannot place more finely. The damping is a display choice: a cell whose receptive
#: field lies half outside the patch is not shown as the hottest place. The width was chosen on
#: 292 TRAINING women's patches by a rule fixed before measuring
#: (benchmarks/heatmap_border_width.py: the smallest of 8 / 12 / 16 px with at most 1 % of the
#: patches' borders over their tissue share; none reached it, so 16 px: 3.4 % over, 8 px: 20 %).
EDGE_DAMP_PX = 16
_FLAT = 1e-6
_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def check_method(method: str) -> str:
    m = method.lower().replace("_", "").replace("-", "")
    aliases = {"gradcam": "gradcam", "gradcam++": "gradcam++", "gradcamplusplus": "gradcam++",
               "gradcampp": "gradcam++", "scorecam": "scorecam"}
    if m not in aliases:
        raise MammoError(f"unknown Grad-CAM method {method!r}; choose one of {', '.join(METHODS)}")
    return aliases[m]


def last_conv_layer(model) -> str:
    """Name of the model's last 2-D convolution (the default Grad-CAM layer)."""
    import keras

    for layer in reversed(model.layers):
        if isinstance(layer, keras.layers.Conv2D):
            return layer.name
    raise MammoError(f"model {model.name!r} has no Conv2D layer for Grad-CAM")


def visualizer(model, method: str = "gradcam"):
    """The tf-keras-vis visualizer for ``model`` (built once per model and method, cached)."""
    method = check_method(method)
    import keras

    if isinstance(model, keras.Sequential):
        raise MammoError("Grad-CAM needs a functional model (tf-keras-vis ReplaceToLinear fails on "
                         "Sequential models)")
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        if method not in per_model:
            with warnings.catch_warnings():  # tf-keras-vis 0.8.7 imports scipy.ndimage.interpolation
                warnings.simplefilter("ignore", DeprecationWarning)
                import tf_keras_vis.gradcam
                import tf_keras_vis.gradcam_plus_plus
                import tf_keras_vis.scorecam  # noqa: F401
            from tf_keras_vis.utils.model_modifiers import ReplaceToLinear

            if method == "gradcam":
                from tf_keras_vis.gradcam import Gradcam as cls
            elif method == "gradcam++":
                from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus as cls
            else:
                from tf_keras_vis.scorecam import Scorecam as cls
            per_model[method] = cls(model, model_modifier=ReplaceToLinear(), clone=True)
        return per_model[method]


def damp_film_edge(heatmap: np.ndarray, tissue: np.ndarray, px: int | None = None) -> np.ndarray:
    """The map times a ramp from 0 at masked background and outside the patch's frame to 1 at
    ``px`` pixels inside the tissue (default :data:`EDGE_DAMP_PX`, read at call time)."""
    import cv2

    px = EDGE_DAMP_PX if px is None else int(px)

    t = np.pad(np.asarray(tissue, dtype=bool), 1)  # the frame counts as background
    h = np.asarray(heatmap, dtype=np.float32)
    if not t.any():
        return h
    d = cv2.distanceTransform(t.astype(np.uint8), cv2.DIST_L2, 3)[1:-1, 1:-1]
    return h * np.clip((d - 1.0) / float(px), 0.0, 1.0).astype(np.float32) if px > 0 else h


def _as_input(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        x = x[None, ..., None]
    elif x.ndim == 3:
        x = x[..., None] if x.shape[-1] != 1 else x[None]
    if x.ndim != 4 or x.shape[1:] != INPUT_SHAPE:
        raise MammoError(f"Grad-CAM input must be (N, {', '.join(map(str, INPUT_SHAPE))}), got {x.shape}")
    return x


def gradcam(model, x: np.ndarray, class_index=None, method: str = "gradcam",
            layer: str | None = None, batch_size: int = 16) -> np.ndarray:
    """Heatmaps ``(N, 150, 150)`` float32 in [0, 1] for ``class_index`` (an int for all patches,
    a sequence of one int per patch, or None for each patch's predicted class), damped beside
    the patch's frame and masked film background (:func:`damp_film_edge`)."""
    x = _as_input(x)
    n = len(x)
    if n == 0:
        return np.zeros((0, 150, 150), dtype=np.float32)
    method = check_method(method)
    layer = layer or last_conv_layer(model)
    try:
        model.get_layer(layer)
    except ValueError:
        raise MammoError(f"model {model.name!r} has no layer {layer!r} for Grad-CAM") from None
    n_classes = int(model.output_shape[-1])
    if class_index is None:
        import tensorflow as tf

        idx = np.asarray(model(tf.constant(x), training=False)).argmax(axis=1)
    elif np.ndim(class_index) == 0:
        idx = np.full(n, int(class_index))
    else:
        idx = np.asarray(class_index, dtype=np.int64)
        if idx.shape != (n,):
            raise MammoError(f"class_index needs one entry per patch ({n}), got {idx.shape}")
    if idx.min() < 0 or idx.max() >= n_classes:
        raise MammoError(f"class index out of range 0..{n_classes - 1}: {idx.tolist()}")

    from tf_keras_vis.utils.scores import CategoricalScore

    vis = visualizer(model, method)
    fast = _compiled_gradcam(model, layer) if method == "gradcam" and COMPILED_GRADCAM else None
    out = np.zeros((n, 150, 150), dtype=np.float32)
    for s in range(0, n, batch_size):
        xb = x[s:s + batch_size]
        if fast is not None:
            out[s:s + len(xb)] = fast(xb, idx[s:s + batch_size])
            continue
        score = CategoricalScore(idx[s:s + batch_size].tolist())
        kwargs: dict[str, Any] = {"penultimate_layer": layer, "seek_penultimate_conv_layer": False}
        if method == "scorecam":
            # Faster-Score-CAM: only the channels with the largest variance (at most 32)
            channels = int(model.get_layer(layer).output.shape[-1])
            kwargs["max_N"] = min(32, channels)
            # Scorecam calls model.predict, whose progress bar would land on stdout
            # (and it passes the input as a 1-tuple, which Keras 3 warns about; harmless)
            with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The structure of `inputs`")
                cam = vis(score, xb, **kwargs)
        else:
            cam = vis(score, xb, **kwargs)
        cam = np.asarray(cam, dtype=np.float32).reshape(len(xb), *np.shape(cam)[-2:])
        if cam.shape[1:] != PATCH_SHAPE:
            import cv2

            cam = np.stack([cv2.resize(c, (PATCH_SIZE, PATCH_SIZE), interpolation=cv2.INTER_LINEAR)
                            for c in cam])
        out[s:s + len(xb)] = cam
    return _finish_cams(out, x)


def _finish_cams(out: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Every Grad-CAM's last steps: non-finite to 0, a constant image gets 0, damped beside the
    frame and masked film background, background masked, per-map [0, 1]."""
    n = len(x)
    # a constant image has zero gradients; guard against NaN/inf and keep [0, 1]
    out = np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)
    flat = x.reshape(n, -1)
    const = flat.max(axis=1) == flat.min(axis=1)
    out[const] = 0.0
    mask = tissue_mask(x)
    out = np.stack([damp_film_edge(o, m) for o, m in zip(out, mask)]) if n else out
    return finish_map(out, mask)


def gradcam_shared(models: Sequence[Any], layers: Sequence[str | None], x: np.ndarray,
                   class_indices: Sequence[int]) -> list[np.ndarray]:
    """Grad-CAM (method ``gradcam``) of one or more patches ``x`` for several models at once,
    model ``i`` for class ``class_indices[i]`` at ``layers[i]`` (None: its last convolution):
    the same maps as :func:`gradcam` per model (``tests/test_explain.py``), from ONE forward
    pass in which the layers the models have in common (the bundled members' VGG16 trunk) are
    computed once (:class:`mammo_core.forward.SharedForward`), then each model's gradient of its
    score with respect to its layer. Returns one ``(N, 150, 150)`` array per model."""
    x = _as_input(x)
    models = list(models)
    layers = [layer or last_conv_layer(m) for m, layer in zip(models, layers)]
    for m, layer, ci in zip(models, layers, class_indices):
        try:
            m.get_layer(layer)
        except ValueError:
            raise MammoError(f"model {m.name!r} has no layer {layer!r} for Grad-CAM") from None
        if not 0 <= int(ci) < int(m.output_shape[-1]):
            raise MammoError(f"class index out of range 0..{int(m.output_shape[-1]) - 1}: {ci}")
    run = _shared_gradcam(models, layers)
    cams = run(x, np.asarray([int(c) for c in class_indices], dtype=np.int32))
    return [_finish_cams(c, x) for c in cams]


def _shared_gradcam(models: list[Any], layers: list[str]):
    key = "shared-gradcam:" + ",".join(f"{id(m)}/{layer}" for m, layer in zip(models, layers))
    with _LOCK:
        per_model = _CACHE.setdefault(models[0], {})
        if key in per_model:
            return per_model[key][1]
    import keras
    import tensorflow as tf
    from scipy.ndimage import zoom
    from tf_keras_vis.utils import normalize, zoom_factor

    grad_models = []
    for m, layer in zip(models, layers):
        clone = visualizer(m, "gradcam").model  # the last activation already linear
        grad_models.append(keras.Model(clone.inputs, [clone.outputs[0], clone.get_layer(layer).output]))
    fwd = SharedForward(grad_models, share=True, multi_output=True)
    n_models = len(models)

    def cams_of(x, idx):
        with tf.GradientTape(persistent=True, watch_accessed_variables=False) as tape:
            tape.watch(x)
            outs = fwd.run(x)
            scores = [tf.gather(outs[2 * i], idx[i], axis=1) for i in range(n_models)]
        res = []
        for i in range(n_models):
            conv = outs[2 * i + 1]
            weights = tf.reduce_mean(tape.gradient(scores[i], conv), axis=(1, 2), keepdims=True)
            res.append(tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1)))
        return res

    fn = tf.function(cams_of, input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32),
                                               tf.TensorSpec((n_models,), tf.int32)],
                     reduce_retracing=True, autograph=False)

    def run(xb: np.ndarray, idx: np.ndarray) -> list[np.ndarray]:
        out = []
        for cam in fn(xb, idx):
            cam = normalize(zoom(np.asarray(cam), zoom_factor(cam.shape, xb.shape), order=1))
            out.append(np.asarray(cam, dtype=np.float32).reshape(len(xb), *PATCH_SHAPE))
        return out

    with _LOCK:
        # the other models kept alive with the pass that uses their ids (not models[0], the
        # weak key: it would keep its own entry alive)
        per_model[key] = (models[1:], run)
    return run


def _compiled_gradcam(model, layer: str):
    """Grad-CAM as tf-keras-vis' ``Gradcam`` computes it (same clone with a linear last
    activation, same score, channel weights = mean gradient, ReLU, ``zoom(order=1)`` to the
    input size, its ``normalize``), with the gradient pass compiled once per (model, layer) as a
    ``tf.function`` and reused across patches, instead of a new sub-model and an eager tape per
    call. ``tests/test_explain.py`` checks it against tf-keras-vis."""
    with _LOCK:
        per_model = _CACHE.setdefault(model, {})
        key = f"compiled-gradcam:{layer}"
        if key in per_model:
            return per_model[key]
    import keras
    import tensorflow as tf
    from scipy.ndimage import zoom
    from tf_keras_vis.utils import normalize, zoom_factor

    clone = visualizer(model, "gradcam").model  # the last activation already linear
    grad_model = keras.Model(clone.inputs, [clone.outputs[0], clone.get_layer(layer).output])

    def cam_of(x, idx):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            out, conv = grad_model(x, training=False)
            score = tf.gather(out, idx, batch_dims=1)
        grads = tape.gradient(score, conv)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.nn.relu(tf.reduce_sum(conv * weights, axis=-1))

    fn = tf.function(cam_of, input_signature=[tf.TensorSpec((None, *INPUT_SHAPE), tf.float32),
                                              tf.TensorSpec((None,), tf.int32)],
                     reduce_retracing=True, autograph=False)

    def run(xb: np.ndarray, idx: np.ndarray) -> np.ndarray:
        cam = np.asarray(fn(xb, np.asarray(idx, dtype=np.int32)))
        cam = normalize(zoom(cam, zoom_factor(cam.shape, xb.shape), order=1))
        return np.asarray(cam, dtype=np.float32).reshape(len(xb), *PATCH_SHAPE)

    with _LOCK:
        per_model[key] = run
    return run


#: Grad-CAM's gradient pass compiled once per model and layer (False: tf-keras-vis' own eager
#: pass, the reference; benchmarks/bench_viewer.py times both).
COMPILED_GRADCAM = True


def tissue_mask(x: np.ndarray) -> np.ndarray:
    """Breast tissue (True) vs background of model input ``x`` in [0, 1] (``(150, 150)``,
    ``(N, 150, 150)`` or with a trailing channel): intensity above :data:`TISSUE_LEVEL`."""
    a = np.asarray(x, dtype=np.float32)
    if a.ndim in (3, 4) and a.shape[-1] == 1:
        a = a[..., 0]
    return a > np.float32(TISSUE_LEVEL)


def finish_map(heatmap: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """A map (or a stack of maps) made ready to show: NaN -> 0, negative -> 0, 0 outside
    ``mask`` (the tissue), then divided by its own maximum over the tissue, so a map with any
    spatial information has maximum 1; a map constant over the tissue becomes all zero.
    Idempotent: finishing a finished map changes nothing."""
    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64), nan=0.0, posinf=0.0,
                              neginf=0.0), 0.0, None)
    single = h.ndim == 2
    if single:
        h = h[None]
    if mask is None:
        m = np.ones(h.shape, dtype=bool)
    else:
        m = np.broadcast_to(np.asarray(mask, dtype=bool).reshape((-1, *h.shape[1:])), h.shape)
    out = np.zeros(h.shape, dtype=np.float32)
    for i in range(len(h)):
        mi = m[i]
        if not mi.any():
            continue
        vals = h[i][mi]
        hi, lo = float(vals.max()), float(vals.min())
        if hi - lo <= _FLAT or hi <= _FLAT:
            continue
        out[i] = np.where(mi, h[i] / hi, 0.0)
    out = np.clip(out, 0.0, 1.0)
    return out[0] if single else out


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Window a patch (any dtype) to 8-bit by its own min..max (a constant patch -> zeros)."""
    a = np.asarray(pixels, dtype=np.float64)
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    lo, hi = float(np.min(a)), float(np.max(a))
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.round((a - lo) / (hi - lo) * 255.0).astype(np.uint8)


def colorize(heatmap: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """A [0, 1] map -> uint8 RGB ``(H, W, 3)`` through a matplotlib colormap."""
    from matplotlib import colormaps

    h = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float64)), 0.0, 1.0)
    rgba = colormaps[cmap](h)
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def overlay(pixels: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4, cmap: str = "jet",
            mask: np.ndarray | None = None) -> np.ndarray:
    """The patch (windowed to 8-bit grey) blended with the coloured map: uint8 RGB. Where
    ``mask`` (the tissue) is False the grey patch shows uncoloured."""
    if not 0.0 <= alpha <= 1.0:
        raise MammoError(f"alpha must be in [0, 1], got {alpha}")
    grey = to_uint8(pixels)
    if grey.shape != np.shape(heatmap):
        raise MammoError(f"patch {grey.shape} and heatmap {np.shape(heatmap)} differ in shape")
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float64)
    col = colorize(heatmap, cmap).astype(np.float64)
    out = (1.0 - alpha) * rgb + alpha * col
    if mask is not None:
        out = np.where(np.asarray(mask, dtype=bool)[..., None], out, rgb)
    return np.round(out).clip(0, 255).astype(np.uint8)


def weighted_mean(maps: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Probability-weighted mean of member maps (plain mean when all weights are 0); not yet
    normalised: pass it through :func:`finish_map` with the patch's tissue mask."""
    if not maps:
        return np.zeros(PATCH_SHAPE, dtype=np.float32)
    w = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    if w.sum() <= 0:
        w = np.ones(len(maps))
    m = np.tensordot(w / w.sum(), np.stack(maps).astype(np.float64), axes=1)
    return np.clip(np.nan_to_num(m), 0.0, 1.0).astype(np.float32)
