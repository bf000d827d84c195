"""The dense abnormality map (mammo_core/dense_map.py, ``ScanSettings.map_mode="dense"``): one
trunk pass over the rescaled image, each window pooled from it, the member's own head."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from bundle_factory import models_dir_with

from mammo_core import dense_map
from mammo_core.cli import main
from mammo_core.dense_map import DenseMember, NotDense, snap_origins
from mammo_core.engine import MAP_MEASURED, MAP_PRECISION
from mammo_core.errors import MammoError
from mammo_core.mammogram import read_mammogram
from mammo_core.scan import ScanSettings, scan_mammogram
from mammo_core.session import Session

NAME = "pooled_baseline_mass_calc"
BUNDLED = "vgg16b4_baseline_mass_calc"


def pooled_model(kernel: int = 1, seed: int = 0, squash: bool = False):
    """A small pooled-head model shaped like the bundled member (grey -> RGB, caffe-like
    rescaling, conv / 2x2 max-pool blocks, avg + max global pooling of two blocks,
    concatenated, one Dense softmax over baseline / mass / calcification); ``squash``: with the
    pooled head's feature squash (a Rescaling by one divisor per feature, then softsign)."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inp = keras.Input((150, 150, 1), name="patch")
    x = layers.Concatenate(axis=-1, name="grey_to_rgb")([inp, inp, inp])
    x = layers.Rescaling(4.0, offset=[-1.0, -1.5, -2.0], name="pre")(x)
    x = layers.Conv2D(6, kernel, padding="same", activation="relu", name="c1")(x)
    p1 = layers.MaxPooling2D(2, name="p1")(x)
    x = layers.Conv2D(8, kernel, padding="same", activation="relu", name="c2")(p1)
    p2 = layers.MaxPooling2D(2, name="p2")(x)
    pools = [layers.GlobalAveragePooling2D(name="gap_p1")(p1), layers.GlobalMaxPooling2D(name="gmp_p1")(p1),
             layers.GlobalAveragePooling2D(name="gap_p2")(p2), layers.GlobalMaxPooling2D(name="gmp_p2")(p2)]
    h = layers.Concatenate(name="pooled_features")(pools)
    if squash:
        d = np.linspace(0.05, 2.0, 28)
        h = layers.Rescaling(scale=[float(v) for v in 1.0 / d], name="feature_scale")(h)
        h = layers.Activation("softsign", name="feature_squash")(h)
    out = layers.Dense(3, activation="softmax", name="predictions")(h)
    return keras.Model(inp, out, name="pooled_test")


def write_models(root, kernel: int = 1, tta: str | None = None, squash: bool = False):
    from mammo_core.bundle import write_bundle, write_manifest

    card = {"name": NAME, "task": "baseline_mass_calc", "classes": ["baseline", "mass", "calcification"],
            "architecture": {"name": "pooled_test", "note": "test fixture"},
            "training": {"data": {"path": "none (random weights)"}}, "metrics": {}}
    if tta:
        card["inference"] = {"tta": tta}
    write_bundle(pooled_model(kernel, squash=squash), root / NAME, card)
    write_manifest(root)
    return root


@pytest.fixture(scope="module")
def pointwise(tmp_path_factory):
    """A pooled model whose convolutions are 1 x 1: no padding effect, so a window pooled from
    the whole image's maps equals the window's own pass wherever the window is aligned."""
    root = write_models(tmp_path_factory.mktemp("pointwise"), kernel=1)
    s = Session(root)
    assert s.load([NAME]) == []
    return s


def textured(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = 0.45 + 0.15 * cv2.GaussianBlur(rng.standard_normal(shape), (0, 0), 3) \
        + 0.05 * rng.standard_normal(shape)
    return (np.clip(img, 0.05, 1) * 65535).astype(np.uint16)


def write_png(path, img):
    assert cv2.imwrite(str(path), img)
    return read_mammogram(path)


def test_pooled_model_splits_into_trunk_and_head(pointwise):
    dm = dense_map.dense_member(pointwise.loaded_model(NAME))
    assert [(g.stride, g.cells) for g in dm.geos] == [(2, 75), (4, 37)]
    assert dm.stride == 4 and dm.extent == 150 and dm.margin == 0  # 1 x 1 kernels: no reach
    assert dm.pools == [("avg", 0), ("max", 0), ("avg", 1), ("max", 1)]
    assert dm.trunk.inputs[0].shape[1:3] == (None, None)  # free spatial size


def test_aligned_windows_equal_the_windowed_map_and_tiling_changes_nothing(pointwise, tmp_path, monkeypatch):
    """598 x 502 px, 150 px windows at stride 32: every window top is a multiple of the
    coarsest stride (4), so with 1 x 1 convolutions the dense map is the windowed map
    (float32 rounding); tiles of 40 px and bands of 64 kB (many tiles, many bands) too."""
    m = write_png(tmp_path / "t.png", textured((598, 502)))
    st = dict(window_px=150, stride_fraction=32 / 150, min_tissue=0.0, top_k=3)
    # the exactness check compares f32 with f32 (the windowed map defaults to MAP_PRECISION)
    win = scan_mammogram(m, pointwise, ScanSettings(map_mode="windowed", map_precision="f32", **st))
    den = scan_mammogram(m, pointwise, ScanSettings(map_mode="dense", **st))
    assert win.map_mode == "windowed" and den.map_mode == "dense", den.map_mode_note
    assert np.array_equal(win.centres, den.centres) and len(den.p_abnormal) == 15 * 12
    assert np.ptp(win.p_abnormal) > 0.01  # the windows differ: the comparison means something
    assert np.abs(win.p_abnormal - den.p_abnormal).max() < 1e-5
    monkeypatch.setattr(dense_map, "TILE_PX", 40)
    monkeypatch.setattr(dense_map, "BAND_BYTES", 64 << 10)
    dm = dense_map.dense_member(pointwise.loaded_model(NAME))
    origins = snap_origins(win.centres[:, 0] - 75, win.centres[:, 1] - 75, 1.0, 4, dm.extent, m.shape)
    bands = dense_map.plan(dm, origins, m.shape)
    assert len(bands) > 3 and sum(len(b.tiles) for b in bands) > 3 * len(bands)
    tiled = scan_mammogram(m, pointwise, ScanSettings(map_mode="dense", **st))
    assert "tile(s)" in tiled.map_mode_note
    assert np.abs(tiled.p_abnormal - den.p_abnormal).max() < 1e-6
    assert [(c.x, c.y) for c in tiled.candidates] == [(c.x, c.y) for c in den.candidates]


def test_a_squashed_pooled_head_runs_densely_and_equals_the_windowed_map(tmp_path):
    """The feature squash (Rescaling by a divisor per feature, softsign) sits in the head: the
    dense map replays it and still equals the windowed map on aligned windows."""
    root = write_models(tmp_path / "sq", kernel=1, squash=True)
    s = Session(root)
    assert s.load([NAME]) == []
    dm = dense_map.dense_member(s.loaded_model(NAME))
    assert dm.stride == 4
    m = write_png(tmp_path / "t.png", textured((406, 342), seed=3))
    st = dict(window_px=150, stride_fraction=32 / 150, min_tissue=0.0, top_k=3)
    win = scan_mammogram(m, s, ScanSettings(map_mode="windowed", map_precision="f32", **st))
    den = scan_mammogram(m, s, ScanSettings(map_mode="dense", **st))
    assert den.map_mode == "dense", den.map_mode_note
    assert np.ptp(win.p_abnormal) > 1e-3
    assert np.abs(win.p_abnormal - den.p_abnormal).max() < 1e-5


def test_window_origins_snap_to_the_nearest_coarsest_cell_inside_the_image():
    # scale 150 / 96: tops 0, 24, 48, 904 (last of 1024) -> 0, 37.5, 75, 1412.5 rescaled px
    o = snap_origins(np.array([0, 24, 48, 928]), np.array([5, 10, 15, 20]), 150 / 96, 16, 148, (1600, 1600))
    assert o[:, 0].tolist() == [0, 32, 80, 1440]          # nearest multiples of 16
    assert o[:, 1].tolist() == [0, 16, 16, 32]           # 7.8, 15.6, 23.4, 31.25 px
    assert np.all(o % 16 == 0)
    # never past the last origin whose 148 px fit: (1600 - 148) // 16 * 16 = 1440
    assert snap_origins(np.array([1023]), np.array([0]), 150 / 96, 16, 148, (1600, 1600))[0, 0] == 1440


def test_models_that_cannot_run_densely_fall_back_to_windowed_with_the_reason(tmp_path):
    """The tests' tiny CNN (a strided 'valid' convolution) and a Flatten head: the windowed map,
    the reason in the result and its JSON; the map's P(abnormal) is the windowed one."""
    import keras

    root = models_dir_with(tmp_path / "m", ["baseline_mass_calc"], ensemble=False)
    s = Session(root)
    name = "tiny_baseline_mass_calc_0"
    assert s.load([name]) == []
    m = write_png(tmp_path / "t.png", textured((400, 300)))
    st = dict(window_px=150, min_tissue=0.0, top_k=2)
    res = scan_mammogram(m, s, ScanSettings(map_mode="dense", **st))
    ref = scan_mammogram(m, s, ScanSettings(map_mode="windowed", **st))
    assert res.map_mode == "windowed" and "dense map not possible" in res.map_mode_note
    assert "conv1" in res.map_mode_note and "'same' padding" in res.map_mode_note
    doc = res.candidates_json()["map"]
    assert doc["mode"] == "windowed" and doc["mode_requested"] == "dense" and doc["mode_note"]
    assert np.array_equal(res.p_abnormal, ref.p_abnormal) and ref.map_mode_note == ""
    inp = keras.Input((150, 150, 1))
    x = keras.layers.Conv2D(2, 3, padding="same")(inp)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    with pytest.raises(NotDense, match="no global pooling head"):
        DenseMember(keras.Model(inp, out), "flat")


def test_card_tta_falls_back_and_a_fault_in_the_dense_pass_is_one_log_line(tmp_path, monkeypatch, caplog):
    root = write_models(tmp_path / "d8", kernel=3, tta="dihedral8")
    s = Session(root)
    assert s.load([NAME]) == []
    m = write_png(tmp_path / "t.png", textured((300, 300)))
    st = dict(window_px=150, min_tissue=0.0, top_k=0)
    res = scan_mammogram(m, s, ScanSettings(map_mode="dense", map_tta="card", **st))
    assert res.map_mode == "windowed" and "several views" in res.map_mode_note and res.exact
    dense = scan_mammogram(m, s, ScanSettings(map_mode="dense", **st))  # one view: dense runs
    assert dense.map_mode == "dense" and not dense.exact

    def broken(self, unit):
        raise RuntimeError("injected trunk fault")
    monkeypatch.setattr(DenseMember, "trunk_maps", broken)
    with caplog.at_level(logging.WARNING):
        res = scan_mammogram(m, s, ScanSettings(map_mode="dense", **st))
    assert res.map_mode == "windowed" and "injected trunk fault" in res.map_mode_note
    assert sum("injected trunk fault" in r.getMessage() for r in caplog.records) == 1
    ref = scan_mammogram(m, s, ScanSettings(map_mode="windowed", **st))
    assert np.array_equal(res.p_abnormal, ref.p_abnormal)


def test_unknown_map_mode_is_refused():
    with pytest.raises(MammoError, match="map mode"):
        ScanSettings(map_mode="fast")


def test_cli_map_mode_flag_and_json_csv_state_the_mode(tmp_path, capsys):
    root = write_models(tmp_path / "m", kernel=3)
    img = tmp_path / "case_L_CC.png"
    assert cv2.imwrite(str(img), textured((400, 330)))
    for mode in ("dense", "windowed"):
        out = tmp_path / mode
        rc = main(["scan", str(img), "-o", str(out), "--models-dir", str(root), "--model", NAME,
                   "--window-px", "150", "--min-tissue", "0", "--map-mode", mode, "--top-k", "2",
                   "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 0, err
        d = json.loads((out / "case_L_CC_candidates.json").read_text())
        assert d["map"]["mode"] == mode and d["map"]["mode_requested"] == mode
        assert (d["map"]["mode_note"] != "") is (mode == "dense")
        assert d["map"]["engine"]["name"] == "keras" or mode == "windowed"
        assert f"{mode} map" in err
        comments = [ln for ln in (out / "candidates.csv").read_text().splitlines() if ln.startswith("#")]
        assert any(f"{mode} map on " in ln and "case_L_CC.png" in ln for ln in comments), comments
        eng = d["map"]["engine"]
        if eng["name"] == "openvino":  # the windowed map at MAP_PRECISION, its deviation stated
            assert eng["precision"] == MAP_PRECISION
            if MAP_PRECISION != "f32":
                assert eng["deviation"] == MAP_MEASURED[MAP_PRECISION]
                assert any(MAP_MEASURED[MAP_PRECISION] in ln for ln in comments), comments
                assert MAP_MEASURED[MAP_PRECISION] in err


def test_cli_refuses_an_unknown_map_mode(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--map-mode", "fast"])
    assert exc.value.code == 2 and "--map-mode" in capsys.readouterr().err


# --------------------------------------------------------------------------- the bundled member
@pytest.fixture(scope="module")
def bundled():
    from mammo_core.engine import EngineSettings

    s = Session(None, EngineSettings("keras"))
    assert s.load([BUNDLED]) == []
    return s


def test_bundled_member_runs_densely_tiled_as_untiled(bundled):
    """VGG16 blocks 1-4 with avg + max pooling of its blockK_pool layers (the card's choice, e.g.
    block3/4_pool): block K has stride 2^K and a 150 px window is 150 // 2^K cells (block2 37,
    block3 18, block4 9); stride 16, the margin covers the 100 px receptive field; 160 px tiles
    give the untiled features (measured max |dp| ~1e-6; bound 1e-4)."""
    model = bundled.loaded_model(BUNDLED)
    blocks = sorted({int(layer.name[len("gap_block")]) for layer in model.model.layers
                     if layer.name.startswith("gap_block")})
    dm = dense_map.dense_member(model)
    assert [(g.stride, g.cells) for g in dm.geos] == [(2 ** k, 150 // 2 ** k) for k in blocks]
    assert dm.stride == 16 and dm.extent == max(2 ** k * (150 // 2 ** k) for k in blocks) and dm.margin == 48
    small = textured((320, 352), seed=3)
    origins = np.array([[oy, ox] for oy in range(0, 320 - 148, 16) for ox in range(0, 352 - 148, 48)])
    maps = dm.trunk_maps(small.astype(np.float32) / 65535)
    ref = dm.probabilities(dense_map.pooled_features(dm, maps, origins))
    idx, tiled = dense_map.dense_probabilities(dm, small, origins, tile=160, band_bytes=2 << 20)
    assert len(dense_map.plan(dm, origins, small.shape, 160, 2 << 20)) > 1
    assert sorted(idx.tolist()) == list(range(len(origins)))
    assert np.abs(tiled[np.argsort(idx)] - ref).max() < 1e-4


def lesions(shape, seed=0) -> np.ndarray:
    """Tissue-like texture with bright discs (masses) and clusters of dots (calcifications):
    the bundled member's P(abnormal) spans 0..1 over its windows."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = 0.3 + 0.06 * cv2.GaussianBlur(rng.standard_normal(shape), (0, 0), 4) + 0.04 * rng.standard_normal(shape)
    for _ in range(3):
        cy, cx, r = rng.integers(30, h - 30), rng.integers(30, w - 30), rng.integers(10, 28)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 0.35
    for _ in range(2):
        cy, cx = rng.integers(40, h - 40), rng.integers(40, w - 40)
        for _ in range(10):
            dy, dx = rng.integers(-25, 25, 2)
            img[(yy - cy - dy) ** 2 + (xx - cx - dx) ** 2 < 6] += 0.5
    return (np.clip(img, 0.05, 1) * 65535).astype(np.uint16)


def test_bundled_member_dense_agrees_with_windowed_on_a_synthetic_image(bundled, tmp_path):
    """Not exact (each window's own zero padding vs the real tissue around it; resampling of
    the whole image; origins snapped to 16 px of the rescaled image). One window = the whole
    image: equal to 1e-5. A 264 x 264 synthetic image with masses and calcification clusters,
    96 px windows (rescaled by 150 / 96, as mini-MIAS), 64 windows with P(abnormal) 0-0.17,
    measured (7 Dec 2026): max |dp| 0.168, mean 0.0026, median 0.0; bounds twice / four times
    that. On real mini-MIAS images the difference is far larger (mean 0.68 per image,
    docs/whole_mammograms.md): this guards the machinery, not the fidelity."""
    one = write_png(tmp_path / "one.png", lesions((150, 150), seed=5))
    st = dict(window_px=150, min_tissue=0.0, top_k=0)
    a = scan_mammogram(one, bundled, ScanSettings(map_mode="windowed", **st))
    b = scan_mammogram(one, bundled, ScanSettings(map_mode="dense", **st))
    assert b.map_mode == "dense" and abs(a.p_abnormal[0] - b.p_abnormal[0]) < 1e-5
    m = write_png(tmp_path / "t.png", lesions((264, 264), seed=6))
    st["window_px"] = 96
    win = scan_mammogram(m, bundled, ScanSettings(map_mode="windowed", **st))
    den = scan_mammogram(m, bundled, ScanSettings(map_mode="dense", **st))
    dp = np.abs(win.p_abnormal - den.p_abnormal)
    print(f"bundled member, synthetic 264 x 264, 96 px windows: {len(dp)} windows, P(abnormal) "
          f"{win.p_abnormal.min():.3f}-{win.p_abnormal.max():.3f}; max |dp| {dp.max():.4f}, mean "
          f"{dp.mean():.4f}, median {np.median(dp):.4f}")
    assert np.ptp(win.p_abnormal) > 0.1  # the windows differ: the comparison means something
    assert dp.max() < 0.34 and dp.mean() < 0.01 and np.median(dp) < 1e-3
