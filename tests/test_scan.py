"""`mammo scan` / mammo_core.scan: the abnormality map over the breast and its candidates."""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from bundle_factory import models_dir_with

from mammo_core.cli import main
from mammo_core.mammogram import read_mammogram
from mammo_core.scan import (
    BAR_STRIP,
    CANDIDATES_SCHEMA,
    DEFAULT_WINDOW_MM,
    TEXT_STRIP,
    ScanSettings,
    map_overlay,
    scan_mammogram,
    tissue_mask,
    window_grid,
)
from mammo_core.session import Session

BLOB = (560, 330)  # row, col of the planted mass
SIDE = 150         # window side (px): the windows need no resizing, like the tiny models' data
STRIDE = 38        # round(0.25 * 150)
SHAPE = (900, 780)
GRID = (-(-SHAPE[0] // STRIDE), -(-SHAPE[1] // STRIDE))


def synthetic_mammogram(seed: int = 0, blob=BLOB) -> np.ndarray:
    """A 900 x 780 16-bit 'breast' (half disc of noisy tissue on the left edge, black background,
    a bright label in a corner) with one bright disc (a mass, radius 24 px) planted at ``blob``,
    drawn like tests/bundle_factory.py's synthetic patches."""
    rng = np.random.default_rng(seed)
    h, w = SHAPE
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w))
    breast = (yy - 450) ** 2 + xx ** 2 < 440 ** 2
    img[breast] = 0.25 + 0.08 * rng.standard_normal(int(breast.sum()))
    img[(yy - blob[0]) ** 2 + (xx - blob[1]) ** 2 < 24 ** 2] += 0.45
    img[30:90, 660:750] = 0.95  # a film label, apart from the breast
    return (np.clip(img, 0, 1) * 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_dir_with(tmp_path_factory.mktemp("models"),
                           ["mass_calc", "benign_malignant", "baseline_mass_calc"])


@pytest.fixture(scope="module")
def session(models):
    s = Session(models)
    assert s.load(["ensemble"]) == []
    return s


def test_tissue_mask_drops_background_and_label():
    img = synthetic_mammogram()
    mask, f = tissue_mask(img)
    assert not mask[int(60 * f), int(700 * f)]      # the label
    assert mask[int(450 * f), int(150 * f)]         # the breast
    assert not mask[int(450 * f), int(600 * f)]     # the background


def test_window_grid_covers_the_image_edges():
    c = window_grid((600, 520), 96, 24)
    assert c[:, 0].min() == 48 and c[:, 0].max() == 600 - 96 + 48
    assert c[:, 1].max() == 520 - 96 + 48
    assert np.all(np.diff(np.unique(c[:, 0]))[:-1] == 24)


def test_planted_blob_is_found_first(session, tmp_path):
    path = tmp_path / "synthetic.png"
    assert cv2.imwrite(str(path), synthetic_mammogram())
    m = read_mammogram(path)
    res = scan_mammogram(m, session, ScanSettings(window_px=SIDE, stride_fraction=0.25))
    assert res.complete and res.window_px == SIDE and res.stride_px == STRIDE
    assert res.members == ["tiny_baseline_mass_calc_0"] and res.exact
    best = res.candidates[0]
    b = best.box  # the first candidate's window holds the planted mass
    assert b.top <= BLOB[0] < b.bottom and b.left <= BLOB[1] < b.right, res.candidates[:3]
    assert (best.x, best.y) == (b.left + SIDE // 2, b.top + SIDE // 2)
    assert best.p_abnormal > 0.5 and best.call != "baseline"
    assert abs(sum(best.probabilities.values()) - 1) < 1e-6
    assert res.map.dtype == np.float32 and res.map.shape == GRID
    assert np.isnan(res.map[:, -1]).all()  # background never scored
    ps = [cd.p_abnormal for cd in res.candidates]
    assert ps == sorted(ps, reverse=True)


def test_cancel_stops_early(session, tmp_path):
    path = tmp_path / "s.png"
    assert cv2.imwrite(str(path), synthetic_mammogram())
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 1
    res = scan_mammogram(read_mammogram(path), session, ScanSettings(window_px=SIDE, batch_size=8),
                         cancel=cancel)
    assert not res.complete and len(res.p_abnormal) == 8 and res.candidates == []


def test_cli_writes_map_candidates_and_csv_exit_3_with_a_bad_file(models, tmp_path, capsys):
    img = tmp_path / "case_L_MLO.png"
    assert cv2.imwrite(str(img), synthetic_mammogram())
    (tmp_path / "broken.dcm").write_bytes(b"no")
    out = tmp_path / "out"
    rc = main(["scan", str(img), str(tmp_path / "broken.dcm"), "-o", str(out), "--models-dir",
               str(models), "--pixel-spacing", str(19.2 / SIDE), "--no-progress", "--top-k", "5"])
    err = capsys.readouterr().err
    assert rc == 3 and "broken.dcm" in err
    amap = np.load(out / "case_L_MLO_map.npy", allow_pickle=False)
    assert amap.dtype == np.float32 and amap.shape == GRID
    d = json.loads((out / "case_L_MLO_candidates.json").read_text())
    assert d["schema"] == CANDIDATES_SCHEMA and d["source"] == str(img)
    assert d["window"]["side_px"] == SIDE and d["map"]["downsampling"] == STRIDE
    c0 = d["candidates"][0]
    assert {"x", "y", "side", "p_abnormal", "call", "probabilities"} <= set(c0)
    assert abs(c0["y"] - BLOB[0]) < SIDE // 2 and abs(c0["x"] - BLOB[1]) < SIDE // 2
    assert len(d["candidates"]) == 5
    # each candidate keeps its source's identifiers and its window (io.SourceRef)
    assert c0["source_ref"] == {"path": str(img), "window": [c0["box"]["top"], c0["box"]["left"], SIDE]}
    with open(out / "candidates.csv") as fh:
        rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    assert len(rows) == 5 and rows[0]["rank"] == "1" and int(rows[0]["x"]) == c0["x"]
    png = cv2.imread(str(out / "case_L_MLO_map.png"))
    assert png is not None and png.shape[:2] == (SHAPE[0] + TEXT_STRIP, SHAPE[1] + BAR_STRIP)
    assert c0["conformal_level"] == 0.9 and c0["conformal_set"] is not None  # every call carries its set
    assert set(rows[0]) >= {"conformal_set", "conformal_level", "warnings"} and rows[0]["conformal_level"] == "0.90"
    band = d["map"]["unscanned_band"]
    assert band["unit"] == "mm" and band["outer"] > 0  # the skin-line band is stated


def test_map_picture_has_colour_bar_hatched_unscanned_band_and_damped_boundary():
    image = synthetic_mammogram()
    amap = np.full(GRID, np.nan, np.float32)
    amap[5:15, 2:12] = 0.9  # one uniform square of high P(abnormal)
    cov = np.zeros(GRID, np.int32)
    cov[5:15, 2:12] = 16
    cov[5, 2:12] = 2  # the square's top row: covered by few windows
    tissue = image > 0.1 * 65535
    pic = map_overlay(image, amap, fs=65535, coverage=cov, tissue=tissue, unscanned=12.3)
    h, w = SHAPE
    assert pic.shape == (h + TEXT_STRIP, w + BAR_STRIP, 3)
    bar = pic[30:h - 20, w + 12]  # the colour bar: red at the top (1.0), blue at the bottom (0.0)
    top, low = bar[0].astype(int), bar[-1].astype(int)
    assert top[0] > top[2] + 80 and low[2] > low[0] + 80
    assert (pic[h:, :w] < 200).any()  # the notes are written below the picture

    def redness(rows):
        px = pic[rows[0] * STRIDE + 10:rows[1] * STRIDE - 10, 4 * STRIDE:8 * STRIDE].astype(int)
        return float((px[..., 0] - px[..., 2]).mean())
    assert redness((5, 6)) < redness((8, 12))  # the few-window boundary row is fainter
    hatched = (pic[:h, :w, 0] == 0) & (pic[:h, :w, 1] == 200) & (pic[:h, :w, 2] == 255)
    assert hatched[tissue].any() and not hatched[6 * STRIDE:14 * STRIDE, 3 * STRIDE:11 * STRIDE].any()
    assert not hatched[~tissue].any()


def test_cli_without_pixel_size_says_how_to_give_it(models, tmp_path, capsys):
    img = tmp_path / "plain.png"
    assert cv2.imwrite(str(img), synthetic_mammogram())
    rc = main(["scan", str(img), "-o", str(tmp_path / "o"), "--models-dir", str(models), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 1 and "plain.png" in err and "--pixel-spacing" in err
    with pytest.raises(SystemExit) as exc:  # refused at parse time (issue 26)
        main(["scan", str(img), "-o", str(tmp_path / "o"), "--stride", "0"])
    assert exc.value.code == 2
    rc = main(["scan", str(img), "-o", str(tmp_path / "o"), "--models-dir", str(models),
               "--window-px", "150", "--map-members", "tiny_mass_calc_0", "--no-progress"])
    assert rc == 1 and "give no P(baseline)" in capsys.readouterr().err


def test_scan_help_states_the_coordinate_origin(capsys):
    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    out = capsys.readouterr().out
    assert "TOP-LEFT corner" in out and "mammo.candidates/1" in out


@pytest.mark.shared
def test_default_window_is_the_training_datas_median_lesion_window(mias_dir):
    from mammo_core.datasets.mias import eligibility, parse_info, protocol_side
    from mammo_core.mammogram import MINI_MIAS_SPACING_MM

    info = parse_info(mias_dir / "Info.txt")
    sides = [protocol_side(le.radius, (1024, 1024)) for le in info.lesions if eligibility(le) is None]
    assert float(np.median(sides)) * MINI_MIAS_SPACING_MM == pytest.approx(DEFAULT_WINDOW_MM)


@pytest.mark.shared
def test_mammo_scan_on_a_real_mini_mias_image(mias_dir, models, tmp_path, capsys):
    """`mammo scan` on mdb005 (200 µm default spacing -> 96 px windows, stride 24): map and
    candidates written, the candidates inside the breast and in the JSON's coordinate frame."""
    out = tmp_path / "o"
    rc = main(["scan", str(mias_dir / "mdb005.png"), "-o", str(out), "--models-dir", str(models),
               "--no-progress", "--top-k", "3"])
    assert rc == 0, capsys.readouterr().err
    amap = np.load(out / "mdb005_map.npy", allow_pickle=False)
    assert amap.shape == (43, 43) and np.isfinite(amap).any() and np.isnan(amap).any()
    d = json.loads((out / "mdb005_candidates.json").read_text())
    assert d["window"]["side_px"] == 96 and d["window"]["side_mm"] == pytest.approx(19.2)
    assert d["image"]["spacing_source"].startswith("mini-MIAS")
    img = read_mammogram(mias_dir / "mdb005.png").pixels
    for c in d["candidates"]:
        assert img[c["y"], c["x"]] > 20  # the window centre lies on the breast, rows from the top


# --------------------------------------------------------------------------- --map-tta
@pytest.mark.parametrize("bad", ["dihedral8", "Card", "", None])
def test_scan_settings_refuse_an_unknown_map_tta(bad):
    from mammo_core.errors import MammoError

    with pytest.raises(MammoError, match=r"map TTA must be 'none' or 'card', got"):
        ScanSettings(map_tta=bad)


def test_cli_refuses_an_unknown_map_tta(tmp_path, capsys):
    img = tmp_path / "s.png"
    assert cv2.imwrite(str(img), synthetic_mammogram())
    with pytest.raises(SystemExit) as exc:
        main(["scan", str(img), "-o", str(tmp_path / "o"), "--map-tta", "dihedral8"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--map-tta" in err and "'none', 'card'" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def dihedral_models(tmp_path_factory):
    """One P(baseline) bundle (no ensemble) whose card asks for the 8 dihedral views."""
    from mammo_core.bundle import write_manifest

    root = models_dir_with(tmp_path_factory.mktemp("d8"), ["baseline_mass_calc"], ensemble=False)
    card_path = root / "tiny_baseline_mass_calc_0" / "card.json"
    card = json.loads(card_path.read_text())
    card["inference"] = {"tta": "dihedral8"}
    card_path.write_text(json.dumps(card, indent=2))
    write_manifest(root)
    return root


def test_cli_map_tta_none_and_card_run_and_state_the_views(dihedral_models, tmp_path, capsys):
    """`--map-tta none` scores one view per window although the card asks for 8 (approximate,
    stated); `--map-tta card` runs the card's dihedral8 (exact); the JSON and the summary line
    name the TTA each member ran with, and the two maps differ."""
    img = tmp_path / "case_L_CC.png"
    assert cv2.imwrite(str(img), synthetic_mammogram())
    name = "tiny_baseline_mass_calc_0"
    maps, docs = {}, {}
    for tta in ("none", "card"):
        out = tmp_path / tta
        rc = main(["scan", str(img), "-o", str(out), "--models-dir", str(dihedral_models), "--model", name,
                   "--window-px", str(SIDE), "--map-tta", tta, "--top-k", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert rc == 0, err
        maps[tta] = np.load(out / "case_L_CC_map.npy", allow_pickle=False)
        docs[tta] = d = json.loads((out / "case_L_CC_candidates.json").read_text())
        views = "none" if tta == "none" else "dihedral8"
        assert d["map"]["tta"] == tta and d["map"]["member_tta"] == {name: views}
        assert d["map"]["members"] == [name] and d["map"]["exact"] is (tta == "card")
        assert f"map members: {name} (TTA {views})" in err
        assert ("approximate: one view per window" in err) is (tta == "none")
    both = np.isfinite(maps["none"])
    assert np.array_equal(both, np.isfinite(maps["card"])) and both.any()
    assert not np.allclose(maps["none"][both], maps["card"][both])  # the 8 views were averaged


def test_scan_result_states_member_tta_from_the_session(dihedral_models, tmp_path):
    s = Session(dihedral_models)
    name = "tiny_baseline_mass_calc_0"
    assert s.load([name]) == [] and s.tta_of(name) == "dihedral8"
    path = tmp_path / "s.png"
    assert cv2.imwrite(str(path), synthetic_mammogram())
    m = read_mammogram(path)
    res = scan_mammogram(m, s, ScanSettings(window_px=SIDE, map_tta="card", top_k=0))
    assert res.member_tta == {name: s.tta_of(name)} and res.exact
    assert res.members_text() == f"{name} (TTA dihedral8)"
    assert res.candidates_json()["map"]["member_tta"] == {name: "dihedral8"}
