"""Why do the default heatmaps put heat on the patch border? Issue 22's diagnosis on the 20
bundled samples (held-out women): the ensemble's default map (most likely abnormal class, each
member's map weighted by its probability of that class) rebuilt under one hypothesis at a time,
and the share of its heat in the 15-px border against the border's share of the tissue.

Hypotheses (docs/trust.md, "Heatmaps"):
- padding: block4_conv3's activations computed with the REAL mammogram around the patch (the
  sample's window in its mini-MIAS image, 32 model pixels on each side, resampled exactly as the
  dataset builder did; the patch itself is reproduced to the pixel) instead of VGG16's zero
  padding; and activations minus those of a flat patch of the same mean;
- the global-max pooled head: channel weights from the interior cells' gradients only;
- resizing: half-pixel cell centres, or each cell on its pooling footprint (8j..8j+7), instead
  of tf-keras-vis' corner-aligned zoom; the target layer (block3_conv3); HiResCAM.

    python benchmarks/heatmap_border.py [--models assets/models] [--data data/mias]
        [--images ../shared/data/mini-mias]

``--data``: the mini-MIAS build the samples were cut from (its metadata.csv gives each public_test
window); ``--images``: the mini-MIAS PNGs. Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from mammo_core.ensemble import apply_temperature, combine, member_class_for
from mammo_core.explain import damp_film_edge, finish_map, tissue_mask, visualizer, weighted_mean
from mammo_core.inference import predict_arrays
from mammo_core.io import to_model_input
from mammo_core.labels import CLASS_NAMES
from mammo_core.paths import models_dir, samples_dir, shared_dir
from mammo_core.predictions import ModelOutput, default_target
from mammo_core.session import Session

LAYER = "block4_conv3"
MARGIN = 32  # model pixels of real context on each side (4 cells of block4_conv3)
TRUNK = ("block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_conv2", "block2_pool",
         "block3_conv1", "block3_conv2", "block3_conv3", "block3_pool", "block4_conv1", "block4_conv2",
         LAYER)


def ring_mask() -> np.ndarray:
    ring = np.zeros((150, 150), bool)
    ring[:15] = ring[-15:] = True
    ring[:, :15] = ring[:, -15:] = True
    return ring


class Member:
    """One member's Grad-CAM pieces: activations and gradients at a layer, and its trunk on any
    input size (for the padding test)."""

    def __init__(self, lm):
        import keras

        self.lm = lm
        clone = visualizer(lm.model, "gradcam").model  # last activation linear, as Grad-CAM scores
        self.grad_models = {lay: keras.Model(clone.inputs, [clone.outputs[0], clone.get_layer(lay).output])
                            for lay in (LAYER, "block3_conv3")}
        inp = keras.Input((None, None, 1))
        h = keras.layers.Concatenate()([inp, inp, inp])  # the model's grey_to_rgb
        h = lm.model.get_layer("caffe_preprocess")(h)
        for name in TRUNK:
            h = lm.model.get_layer(name)(h)
        self.trunk = keras.Model(inp, h)

    def act_grad(self, x: np.ndarray, ci: int, layer: str = LAYER) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            out, conv = self.grad_models[layer](xt, training=False)
            score = out[:, ci]
        return conv.numpy()[0], tape.gradient(score, conv).numpy()[0]


def upsample(cam: np.ndarray, how: str = "zoom") -> np.ndarray:
    import cv2
    from scipy.ndimage import zoom

    if how == "zoom":  # tf-keras-vis: corner-aligned, order 1
        return zoom(cam, (150 / cam.shape[0], 150 / cam.shape[1]), order=1)
    if how == "cv2":  # half-pixel centres
        return cv2.resize(cam.astype(np.float32), (150, 150), interpolation=cv2.INTER_LINEAR)
    n = cam.shape[0]  # each cell on its pooling footprint: cell j on pixels st*j .. st*j + st - 1
    st = {18: 8, 37: 4}[n]
    c = np.clip((np.arange(150) - (st - 1) / 2) / st, 0, n - 1)
    i0 = np.floor(c).astype(int)
    i1 = np.minimum(i0 + 1, n - 1)
    w = c - i0
    rows = cam[i0] * (1 - w)[:, None] + cam[i1] * w[:, None]
    return rows[:, i0] * (1 - w)[None] + rows[:, i1] * w[None]


def member_map(cam: np.ndarray, tissue: np.ndarray, how: str = "zoom", damp: bool = False) -> np.ndarray:
    h = upsample(np.maximum(cam, 0.0), how)
    h = np.maximum(h, 0.0)
    h = h / h.max() if h.max() > 0 else h
    return finish_map(damp_film_edge(h, tissue) if damp else h, tissue)


def context_input(src: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """The window with MARGIN model pixels of its mammogram around it, resampled as the builder
    did (``cv2.resize(..., INTER_NEAREST)`` of a ``side`` px window to 150 px); outside the image: 0."""
    pad = 4 * side
    big = np.pad(src, pad)
    idx = np.floor(np.arange(-MARGIN, 150 + MARGIN) * (side / 150)).astype(int)
    return big[pad + top + idx][:, pad + left + idx].astype(np.float32) / float(np.iinfo(src.dtype).max)


def main(argv=None) -> int:
    import cv2

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, default=models_dir())
    p.add_argument("--data", type=Path, default=Path("data/mias"))
    p.add_argument("--images", type=Path, default=shared_dir() / "data" / "mini-mias")
    a = p.parse_args(argv)
    s = Session(a.models)
    problems = s.load(["ensemble"])
    if problems:
        print("; ".join(map(str, problems)), file=sys.stderr)
        return 1
    files = sorted(samples_dir().glob("*.png"))
    patches = s.read(files).patches
    ens = s._state.ensemble
    models = s._state.models
    windows = [r for r in csv.DictReader((a.data / "metadata.csv").read_text(encoding="utf-8").splitlines())
               if r["split"] == "public_test"]
    labels = {r["file"]: r for r in csv.DictReader(
        (samples_dir() / "labels.csv").read_text(encoding="utf-8").splitlines())}
    ring = ring_mask()
    members = {m.name: Member(models[m.name]) for m in ens.spec.members}
    variants = ("plain", "damped (shipped)", "interior gradients", "minus flat patch", "cv2 resize",
                "footprint resize", "block3_conv3", "HiResCAM", "footprint resize + damped",
                "cv2 resize + damped", "padding test: zero padding", "padding test: real context")
    share: dict[str, list[float]] = {v: [] for v in variants}
    areas = []
    for f, patch in zip(files, patches):
        x = to_model_input(patch)
        t = tissue_mask(x[0])
        probs = predict_arrays([models[m.name] for m in ens.spec.members], x, batch_size=1, engine=s.engine)
        p5 = combine(ens.spec, probs).probabilities[0]
        target = default_target(ModelOutput("ensemble", "five_class", dict(zip(CLASS_NAMES, map(float, p5))), ""))
        w_ = labels[f.name]
        win = windows[int(w_["source_index"])]
        src = cv2.imread(str(a.images / f"{win['image']}.png"), cv2.IMREAD_UNCHANGED)
        ctx = context_input(src, int(win["top"]), int(win["left"]), int(win["side"]))
        centre_err = float(np.abs(ctx[MARGIN:MARGIN + 150, MARGIN:MARGIN + 150] - x[0, ..., 0]).max())
        maps: dict[str, list[np.ndarray]] = {v: [] for v in variants}
        weights = []
        for ms in ens.spec.members:
            mem = members[ms.name]
            cls = member_class_for(mem.lm.task, target)
            if cls is None:
                continue
            ci = mem.lm.classes.index(cls)
            weights.append(float(apply_temperature(probs[ms.name], ms.temperature)[0, ci]))
            A, G = mem.act_grad(x, ci)
            alpha = G.mean(axis=(0, 1))
            cam = (A * alpha).sum(-1)
            maps["plain"].append(member_map(cam, t))
            maps["damped (shipped)"].append(member_map(cam, t, damp=True))
            maps["interior gradients"].append(member_map((A * G[1:-1, 1:-1].mean(axis=(0, 1))).sum(-1), t))
            mu = float(x[0][t].mean()) if t.any() else float(x.mean())
            F, _ = mem.act_grad(np.full_like(x, mu), ci)
            maps["minus flat patch"].append(member_map(((A - F) * alpha).sum(-1), t))
            maps["cv2 resize"].append(member_map(cam, t, "cv2"))
            maps["footprint resize"].append(member_map(cam, t, "footprint"))
            maps["footprint resize + damped"].append(member_map(cam, t, "footprint", damp=True))
            maps["cv2 resize + damped"].append(member_map(cam, t, "cv2", damp=True))
            A3, G3 = mem.act_grad(x, ci, "block3_conv3")
            maps["block3_conv3"].append(member_map((A3 * G3.mean(axis=(0, 1))).sum(-1), t))
            maps["HiResCAM"].append(member_map((A * G).sum(-1), t))
            # padding test: ReLU after the resize in both, so only the activations differ
            cells = MARGIN // 8
            Ac = mem.trunk(ctx[None, ..., None], training=False).numpy()[0][cells:cells + 18, cells:cells + 18]
            for key, act in (("padding test: zero padding", A), ("padding test: real context", Ac)):
                h = np.maximum(upsample((act * alpha).sum(-1)), 0.0)
                maps[key].append(finish_map(h / h.max() if h.max() > 0 else h, t))
        for v in variants:
            hm = finish_map(weighted_mean(maps[v], weights), t)
            share[v].append(float(hm[ring].sum() / max(hm.sum(), 1e-12)))
        areas.append(float((ring & t).sum() / t.sum()))
        print(f"{f.stem}: target {target}, context reproduces the patch to {centre_err:.4f}; "
              + ", ".join(f"{v} {share[v][-1]:.3f}" for v in variants), file=sys.stderr, flush=True)
    ar = np.array(areas)
    print("Research use only — not a medical device.")
    print("| variant (20 samples, ensemble default map) | border share of heat: median [range] | "
          "samples over their area share (+0.005) |")
    print("|---|---|---|")
    for v in variants:
        sv = np.array(share[v])
        print(f"| {v} | {np.median(sv):.3f} [{sv.min():.3f}, {sv.max():.3f}] | {(sv > ar + 0.005).sum()} of 20 |")
    print()
    print("| sample | border's share of the tissue | " + " | ".join(variants) + " |")
    print("|---|---|" + "---|" * len(variants))
    for i, f in enumerate(files):
        print(f"| {f.stem} | {ar[i]:.3f} | " + " | ".join(f"{share[v][i]:.3f}" for v in variants) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
