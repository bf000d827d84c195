"""`mammo dataset build-mias`: the mini-MIAS reference patch protocol v1, pixel for pixel.

The reference implementation below is written plainly from the protocol text in
../shared/data/mini-mias/README.md and shares no code with mammo_core.datasets: the builder's
output must match it on synthetic mammograms with known lesions and on the shared set.
"""
from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest

from mammo_core.cli import main
from mammo_core.datasets.mias import build_mias, cut_pair, parse_info
from mammo_core.protocol import Jitter

LABEL = {("CIRC", "B"): 1, ("SPIC", "B"): 1, ("MISC", "B"): 1,
         ("CIRC", "M"): 2, ("SPIC", "M"): 2, ("MISC", "M"): 2,
         ("CALC", "B"): 3, ("CALC", "M"): 4}


# ------------------------------------------------------------- independent reference ----
def reference_pair(img, cls, sev, x, y, r):
    """Protocol v1 for one abnormality: (baseline patch, lesion patch, label, where) or
    (None, reason). Written from the README text only."""
    if (cls, sev) not in LABEL:
        return None, "class"
    H, W = img.shape
    s = min(max(2 * r, 96), 1024)
    s = min(s, H, W)          # images smaller than 1024 (synthetic only): the image's side
    row, col = H - y, x
    top, left = row - s // 2, col - s // 2
    top = max(0, min(top, H - s))
    left = max(0, min(left, W - s))
    win = img[top:top + s, left:left + s]
    if np.sum(win > 20) < 0.5 * s * s:
        return None, "tissue"
    best = None
    for name, t, l in (("left", top, left - s), ("right", top, left + s),
                       ("above", top - s, left), ("below", top + s, left)):
        if t < 0 or l < 0 or t + s > H or l + s > W:
            continue
        frac = np.mean(img[t:t + s, l:l + s] > 20)
        if frac >= 0.9 and (best is None or frac > best[0]):
            best = (frac, name, t, l)
    if best is None:
        return None, "baseline"
    _, name, t, l = best
    base = cv2.resize(img[t:t + s, l:l + s], (150, 150), interpolation=cv2.INTER_NEAREST)
    les = cv2.resize(win, (150, 150), interpolation=cv2.INTER_NEAREST)
    return (base.astype(np.uint16) * 257, les.astype(np.uint16) * 257, LABEL[(cls, sev)],
            (name, top, left, s)), None


def reference_arrays(images: dict, rows: list):
    """rows: (image name, cls, sev, x, y, r) in output order -> (tensor, labels, wheres)."""
    tensor, labels, wheres = [], [], []
    for name, cls, sev, x, y, r in rows:
        res, _ = reference_pair(images[name], cls, sev, x, y, r)
        if res is None:
            continue
        tensor += [res[0], res[1]]
        labels += [0, res[2]]
        wheres.append(res[3])
    return np.array(tensor, np.uint16).reshape(-1, 150, 150), np.array(labels), wheres


# ------------------------------------------------------------- synthetic mammograms ----
def breast_image(rng, shape=(1024, 1024), cx=0.0, cy=0.5, rx=0.55, ry=0.45):
    """Background 0..15 with an elliptical "breast" of textured tissue 40..230."""
    H, W = shape
    yy, xx = np.mgrid[0:H, 0:W]
    inside = ((xx / W - cx) / rx) ** 2 + ((yy / H - cy) / ry) ** 2 <= 1
    img = rng.integers(0, 16, size=shape).astype(np.uint8)
    img[inside] = rng.integers(40, 231, size=int(inside.sum())).astype(np.uint8)
    return img


def full_tissue(rng, shape=(1024, 1024)):
    return rng.integers(50, 201, size=shape).astype(np.uint8)


def write_set(tmp_path, images: dict, info_rows: list[str], fmt=".pgm"):
    d = tmp_path / "mias"
    d.mkdir()
    for name, img in images.items():
        ext = fmt if not isinstance(fmt, dict) else fmt[name]
        assert cv2.imwrite(str(d / f"{name}{ext}"), img)
    header = "MIAS MiniMammographic Database\nheader text mdb-like words\n=====\n\n"
    footer = "\n=================================================================\n"
    (d / "Info.txt").write_text(header + "\n".join(info_rows) + footer)
    return d


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(42)
    images = {}
    # mdb001: breast on the left, several lesions of every kind of interest
    images["mdb001"] = breast_image(rng)
    # mdb002: whole field tissue with dark columns painted into the candidate windows of a
    # lesion at row 500, col 500, side 96 (window top=left=452): left 88/96, right 90/96,
    # above 93/96 and below 93/96 tissue -> above (tie with below, above comes first)
    img = full_tissue(rng)
    img[452:548, 356:364] = 0    # left candidate: 8 dark columns
    img[452:548, 548:554] = 0    # right candidate: 6 dark columns
    img[356:452, 452:455] = 0    # above: 3 dark columns
    img[548:644, 452:455] = 0    # below: 3 dark columns
    images["mdb002"] = img
    # mdb003: right ties with below as the best (left 5 dark cols, right 2, above 4, below 2)
    img = full_tissue(rng)
    img[452:548, 356:361] = 0
    img[452:548, 548:550] = 0
    img[356:452, 452:456] = 0
    img[548:644, 452:454] = 0
    images["mdb003"] = img
    # mdb004: a smaller, non-square image (rows follow H - Y with H = 700)
    images["mdb004"] = breast_image(rng, shape=(700, 500), rx=0.8)
    rows = [
        ("mdb001", "CIRC", "B", 250, 512, 30),    # inside, all four candidates full: tie -> left
        ("mdb001", "SPIC", "M", 10, 512, 40),      # at the left edge: shifted inside, not shrunk
        ("mdb001", "CALC", "M", 900, 512, 30),     # in the background: < 50 % tissue
        ("mdb001", "MISC", "M", 540, 512, 70),     # at the breast's edge
        ("mdb001", "ARCH", "B", 300, 300, 30),     # no label in the scheme
        ("mdb002", "CIRC", "M", 500, 524, 48),     # above wins a tie with below
        ("mdb003", "CALC", "B", 500, 524, 20),     # right wins a tie with below
        ("mdb003", "CALC", "B", 300, 500, 600),    # side 1024 = whole image: no baseline fits
        ("mdb004", "MISC", "B", 100, 350, 60),
        ("mdb004", "CALC", "M", 60, 690, 10),      # near the bottom edge (row 10)
    ]
    info = []
    for name, cls, sev, x, y, r in rows:
        info.append(f"{name} F {cls} {sev} {x} {y} {r}")
    info.insert(5, "mdb001 F CALC M *NOTE 3*")
    info.append("mdb005 G NORM ")
    folder = write_set(tmp_path, images, info, fmt={"mdb001": ".pgm", "mdb002": ".png",
                                                    "mdb003": ".pgm", "mdb004": ".png"})
    return folder, images, rows


def test_protocol_matches_reference_on_synthetic(synthetic, tmp_path):
    folder, images, rows = synthetic
    out = tmp_path / "out"
    res = build_mias(folder, folder / "Info.txt", out, test_fraction=0, progress=False)
    ref_t, ref_l, wheres = reference_arrays(images, rows)
    t = np.load(out / "train_tensor.npy", allow_pickle=False)
    lab = np.load(out / "train_labels.npy", allow_pickle=False)
    assert t.dtype == np.uint16 and t.shape == ref_t.shape == (14, 150, 150)
    assert np.array_equal(lab, ref_l)
    assert np.array_equal(t, ref_t)
    assert np.load(out / "public_test_tensor.npy").shape == (0, 150, 150)
    # the hand-made cases chose what the protocol says
    sides = [w[0] for w in wheres]
    assert sides[0] == "left"                   # four-way tie
    assert wheres[1] == ("right", 464, 0, 96)   # edge lesion shifted inside, not shrunk
    assert sides[3] == "above" and sides[4] == "right"
    # metadata agrees with the reference's windows
    with open(out / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    abn = [m for m in meta if m["role"] == "abnormality"]
    assert [(m["baseline_side"], int(m["top"]), int(m["left"]), int(m["side"])) for m in abn] == wheres
    assert [int(m["index"]) for m in meta] == list(range(len(meta)))
    assert {m["patient"] for m in meta} == {"1", "2"}   # mdb001/mdb002 -> 1, mdb003/mdb004 -> 2
    # skips and their reasons
    with open(out / "skipped.csv", newline="") as fh:
        skipped = {(r["lesion"], r["reason"].split(" ")[0]) for r in csv.DictReader(fh)}
    reasons = {r["reason"] for r in res.skipped}
    assert any("ARCH" in r for r in reasons)
    assert any("NOTE 3" in r for r in reasons)
    assert any(r.startswith("abnormality window only") for r in reasons)
    assert any(r.startswith("no baseline window") for r in reasons)
    assert len(skipped) == 4 and res.failures == []


def test_random_lesions_match_reference(tmp_path):
    rng = np.random.default_rng(7)
    images, rows = {}, []
    classes = list(LABEL)
    for n in range(1, 5):
        name = f"mdb{n:03d}"
        images[name] = breast_image(rng, cx=float(rng.choice([0.0, 1.0])), rx=float(rng.uniform(0.3, 0.7)))
        for _ in range(12):
            cls, sev = classes[rng.integers(len(classes))]
            rows.append((name, cls, sev, int(rng.integers(0, 1024)), int(rng.integers(1, 1024)),
                         int(rng.choice([5, 30, 47, 48, 49, 80, 150, 300]))))
    folder = write_set(tmp_path, images, [f"{r[0]} G {r[1]} {r[2]} {r[3]} {r[4]} {r[5]}" for r in rows])
    out = tmp_path / "out"
    build_mias(folder, folder / "Info.txt", out, test_fraction=0, progress=False)
    ref_t, ref_l, _ = reference_arrays(images, rows)
    assert ref_t.shape[0] >= 20        # the draw cut a fair number of pairs
    assert np.array_equal(np.load(out / "train_labels.npy"), ref_l)
    assert np.array_equal(np.load(out / "train_tensor.npy"), ref_t)


def test_split_by_woman_reproducible_and_jitter_train_only(synthetic, tmp_path):
    folder, _, _ = synthetic
    # more women: copy the set under new numbers so a split is possible
    rng = np.random.default_rng(3)
    extra = []
    for n in range(5, 25):
        img = breast_image(rng)
        cv2.imwrite(str(folder / f"mdb{n:03d}.png"), img)
        extra.append(f"mdb{n:03d} F {'CIRC' if n % 2 else 'CALC'} {'B' if n % 3 else 'M'} 250 512 30")
    text = (folder / "Info.txt").read_text().replace("mdb005 G NORM ", "\n".join(extra))
    (folder / "Info.txt").write_text(text)
    a, b = tmp_path / "a", tmp_path / "b"
    main(["dataset", "build-mias", "--images", str(folder), "--info", str(folder / "Info.txt"),
          "--out", str(a), "--seed", "5", "--jitter", "2", "--no-progress"])
    main(["dataset", "build-mias", "--images", str(folder), "--info", str(folder / "Info.txt"),
          "--out", str(b), "--seed", "5", "--jitter", "2", "--no-progress"])
    for f in ("train_tensor.npy", "train_labels.npy", "public_test_tensor.npy", "public_test_labels.npy"):
        assert np.array_equal(np.load(a / f), np.load(b / f))
    assert (a / "metadata.csv").read_text() == (b / "metadata.csv").read_text()
    with open(a / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    train_p = {m["patient"] for m in meta if m["split"] == "train"}
    test_p = {m["patient"] for m in meta if m["split"] == "public_test"}
    assert train_p and test_p and not (train_p & test_p)
    assert all(m["jitter"] == "0" for m in meta if m["split"] == "public_test")
    jit = [m for m in meta if m["split"] == "train" and m["jitter"] != "0"]
    assert jit and {m["jitter"] for m in jit} <= {"1", "2"}
    labels = np.load(a / "train_labels.npy")
    assert np.all(labels[0::2] == 0) and np.all(labels[1::2] > 0)
    info = json.loads((a / "build.json").read_text())
    assert info["jitter_copies_per_train_lesion"] == 2
    for png in a.glob("contact_sheet_*.png"):
        sheet = cv2.imread(str(png))
        assert sheet is not None and sheet.shape[1] > 600


def test_jittered_window_moves_and_scales():
    rng = np.random.default_rng(0)
    img = full_tissue(rng)
    les = parse_info_row("mdb001 F CIRC B 500 524 48")
    plain = cut_pair(img, les)
    moved = cut_pair(img, les, Jitter(dx=10, dy=-5, scale=1.5))
    assert (plain.lesion_box.top, plain.lesion_box.left, plain.lesion_box.height) == (452, 452, 96)
    assert moved.lesion_box.height == 144
    assert (moved.lesion_box.top, moved.lesion_box.left) == (500 - 5 - 72, 500 + 10 - 72)
    assert moved.jitter.dx == 10


def parse_info_row(row: str):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "Info.txt"
        p.write_text(row + "\n")
        return parse_info(p).lesions[0]


def test_bad_input_is_reported(tmp_path, capsys):
    rng = np.random.default_rng(1)
    folder = write_set(tmp_path, {"mdb001": breast_image(rng)},
                       ["mdb001 F CIRC B 250 512 30", "mdb002 F CIRC M 250 512 30"])
    (folder / "mdb003.pgm").write_bytes(b"P5 garbage")
    with open(folder / "Info.txt", "a") as fh:
        fh.write("mdb003 F CIRC M 250 512 30\n")
    rc = main(["dataset", "build-mias", "--images", str(folder), "--info", str(folder / "Info.txt"),
               "--out", str(tmp_path / "o"), "--test-fraction", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 3
    assert "mdb002" in err and "not found" in err
    assert "mdb003" in err
    assert np.load(tmp_path / "o" / "train_labels.npy").tolist() == [0, 1]
    rc = main(["dataset", "build-mias", "--images", str(folder), "--info", str(tmp_path / "nope.txt"),
               "--out", str(tmp_path / "o2"), "--no-progress"])
    assert rc == 1 and "nope.txt" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()
    with pytest.raises(SystemExit) as e:
        main(["dataset", "build-mias", "--images", str(folder), "--info", "x", "--out", "y",
              "--test-fraction", "1.5"])
    assert e.value.code == 2


@pytest.mark.shared
def test_shared_set_matches_reference(mias_dir, tmp_path):
    info_rows = []
    for line in (mias_dir / "Info.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 7 and parts[0].startswith("mdb") and parts[4].isdigit():
            info_rows.append((parts[0], parts[2], parts[3], int(parts[4]), int(parts[5]), int(parts[6])))
    names = sorted({r[0] for r in info_rows})
    images = {n: cv2.imread(str(mias_dir / f"{n}.png"), cv2.IMREAD_UNCHANGED) for n in names}
    order = sorted(range(len(info_rows)), key=lambda i: (info_rows[i][0], i))
    ref_t, ref_l, _ = reference_arrays(images, [info_rows[i] for i in order])
    out = tmp_path / "all"
    build_mias(mias_dir, mias_dir / "Info.txt", out, test_fraction=0, progress=False)
    assert np.array_equal(np.load(out / "train_labels.npy"), ref_l)
    assert np.array_equal(np.load(out / "train_tensor.npy"), ref_t)
    # the default split: both files pair-consistent for `mammo dataset info`
    split = tmp_path / "split"
    assert main(["dataset", "build-mias", "--images", str(mias_dir), "--info",
                 str(mias_dir / "Info.txt"), "--out", str(split), "--no-progress"]) == 0
    from mammo_core.commands.dataset_info import dataset_summary

    summary = dataset_summary(split)
    assert summary["splits"]["train"]["pairs_ok"] is True
    assert summary["splits"]["public_test"]["pairs_ok"] is True
    n_all = ref_l.size
    n_train, n_test = summary["splits"]["train"]["n"], summary["splits"]["public_test"]["n"]
    assert n_train + n_test == n_all and 0.1 < n_test / n_all < 0.35


def test_16bit_source_gives_the_same_patches(synthetic, tmp_path):
    """A 16-bit copy (value x 257) of every image: tissue above 20/255 of full scale and values
    kept, so the patches equal those of the 8-bit originals."""
    folder, images, _ = synthetic
    wide = tmp_path / "wide"
    wide.mkdir()
    for name, img in images.items():
        assert cv2.imwrite(str(wide / f"{name}.png"), img.astype(np.uint16) * 257)
    a, b = tmp_path / "a", tmp_path / "b"
    build_mias(folder, folder / "Info.txt", a, test_fraction=0, progress=False)
    build_mias(wide, folder / "Info.txt", b, test_fraction=0, progress=False)
    assert np.array_equal(np.load(a / "train_tensor.npy"), np.load(b / "train_tensor.npy"))


def test_failed_write_leaves_no_half_set(synthetic, tmp_path, monkeypatch):
    folder, _, _ = synthetic
    out = tmp_path / "out"
    build_mias(folder, folder / "Info.txt", out, test_fraction=0, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def boom(*args, **kwargs):
        raise OSError("disk full")

    from mammo_core.datasets import writer

    monkeypatch.setattr(writer, "write_sheet", boom)
    with pytest.raises(OSError):
        build_mias(folder, folder / "Info.txt", out, test_fraction=0.5, seed=9, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []
    with pytest.raises(OSError):
        build_mias(folder, folder / "Info.txt", tmp_path / "fresh", progress=False)
    assert not (tmp_path / "fresh").exists()


def test_extra_baselines_train_women_only_and_test_split_unchanged(synthetic, tmp_path):
    """--extra-baselines adds >= 90 %-tissue windows away from lesions, from TRAIN women only,
    each with its woman; public_test_* stays byte-identical to the build without them."""
    from mammo_core.datasets.mias import EXCLUDE_FACTOR, protocol_side

    folder, _, _ = synthetic
    rng = np.random.default_rng(4)
    extra = []
    for n in range(5, 29):
        cv2.imwrite(str(folder / f"mdb{n:03d}.png"), breast_image(rng))
        if n % 4 == 0:
            extra.append(f"mdb{n:03d} F NORM")
        else:
            extra.append(f"mdb{n:03d} F {'CIRC' if n % 2 else 'CALC'} {'B' if n % 3 else 'M'} 250 512 30")
    text = (folder / "Info.txt").read_text().replace("mdb005 G NORM ", "\n".join(extra))
    (folder / "Info.txt").write_text(text)
    plain, more = tmp_path / "plain", tmp_path / "more"
    base = ["dataset", "build-mias", "--images", str(folder), "--info", str(folder / "Info.txt"),
            "--seed", "5", "--jitter", "1", "--no-progress"]
    assert main([*base, "--out", str(plain)]) == 0
    assert main([*base, "--out", str(more), "--extra-baselines", "2"]) == 0
    for f in ("public_test_tensor.npy", "public_test_labels.npy"):
        assert (plain / f).read_bytes() == (more / f).read_bytes()
    t0, t1 = np.load(plain / "train_tensor.npy"), np.load(more / "train_tensor.npy")
    assert np.array_equal(t1[:len(t0)], t0)  # the pairs come first, unchanged
    with open(more / "metadata.csv", newline="") as fh:
        meta = list(csv.DictReader(fh))
    ext = [m for m in meta if m["role"] == "extra_baseline"]
    assert len(ext) == len(t1) - len(t0) > 0
    test_women = {m["patient"] for m in meta if m["split"] == "public_test"}
    assert all(m["split"] == "train" and m["label"] == "0" and m["patient"] not in test_women for m in ext)
    assert {m["image"] for m in ext} & {f"mdb{n:03d}" for n in range(8, 29, 4)}  # normal mammograms too
    labels = np.load(more / "train_labels.npy")
    assert np.all(labels[len(t0):] == 0)
    sides = {int(m["side"]) for m in meta if m["split"] == "train" and m["role"] == "abnormality"
             and m["jitter"] == "0"}
    info = {r.split()[0]: r.split() for r in (folder / "Info.txt").read_text().splitlines()
            if r.startswith("mdb") and len(r.split()) == 7}
    for m in ext:
        assert float(m["window_tissue"]) >= 0.9 and int(m["side"]) in sides
        row = info.get(m["image"])
        if row:  # keeps out of the square of EXCLUDE_FACTOR x the protocol side around the lesion
            r, c, rad = 1024 - int(row[5]), int(row[4]), int(row[6])
            half = EXCLUDE_FACTOR * protocol_side(rad, (1024, 1024)) // 2
            top, left, side = int(m["top"]), int(m["left"]), int(m["side"])
            assert (top + side <= r - half or top >= r + half or left + side <= c - half
                    or left >= c + half)
    assert json.loads((more / "build.json").read_text())["extra_baselines"] == len(ext)


def test_random_tissue_windows_respect_tissue_and_exclusions():
    from mammo_core.datasets.windows import random_tissue_windows
    from mammo_core.protocol import Box, tissue_threshold

    img = np.zeros((400, 400), np.uint8)
    img[:, :200] = 200  # tissue only on the left half
    ex = Box(0, 0, 200, 200)  # and the top-left quarter is excluded
    wins = random_tissue_windows(img, [50, 60], 5, np.random.default_rng(0), [ex], tissue_threshold(img))
    assert len(wins) == 5
    for i, b in enumerate(wins):
        assert b.inside(img.shape) and b.height in (50, 60) and not b.overlaps(ex)
        assert np.count_nonzero(b.slice(img) > 20) >= 0.9 * b.area
        assert not any(b.overlaps(o) for o in wins[i + 1:])
    assert random_tissue_windows(np.zeros((100, 100), np.uint8), [50], 3, np.random.default_rng(0)) == []
