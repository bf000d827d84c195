"""Heatmaps mean what the legend says: every displayed or exported map is normalised per patch
(maximum 1 unless it is constant) and has no heat outside the tissue mask (background below the
tissue threshold), for every member, the ensemble, each method and each target class."""
from __future__ import annotations

import numpy as np
import pytest
from bundle_factory import models_dir_with, synthetic_patches

from mammo_core.explain import (
    TISSUE_LEVEL,
    finish_map,
    overlay,
    tissue_mask,
    weighted_mean,
)
from mammo_core.io import Patch, to_model_input
from mammo_core.labels import CLASS_NAMES
from mammo_core.report import PredictionRun, display_map, pdf_pages
from mammo_core.session import ENSEMBLE, Session


def assert_displayable(hm: np.ndarray, mask: np.ndarray, what: str = "") -> None:
    """The acceptance rule of issue 12 for one map."""
    assert hm.shape == mask.shape and hm.dtype == np.float32, what
    assert np.isfinite(hm).all() and hm.min() >= 0.0 and hm.max() <= 1.0, what
    assert (hm[~mask] == 0).all(), f"{what}: heat outside the tissue mask"
    if hm.max() != hm.min():
        assert hm.max() >= 0.99, f"{what}: maximum {hm.max():.3f} < 0.99"


def edge_patches(n: int = 3, seed: int = 5) -> list[Patch]:
    """Synthetic patches cut at the image edge: a black film border on one side."""
    imgs, labels = synthetic_patches(n, seed=seed, labels=np.array([2, 4, 0][:n]))
    out = []
    for i, (im, lab) in enumerate(zip(imgs, labels)):
        im = im.copy()
        if i % 2 == 0:
            im[:, :45] = 0
        else:
            im[100:, :] = 300  # dark (below 20/255 of 65535), not zero
        out.append(Patch(im, f"edge{i}.png", None, int(lab)))
    return out


# ------------------------------------------------------------------------------ finish_map
def test_finish_map_scales_to_one_and_masks():
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 0.47, (150, 150))  # an ensemble mean that never reached 1
    mask = np.zeros((150, 150), bool)
    mask[:, 40:] = True
    raw[:, :40] += 5.0  # the background is the hottest region
    out = finish_map(raw, mask)
    assert_displayable(out, mask)
    assert out.max() == pytest.approx(1.0)
    np.testing.assert_allclose(finish_map(out, mask), out, atol=1e-7)  # idempotent
    # relative heat inside the tissue is kept
    np.testing.assert_allclose(out[mask], raw[mask] / raw[mask].max(), rtol=1e-5)


def test_finish_map_constant_nan_and_empty_mask():
    mask = np.ones((150, 150), bool)
    assert (finish_map(np.full((150, 150), 0.3), mask) == 0).all()
    nan = np.full((150, 150), np.nan)
    nan[5, 5] = 0.2
    out = finish_map(nan, mask)
    assert out[5, 5] == 1.0 and out.sum() == 1.0
    assert (finish_map(np.random.default_rng(1).uniform(size=(150, 150)), np.zeros((150, 150), bool)) == 0).all()
    stack = finish_map(np.stack([np.eye(150) * 0.2, np.zeros((150, 150))]), np.ones((2, 150, 150), bool))
    assert stack.shape == (2, 150, 150) and stack[0].max() == 1.0 and stack[1].max() == 0.0


def test_tissue_mask_threshold():
    x = np.array([[0.0, TISSUE_LEVEL, TISSUE_LEVEL + 1e-3, 1.0]], np.float32)
    assert tissue_mask(x).tolist() == [[False, False, True, True]]
    assert tissue_mask(x[..., None]).shape == (1, 4)


def test_weighted_mean_of_maps_then_finished_reaches_one():
    a = np.zeros((150, 150), np.float32)
    b = np.zeros((150, 150), np.float32)
    a[10, 10] = b[100, 100] = 1.0
    mean = weighted_mean([a, b], [0.5, 0.5])
    assert mean.max() == pytest.approx(0.5)
    assert finish_map(mean, np.ones((150, 150), bool)).max() == pytest.approx(1.0)


def test_overlay_leaves_masked_background_uncoloured():
    pix = np.full((150, 150), 30000, np.uint16)
    pix[:, :20] = 0
    hm = np.full((150, 150), 0.8, np.float32)
    mask = tissue_mask(to_model_input(pix)[0])
    rgb = overlay(pix, hm, mask=mask)
    grey = rgb[:, :20]
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    assert not (rgb[:, 20:, 0] == rgb[:, 20:, 2]).all()


# ------------------------------------------------------------------------------ real models
@pytest.fixture(scope="module")
def session(tmp_path_factory):
    root = models_dir_with(tmp_path_factory.mktemp("models"),
                           ["mass_calc", "benign_malignant", "baseline_mass_calc"], ensemble=True)
    s = Session(root)
    assert s.load() == []
    return s


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_every_session_map_is_normalised_and_masked(session, method):
    """What the viewer displays and what reports export all come from Session.explain_all."""
    checked = 0
    for patch in edge_patches():
        mask = tissue_mask(to_model_input(patch)[0])
        assert (~mask).sum() > 1000  # the test is about patches with background
        for target in (None, *CLASS_NAMES):
            maps = session.explain_all(patch, ENSEMBLE, method, target=target)
            for model, hm in maps.items():
                assert_displayable(hm, mask, f"{patch.source} {model} {target} {method}")
                checked += 1
        for name in session.loaded:
            if name == ENSEMBLE:
                continue
            hm = session.explain(patch, name, method)
            assert_displayable(hm, mask, f"{patch.source} {name} {method}")
            checked += 1
    assert checked > 30


def test_exported_pdf_map_is_normalised_masked_with_colour_bar_and_target(session):
    patch = edge_patches(1)[0]
    pred = session.predict([patch])[0]
    raw = np.full((150, 150), 0.2, np.float32)
    raw[:, :45] = 0.47  # a caller's unfinished map, hottest on the background
    raw[60:80, 60:80] = 0.4
    run = PredictionRun([pred], session.provenance(), (), [patch],
                        {(pred.key, pred.ensemble.model): raw},
                        heatmap_meta={(pred.key, pred.ensemble.model): {"target": "mass_malignant",
                                                                           "method": "gradcam++"}})
    mask = tissue_mask(to_model_input(patch)[0])
    shown = display_map(raw, patch)
    assert_displayable(shown, mask, "pdf map")
    figs = list(pdf_pages(run))
    try:
        assert len(figs) == 1
        fig = figs[0]
        titles = [ax.get_title() for ax in fig.axes]
        title = next(t for t in titles if t.startswith("Grad-CAM++ of"))
        assert "for class: mass malignant" in title
        ax = next(a for a in fig.axes if a.get_title() == title)
        img = np.asarray(ax.get_images()[0].get_array())
        np.testing.assert_array_equal(img, overlay(patch.pixels, shown, mask=mask))
        # the colour bar: an axes labelled with the relevance scale 0..1
        assert any("relevance" in a.get_ylabel() for a in fig.axes)
    finally:
        import matplotlib.pyplot as plt

        for f in figs:
            plt.close(f)


def test_cli_exported_maps_are_normalised_and_masked(session, tmp_path, capsys):
    """`mammo predict --gradcam-dir` writes every member's and the ensemble's map as .npy."""
    import json

    from mammo_core.cli import main

    src = tmp_path / "in"
    src.mkdir()
    pats = edge_patches()
    np.save(src / "edge.npy", np.stack([p.pixels for p in pats]))
    maps_dir = tmp_path / "maps"
    rc = main(["predict", str(src), "--models-dir", str(session.models_dir), "--gradcam", "--gradcam-dir",
               str(maps_dir), "--format", "json", "--no-progress"])
    assert rc == 0
    rows = json.loads(capsys.readouterr().out)["predictions"]
    files = {r["heatmap"] for r in rows if r["heatmap"]}
    assert len(files) >= len(pats) * 2  # members and the ensemble
    for r in rows:
        if r["heatmap"]:
            mask = tissue_mask(to_model_input(pats[r["index"]])[0])
            assert_displayable(np.load(r["heatmap"], allow_pickle=False), mask, r["heatmap"])


# ------------------------------------------------------------------------------ border and film edge
def test_film_edge_is_damped_beside_masked_background():
    from mammo_core.explain import EDGE_DAMP_PX, damp_film_edge

    tissue = np.ones((150, 150), bool)
    tissue[:, :40] = False  # film background on the left
    heat = np.ones((150, 150), np.float32)
    out = damp_film_edge(heat, tissue)
    assert (out[:, :40] == 0).all()
    assert out[75, 40] < 0.2 and out[75, 40 + EDGE_DAMP_PX + 1] == 1.0  # ramp over EDGE_DAMP_PX
    frame = damp_film_edge(heat, np.ones((150, 150), bool))  # the patch's frame is damped too
    assert frame[0, 75] == 0.0 and frame[75, 149] == 0.0 and frame[75, 75] == 1.0
    assert 0 < frame[3, 75] < 1


@pytest.mark.slow
def test_default_maps_of_the_samples_put_no_more_heat_on_the_border_than_its_tissue_share():
    """Issue 22: on the 20 bundled samples, the default ensemble map's 15-px border holds no more
    heat than the border's share of the tissue area (before: the call's map, 16-71 % of the heat
    on a 30-36 % area, 11 of 20 over; with 8-px damping 006 was still over, 0.367 vs 0.360). The
    damping width (16 px) was then chosen on 292 TRAINING women's patches by a rule fixed before
    measuring (benchmarks/heatmap_border_width.py), not on these held-out samples; measured after
    (docs/trust.md): 6-26 % of the heat, every sample at least 0.10 under its tissue share."""
    from mammo_core.paths import samples_dir

    s = Session()
    assert s.load(["ensemble"]) == []
    patches = s.read(sorted(samples_dir().glob("*.png"))).patches
    assert len(patches) == 20
    ring = np.zeros((150, 150), bool)
    ring[:15] = ring[-15:] = True
    ring[:, :15] = ring[:, -15:] = True
    for p in patches:
        hm = s.explain(p)  # the default target: the most likely abnormal class
        t = tissue_mask(to_model_input(p)[0])
        share = hm[ring].sum() / hm.sum()
        area = (ring & t).sum() / t.sum()
        assert share <= area, f"{p.source}: border holds {share:.3f} of the heat, {area:.3f} of the tissue"
