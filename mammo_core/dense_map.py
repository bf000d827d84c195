"""The dense abnormality map: a pooled-head member's trunk run once over the whole (rescaled)
image instead of once per window, each window's pooled features read from the shared feature
maps, then the member's own head.

Why: the map's windows overlap 16-fold (stride side / 4), so the windowed map computes every
trunk pixel about 16 times. A member whose head is global pooling of trunk layers (the bundled
``vgg16b4_baseline_mass_calc``: avg + max pooling of VGG16 ``block2_pool``, ``block3_pool``,
``block4_pool``, concatenated, one Dense softmax) can instead run its trunk once:

1. the image is rescaled once by ``150 / side`` with ``cv2.INTER_NEAREST`` (the interpolation
   :func:`mammo_core.protocol.cut_window` uses) and scaled to the model input as a cut window is;
2. the member's own trunk layers (its weights, replayed on an input of free spatial size: a
   fully convolutional graph, nothing written into the bundle, no ``Lambda``) run over it in
   tiles of at most :data:`TILE_PX` x :data:`TILE_PX` output pixels plus a margin covering the
   trunk's receptive field, so a tiled pass gives the untiled features (the margin is the
   receptive field's half-width rounded up to the coarsest feature stride);
3. each window's origin snaps to the nearest multiple of the coarsest stride ``S`` (16 px of the
   rescaled image for VGG16 block 4 = ``16 / 150`` of a window side, 10.2 px at a 96 px window):
   the pooling grids of every layer then line up with the window's, as in a window's own pass;
4. each pooled layer's avg / max over exactly the cells a 150 x 150 window has (37 x 37 of
   ``block2_pool``, 18 x 18 of ``block3_pool``, 9 x 9 of ``block4_pool``) is the window's
   feature, in the member's order, and the member's head layers (Concatenate, Dense) give its
   probabilities.

Not exact: a window's own pass zero-pads at the window's edges, the dense pass sees the real
tissue around it; the nearest-neighbour resampling of the whole image and the snapped origin
differ from the window's own by up to a pixel / half a stride. ``docs/whole_mammograms.md``
gives the measured difference and the candidates' hit rates of both modes in one run. Members
whose head is not pooling (Flatten + Dense), trunks with other layers (strided or valid
convolutions), or TTA with several views are refused here (:class:`NotDense`): the scan falls
back to the windowed map and says why. Research use only — not a medical device.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mammo_core import tfload
from mammo_core.contract import INPUT_SHAPE
from mammo_core.errors import MammoError
from mammo_core.protocol import to_uint16

#: Largest trunk tile (rescaled pixels, before the margin): with VGG16's 64-channel first
#: block a 1024 + 2 x 48 px tile holds about 320 MB per activation map, so one tile stays
#: under about 1.5 GB whatever the image's size.
TILE_PX = 1024
#: Most bytes of pooled-layer feature maps kept at once (a band of rows of the image is
#: computed, its windows pooled, then dropped): bounds the memory of a big image.
BAND_BYTES = 512 << 20
PATCH = int(INPUT_SHAPE[0])

_POINTWISE = {"Rescaling", "Activation", "ReLU", "LeakyReLU", "BatchNormalization", "Dropout",
              "Normalization", "Identity"}
_MERGE = {"Concatenate", "Add", "Multiply", "Average", "Maximum", "Minimum"}
_LOCK = threading.Lock()


class NotDense(MammoError):
    """The member cannot be run densely (the reason is the message): use the windowed map."""


@dataclass(frozen=True)
class _Geo:
    stride: int   # input pixels per cell
    cells: int    # cells a 150 x 150 window has
    rf: int       # receptive field (input pixels)


def _key(node) -> int:
    return id(node)


class DenseMember:
    """A pooled-head Keras model split into its fully convolutional trunk (free spatial size) and
    its head (the layers after the global pooling). Raises :class:`NotDense` with the reason
    when the model is not of that form."""

    def __init__(self, model: Any, name: str = ""):
        self.name = name or getattr(model, "name", "model")
        try:
            self._analyse(model)
        except NotDense:
            raise
        except (AttributeError, KeyError, TypeError, ValueError, IndexError) as err:
            # the graph walk reads Keras 3 internals (as mammo_core.forward does)
            raise NotDense(f"{self.name}: graph not readable for the dense map ({type(err).__name__}: "
                           f"{err})") from None
        self._fn: Callable[..., Any] | None = None

    # ------------------------------------------------------------------ analysis
    def _analyse(self, model: Any) -> None:
        import keras

        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise NotDense(f"{self.name}: not a one-input, one-output model")
        if tuple(model.inputs[0].shape[1:]) != tuple(INPUT_SHAPE):
            raise NotDense(f"{self.name}: input {tuple(model.inputs[0].shape)} is not (None, 150, 150, 1)")
        nodes = []
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.operation is not None and not node.is_input:
                    nodes.append(node)
        if not any(type(n.operation).__name__ in ("GlobalAveragePooling2D", "GlobalMaxPooling2D")
                   for n in nodes):
            raise NotDense(f"{self.name}: no global pooling head (a Flatten/Dense head): only "
                           "pooled-head members run densely")
        geo: dict[int, _Geo] = {id(model.inputs[0]): _Geo(1, PATCH, 1)}
        pooled: set[int] = set()          # tensors computed from global pooling only
        pools: list[tuple[Any, str, int]] = []  # (node, avg|max, id of the pooled trunk tensor)
        for node in nodes:
            op = node.operation
            cls = type(op).__name__
            ins = [id(t) for t in node.input_tensors]
            if cls in ("GlobalAveragePooling2D", "GlobalMaxPooling2D"):
                cfg = op.get_config()
                if cfg.get("keepdims") or cfg.get("data_format", "channels_last") != "channels_last":
                    raise NotDense(f"{self.name}: {op.name} keeps dims or is not channels_last")
                if ins[0] not in geo:
                    raise NotDense(f"{self.name}: {op.name} pools a pooled tensor")
                pools.append((node, "avg" if "Average" in cls else "max", ins[0]))
                pooled.add(id(node.outputs[0]))
                continue
            if all(i in pooled for i in ins):  # the head: from pooled vectors only
                pooled.update(id(t) for t in node.outputs)
                continue
            if any(i in pooled for i in ins):
                raise NotDense(f"{self.name}: {op.name} mixes pooled vectors and feature maps")
            g = [geo[i] for i in ins]
            geo[id(node.outputs[0])] = self._trunk_geo(op, cls, g)
        if id(model.outputs[0]) not in pooled:
            raise NotDense(f"{self.name}: the output does not come from the pooled features alone")
        # the trunk: input -> the pooled tensors, on an input of free spatial size
        targets = list(dict.fromkeys(t for _, _, t in pools))
        inp = keras.Input((None, None, int(INPUT_SHAPE[-1])), name="image")
        vals = _replay(nodes, {id(model.inputs[0]): inp}, skip=lambda n: id(n) in {id(p[0]) for p in pools})
        self.trunk = keras.Model(inp, [vals[t] for t in targets], name=f"{self.name}_dense_trunk")
        self.geos = [geo[t] for t in targets]
        self.pools = [(kind, targets.index(t)) for _, kind, t in pools]
        # the head: one input per pooling layer (in the graph's order), the layers after them
        starts = {}
        head_inputs: list[Any] = []
        for node, _, _ in pools:
            t = node.outputs[0]
            x = keras.Input((int(t.shape[-1]),), name=f"pooled_{len(head_inputs)}")
            starts[id(t)] = x
            head_inputs.append(x)
        hv = _replay(nodes, starts, skip=lambda n: False)
        if id(model.outputs[0]) not in hv:
            raise NotDense(f"{self.name}: head not rebuilt")
        self.head = keras.Model(head_inputs, hv[id(model.outputs[0])], name=f"{self.name}_dense_head")
        self.stride = max(g.stride for g in self.geos)          # S: the coarsest stride
        if any(self.stride % g.stride for g in self.geos):
            raise NotDense(f"{self.name}: feature strides {[g.stride for g in self.geos]} do not nest")
        if any(g.cells < 1 for g in self.geos):
            raise NotDense(f"{self.name}: a pooled layer has no cell in a 150 px window")
        self.extent = max(g.stride * g.cells for g in self.geos)  # rescaled px a window's cells span
        half = max((g.rf - g.stride + 1) // 2 for g in self.geos)
        self.margin = self.stride * math.ceil(half / self.stride)

    def _trunk_geo(self, op, cls: str, g: list[_Geo]) -> _Geo:
        if cls == "Conv2D":
            cfg = op.get_config()
            k = tuple(cfg["kernel_size"])
            if (tuple(cfg["strides"]) != (1, 1) or tuple(cfg["dilation_rate"]) != (1, 1)
                    or cfg["padding"] != "same" or k[0] != k[1] or k[0] % 2 == 0
                    or cfg.get("data_format", "channels_last") != "channels_last"):
                raise NotDense(f"{self.name}: convolution {op.name} is not stride 1, odd kernel, "
                               "'same' padding")
            return _Geo(g[0].stride, g[0].cells, g[0].rf + (k[0] - 1) * g[0].stride)
        if cls in ("MaxPooling2D", "AveragePooling2D"):
            cfg = op.get_config()
            p, s = tuple(cfg["pool_size"]), tuple(cfg["strides"] or cfg["pool_size"])
            if p != s or p[0] != p[1] or cfg["padding"] != "valid":
                raise NotDense(f"{self.name}: pooling {op.name} is not non-overlapping 'valid'")
            return _Geo(g[0].stride * p[0], g[0].cells // p[0], g[0].rf + (p[0] - 1) * g[0].stride)
        if cls in _POINTWISE and len(g) == 1:
            return g[0]
        if cls in _MERGE and g and all(x == g[0] for x in g):
            if cls == "Concatenate" and op.get_config().get("axis") not in (-1, 3):
                raise NotDense(f"{self.name}: {op.name} does not join channels")
            return g[0]
        raise NotDense(f"{self.name}: layer {op.name} ({cls}) is not supported by the dense map")

    # ------------------------------------------------------------------ running
    def _function(self):
        if self._fn is None:
            with _LOCK:
                if self._fn is None:
                    import keras

                    if keras.backend.backend() != "tensorflow":
                        raise NotDense(f"the dense map runs on TensorFlow; Keras runs on "
                                       f"{keras.backend.backend()}")
                    tf = tfload.tensorflow()
                    trunk = self.trunk
                    self._fn = tf.function(
                        lambda x: trunk(x, training=False),
                        input_signature=[tf.TensorSpec((1, None, None, int(INPUT_SHAPE[-1])), tf.float32)],
                        autograph=False)
        return self._fn

    def trunk_maps(self, unit: np.ndarray) -> list[np.ndarray]:
        """The pooled trunk layers' feature maps of one image ``(H, W)`` float32 (untiled)."""
        out = self._function()(np.ascontiguousarray(unit, dtype=np.float32)[None, ..., None])
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o)[0] for o in out]

    def probabilities(self, features: Sequence[np.ndarray]) -> np.ndarray:
        """The head's output for pooled features (one ``(N, C)`` array per pooling layer)."""
        import keras

        out = self.head([keras.ops.convert_to_tensor(f) for f in features], training=False)
        return np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)


def _replay(nodes, start: dict[int, Any], skip: Callable[[Any], bool]) -> dict[int, Any]:
    """Call the layers of ``nodes`` (topological order) again on new tensors, from ``start``
    (id of an old tensor -> new tensor); nodes whose inputs are not all known, or ``skip``, are
    left out. Returns id of old tensor -> new tensor."""
    vals = dict(start)
    for node in nodes:
        ins = node.input_tensors
        if skip(node) or not ins or any(id(t) not in vals for t in ins):
            continue
        args, kwargs = node.arguments.fill_in({id(t): vals[id(t)] for t in ins})
        outs = node.operation(*args, **kwargs)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for t, y in zip(node.outputs, outs):
            vals[id(t)] = y
    return vals


def dense_member(lm) -> DenseMember:
    """The :class:`DenseMember` of a loaded model (built once, kept with it); raises
    :class:`NotDense` with the reason."""
    key = ("dense",)
    with _LOCK:
        hit = lm._shared.get(key)
    if hit is None:
        try:
            hit = DenseMember(lm.model, lm.name)
        except NotDense as err:
            hit = err
        with _LOCK:
            lm._shared[key] = hit
    if isinstance(hit, NotDense):
        raise hit
    return hit


# --------------------------------------------------------------------------- geometry
def rescaled(image: np.ndarray, side: int, fs: int) -> tuple[np.ndarray, float]:
    """The whole image at the model's scale (``150 / side``, ``cv2.INTER_NEAREST`` as
    :func:`mammo_core.protocol.cut_window`), uint16 from full scale ``fs``, and the scale."""
    import cv2

    scale = PATCH / float(side)
    if side == PATCH:
        small = image
    else:
        small = cv2.resize(np.ascontiguousarray(image), (0, 0), fx=scale, fy=scale,
                           interpolation=cv2.INTER_NEAREST)
    return to_uint16(small, fs), scale


def snap_origins(tops: np.ndarray, lefts: np.ndarray, scale: float, stride: int, extent: int,
                 shape: Sequence[int]) -> np.ndarray:
    """Window origins ``(N, 2)`` (rows, cols) in rescaled pixels: ``top x scale`` rounded to the
    nearest multiple of ``stride`` (the coarsest feature stride), kept so that ``extent`` pixels
    fit in the rescaled image of ``shape``."""
    out = []
    for v, n in ((tops, shape[0]), (lefts, shape[1])):
        top = max(0, (int(n) - extent) // stride)
        out.append(np.clip(np.rint(np.asarray(v, dtype=np.float64) * scale / stride), 0, top).astype(np.int64) * stride)
    return np.stack(out, axis=1)


@dataclass
class _Band:
    rows: tuple[int, int]          # feature rows [r0, r1) (rescaled px, multiples of S)
    cols: tuple[int, int]
    windows: np.ndarray            # indices of the windows pooled from this band
    tiles: list[tuple[int, int, int, int]]  # core boxes (y0, y1, x0, x1) to compute


def plan(member: DenseMember, origins: np.ndarray, shape: Sequence[int], tile: int | None = None,
         band_bytes: int | None = None) -> list[_Band]:
    """Bands of window origins (by row) whose feature maps fit ``band_bytes`` (default
    :data:`BAND_BYTES`), each with the trunk tiles (cores of at most ``tile`` px, default
    :data:`TILE_PX`) that hold a window's cells."""
    s, e = member.stride, member.extent
    tile = tile or TILE_PX
    band_bytes = band_bytes or BAND_BYTES
    tile = max(s, tile // s * s)
    chans = [int(t.shape[-1]) for t in member.trunk.outputs]
    order = np.argsort(origins[:, 0], kind="stable")
    bands: list[_Band] = []
    k = 0
    while k < len(order):
        b0 = int(origins[order[k], 0])
        idx = order[k:]
        c0 = int(origins[idx, 1].min())
        c1 = int(origins[idx, 1].max()) + e
        per_row = sum(4 * (c1 - c0) * c / (g.stride * g.stride) for g, c in zip(member.geos, chans))
        rows = max(s, int(band_bytes / max(per_row, 1.0)) // s * s)
        span = max(s, rows - e)  # origin rows per band
        sel = idx[origins[idx, 0] < b0 + span]
        k += len(sel)
        c0 = int(origins[sel, 1].min())
        c1 = -(-(int(origins[sel, 1].max()) + e) // s) * s
        r1 = -(-(int(origins[sel, 0].max()) + e) // s) * s
        tiles = []
        for y0 in range(b0, r1, tile):
            y1 = min(y0 + tile, r1)
            for x0 in range(c0, c1, tile):
                x1 = min(x0 + tile, c1)
                o = origins[sel]
                if np.any((o[:, 0] < y1) & (o[:, 0] + e > y0) & (o[:, 1] < x1) & (o[:, 1] + e > x0)):
                    tiles.append((y0, y1, x0, x1))
        bands.append(_Band((b0, r1), (c0, c1), sel, tiles))
    return bands


def dense_probabilities(member: DenseMember, small: np.ndarray, origins: np.ndarray,
                        tile: int | None = None, band_bytes: int | None = None,
                        on_tile: Callable[[int, int, float], None] | None = None,
                        cancel: Callable[[], bool] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The member's probabilities of the windows at ``origins`` (rescaled px, snapped) of the
    rescaled uint16 image ``small``: ``(indices done, probabilities (n_done, classes))``.
    ``on_tile(done, total, seconds)`` after each trunk tile; ``cancel()`` True stops after the
    band being computed is dropped (the windows of earlier bands are returned)."""
    import time

    bands = plan(member, origins, small.shape, tile, band_bytes)
    total = sum(len(b.tiles) for b in bands)
    done_tiles = 0
    h, w = small.shape
    m = member.margin
    idx_done: list[Any] = []
    probs: list[Any] = []
    for band in bands:
        r0, r1 = band.rows
        c0, c1 = band.cols
        maps = [np.zeros(((r1 - r0) // g.stride, (c1 - c0) // g.stride, int(t.shape[-1])), np.float32)
                for g, t in zip(member.geos, member.trunk.outputs)]
        for y0, y1, x0, x1 in band.tiles:
            if cancel is not None and cancel():
                return _join(idx_done, probs, member)
            t0 = time.perf_counter()
            iy0, iy1 = max(0, y0 - m), min(h, y1 + m)
            ix0, ix1 = max(0, x0 - m), min(w, x1 + m)
            unit = small[iy0:iy1, ix0:ix1].astype(np.float32) / np.float32(65535)
            outs = member.trunk_maps(unit)
            for g, fm, out in zip(member.geos, maps, outs):
                s = g.stride
                ya, yb = y0 // s, min(y1 // s, iy0 // s + out.shape[0])
                xa, xb = x0 // s, min(x1 // s, ix0 // s + out.shape[1])
                if yb > ya and xb > xa:
                    fm[ya - r0 // s:yb - r0 // s, xa - c0 // s:xb - c0 // s] = \
                        out[ya - iy0 // s:yb - iy0 // s, xa - ix0 // s:xb - ix0 // s]
            done_tiles += 1
            if on_tile is not None:
                on_tile(done_tiles, total, time.perf_counter() - t0)
        feats = pooled_features(member, maps, origins[band.windows] - np.array([r0, c0]))
        probs.append(member.probabilities(feats))
        idx_done.append(band.windows)
    return _join(idx_done, probs, member)


def _join(idx, probs, member) -> tuple[np.ndarray, np.ndarray]:
    if not idx:
        return np.zeros(0, np.int64), np.zeros((0, int(member.head.outputs[0].shape[-1])))
    return np.concatenate(idx), np.concatenate(probs)


def pooled_features(member: DenseMember, maps: Sequence[np.ndarray], origins: np.ndarray) -> list[np.ndarray]:
    """Each pooling layer's vector per window: avg / max over the ``cells x cells`` of its
    trunk map from the window's origin (``origins`` in pixels of ``maps``' frame, multiples of
    the coarsest stride). Averages from a summed-area table (float64)."""
    n = len(origins)
    sat = {}
    out = []
    for kind, ti in member.pools:
        g, fm = member.geos[ti], maps[ti]
        rows, cols = origins[:, 0] // g.stride, origins[:, 1] // g.stride
        c = g.cells
        if kind == "avg":
            if ti not in sat:
                sat[ti] = np.pad(fm.astype(np.float64), ((1, 0), (1, 0), (0, 0))).cumsum(0).cumsum(1)
            ii = sat[ti]
            v = (ii[rows + c, cols + c] - ii[rows, cols + c] - ii[rows + c, cols] + ii[rows, cols]) / (c * c)
            out.append(v.astype(np.float32))
        else:
            v = np.empty((n, fm.shape[-1]), np.float32)
            for i, (r, q) in enumerate(zip(rows, cols)):
                v[i] = fm[r:r + c, q:q + c].max(axis=(0, 1))
            out.append(v)
    return out
