"""`mammo scan`: abnormality map and ranked candidate regions of whole mammograms
(mammo_core.scan, the same code the viewer's map uses)."""
from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import os
import sys
from pathlib import Path

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path, atomic_write_bytes, atomic_write_text
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe
from mammo_core.mammogram import read_mammogram, spacing_problem
from mammo_core.paths import path_arg
from mammo_core.report import csv_cell
from mammo_core.safeio import shown
from mammo_core.scan import DEFAULT_WINDOW_MM, ScanSettings, map_overlay, scan_mammogram
from mammo_core.session import ENSEMBLE, Session

log = logging.getLogger(__name__)

EPILOG = f"""\
examples:
  mammo scan mdb005.png -o scans/
  mammo scan study/*.dcm -o scans/ --stride 0.5 --map-members vgg16b4_baseline_mass_calc
  mammo scan scan.png -o scans/ --pixel-spacing 0.05

writes per IMAGE:
  DIR/<stem>_map.npy         float32 P(abnormal), one value per stride x stride cell (the
                             downsampling factor is the stride in pixels, written in the JSON);
                             NaN where no window was scored (background, labels, pectoral muscle)
  DIR/<stem>_map.png         the mammogram with the map overlaid and the candidates numbered
  DIR/<stem>_candidates.json {{"schema": "mammo.candidates/1", "source": ..., "candidates":
                             [{{"x", "y", "side", "p_abnormal", "call", "probabilities"}}, ...]}}
                             best first
and DIR/candidates.csv for all images.

Coordinates: x, y are the window centre (column, row) in source pixels with the origin at the
TOP-LEFT corner of the image as stored (mini-MIAS's Info.txt counts y from the bottom:
row = 1024 - Y). side is the window side in source pixels.

Windows are cut exactly as the training data was (reference patch protocol v1: square window
-> 150 x 150 INTER_NEAREST, same intensity scaling). Window side default: the training data's
median lesion window (19.2 mm = 96 px at mini-MIAS's 200 um); pixel size from DICOM
PixelSpacing / ImagerPixelSpacing, mini-MIAS 200 um, or --pixel-spacing.
The map's P(abnormal) is the ensemble's 1 - P(baseline), by default from its fastest member
that estimates P(baseline), one view per window (--map-members all --map-tta card: every such member
with its card's test-time augmentation, the ensemble's exact value);
the members used are stated in the output. The best windows after non-maximum suppression
(3 x top-k) are re-classified with every model and the ensemble and ranked by its P(abnormal).
Only windows with >= 90 % breast are scored (--min-tissue): the models call windows with
background in them abnormal.

Exit codes: 0 every image scanned, 1 bad input or model, 2 usage error,
3 some images could not be read or scanned (the rest were written).
Outputs never replace an input: an image whose output would overwrite one of the inputs is
reported as failed. File names that are not valid UTF-8 are written with \\xNN escapes.
{DISCLAIMER}.
"""

CSV_COLUMNS = ("source", "rank", "x", "y", "side", "p_abnormal", "p_map", "call", "baseline",
               "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "scan",
        help="abnormality map + ranked candidate regions of whole mammograms",
        description="Slide the protocol-v1 window over the breast of whole mammograms, map the "
                    "ensemble's P(abnormal) and rank candidate regions. "
                    + DISCLAIMER.capitalize() + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="whole mammograms (.dcm .png .pgm .tif .npy)")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--model", default="ensemble", metavar="NAME|PATH|ensemble",
                   help="bundle or ensemble to use (default: the bundled ensemble)")
    p.add_argument("--models-dir", type=path_arg, default=None, metavar="DIR",
                   help="folder of bundles (default: assets/models)")
    p.add_argument("--window-mm", type=float, default=None, metavar="MM",
                   help="window side in mm (default 19.2: the training data's median lesion window)")
    p.add_argument("--window-px", type=int, default=None, metavar="PX",
                   help="window side in pixels (overrides --window-mm; no pixel size needed)")
    p.add_argument("--pixel-spacing", type=float, default=None, metavar="MM",
                   help="pixel size in mm when the file does not say (or to override it)")
    p.add_argument("--stride", type=float, default=0.25, metavar="F",
                   help="window stride as a fraction of the side (default 0.25)")
    p.add_argument("--top-k", type=int, default=10, metavar="K", help="candidates per image (default 10)")
    p.add_argument("--map-members", default="fastest", metavar="fastest|all|NAME[,NAME]",
                   help="members that compute the map: 'fastest' (default: the smallest member "
                        "that estimates P(baseline), an approximation), 'all' (every such member: "
                        "the ensemble's exact P(abnormal)) or names")
    p.add_argument("--map-tta", choices=("none", "card"), default="none",
                   help="test-time augmentation of the map pass: 'none' (default: one view per "
                        "window, 8x cheaper, an approximation) or 'card' (each card's own, e.g. the "
                        "8 dihedral views: with --map-members all, the ensemble's exact value); "
                        "candidates are always re-classified with every model as its card says")
    p.add_argument("--min-tissue", type=float, default=0.9, metavar="F",
                   help="breast fraction a window needs to be scored (default 0.9)")
    p.add_argument("--keep-pectoral", action="store_true",
                   help="do not try to drop the pectoral muscle from the tissue mask")
    p.add_argument("--batch-size", type=int, default=64, metavar="N", help="windows per batch (default 64)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def _approx(res) -> str:
    """Why a map is not the ensemble's exact P(abnormal)."""
    return "one view per window" if res.settings.map_tta == "none" else "a subset of the members"


def _usage(msg: str) -> int:
    print(f"mammo scan: error: {msg}", file=sys.stderr)
    return 2


def _output_problem(out: str) -> str | None:
    """Why the output folder cannot be used (None when it can); checked before models load."""
    if out == "":
        return "-o: empty folder name"
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"-o {shown(folder)}: cannot create the output folder: {exc.strerror or exc}"
    if not folder.is_dir():
        return f"-o {shown(folder)}: is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"-o {shown(folder)}: cannot write in this folder"
    return None


def _free_stem(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem_2``, ``stem_3``... when an earlier image of this run took it."""
    name, k = stem, 1
    while name in taken:
        k += 1
        name = f"{stem}_{k}"
    taken.add(name)
    return name


def run(args) -> int:
    try:
        settings = ScanSettings(
            window_mm=args.window_mm if args.window_mm is not None else DEFAULT_WINDOW_MM,
            stride_fraction=args.stride, batch_size=args.batch_size, top_k=args.top_k,
            members=args.map_members if args.map_members in ("fastest", "all") else
            tuple(m.strip() for m in args.map_members.split(",") if m.strip()),
            min_tissue=args.min_tissue, map_tta=args.map_tta,
            drop_pectoral=not args.keep_pectoral, window_px=args.window_px)
    except MammoError as err:
        return _usage(err.problem)
    if args.pixel_spacing is not None and spacing_problem(args.pixel_spacing):
        return _usage(f"--pixel-spacing: {spacing_problem(args.pixel_spacing)}")
    why = _output_problem(args.output)
    if why:
        return _usage(why)
    out = Path(args.output)
    inputs = {os.path.realpath(p) for p in args.images}
    if os.path.realpath(out / "candidates.csv") in inputs:
        return _usage(f"-o {shown(out)}: candidates.csv there is one of the inputs; refusing to overwrite it")

    from tqdm import tqdm

    session = Session(args.models_dir)
    if args.model == ENSEMBLE and not session.available():
        raise MammoError("no model bundles found; pass --models-dir or --model PATH", session.models_dir)
    failures = session.load([args.model])
    if failures:
        raise MammoError("; ".join(str(f) for f in failures))
    if not isinstance(settings.members, str):
        usable = session.abnormal_members()
        bad = [m for m in settings.members if m not in usable]
        if bad:
            raise MammoError(f"--map-members: {', '.join(bad)} give no P(baseline); choose among "
                             f"{', '.join(usable) or 'none'}")

    rows: list[dict] = []
    errors = 0
    done_images = 0
    taken: set[str] = set()
    for given in args.images:
        try:
            mammo = read_mammogram(given, spacing_mm=args.pixel_spacing)
            with tqdm(total=0, desc=shown(Path(given).name), unit="win", file=sys.stderr,
                      disable=args.no_progress, leave=False) as bar:
                def prog(d, t, bar=bar):
                    bar.total = t
                    bar.update(d - bar.n)
                res = scan_mammogram(mammo, session, settings, progress=prog)
            stem = _free_stem(mammo.stem, taken)  # two inputs with one stem: keep both
            _write_outputs(out, stem, mammo, res, inputs)
        except MammoError as err:
            log.warning("cannot scan %s: %s", shown(given), shown(err.problem if err.path else err))
            errors += 1
            continue
        except OSError as err:  # a write failed (full disk, folder removed...): the rest goes on
            log.warning("cannot write the outputs of %s: %s: %s", shown(given), shown(err.filename or out),
                        err.strerror or err)
            errors += 1
            continue
        except Exception as err:  # noqa: BLE001 - a bug must not cost the other images
            log.warning("cannot scan %s: internal error: %s: %s (please report it)", shown(given),
                        type(err).__name__, shown(str(err).splitlines()[0] if str(err) else ""))
            errors += 1
            continue
        for k, c in enumerate(res.candidates, 1):
            rows.append({"source": csv_cell(shown(mammo.source)), "rank": k, "x": c.x, "y": c.y,
                         "side": c.side, "p_abnormal": f"{c.p_abnormal:.6f}", "p_map": f"{c.p_map:.6f}",
                         "call": c.call,
                         **{k2: f"{c.probabilities.get(k2, float('nan')):.6f}" for k2 in CSV_COLUMNS[8:]}})
        done_images += 1
        best = res.candidates[0] if res.candidates else None
        print(f"mammo: {shown(mammo.name)}: {len(res.p_abnormal)} windows of {res.window_px} px in "
              f"{res.seconds:.1f} s (map members: {res.members_text()}"
              f"{'' if res.exact else ', approximate: ' + _approx(res)}); best candidate "
              + (f"x={best.x} y={best.y} P(abnormal)={best.p_abnormal:.2f} ({best.call})" if best else "none"),
              file=sys.stderr)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    buf.write(f"# {DISCLAIMER}\n")
    atomic_write_text(out / "candidates.csv", buf.getvalue())
    print(f"mammo: wrote {shown(out)} ({done_images} image(s) scanned, {errors} failed); {DISCLAIMER}",
          file=sys.stderr)
    if errors:
        return 3 if done_images else 1
    return 0


def _write_outputs(out: Path, stem: str, mammo, res, inputs: set[str]) -> None:
    """The three files of one image, each atomic; refused when one would replace an input."""
    import cv2
    import numpy as np

    targets = {k: out / f"{stem}_{k}" for k in ("map.npy", "map.png", "candidates.json")}
    for t in targets.values():
        if os.path.realpath(t) in inputs:
            raise MammoError(f"its output {shown(t)} would overwrite an input; choose another -o folder",
                             mammo.source)
    ok, buf = cv2.imencode(".png", map_overlay(mammo.pixels, res.map, candidates=res.candidates,
                                               fs=mammo.full_scale)[..., ::-1])
    if not ok:
        raise MammoError("cannot encode PNG", targets["map.png"])
    doc = res.candidates_json()
    doc["source"] = shown(doc["source"])
    text = json.dumps(json_safe(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    with atomic_path(targets["map.npy"]) as tmp:
        np.save(tmp, res.map, allow_pickle=False)
    atomic_write_bytes(targets["map.png"], buf.tobytes())
    atomic_write_text(targets["candidates.json"], text)
