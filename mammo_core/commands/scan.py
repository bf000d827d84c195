"""`mammo scan`: abnormality map and ranked candidate regions of whole mammograms
(mammo_core.scan, the same code the viewer's map uses)."""
from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import math
import os
import stat
import sys
import tempfile
import traceback
from pathlib import Path

from mammo_core import DISCLAIMER
from mammo_core.atomic import _link_chain, clean_stale_temps
from mammo_core.cliargs import BATCH_SIZE, BITS, integer, real
from mammo_core.dicom_out import free_stem, scan_dicom_results
from mammo_core.engine import add_engine_arguments, engine_settings
from mammo_core.errors import MammoError
from mammo_core.jsonutil import json_safe
from mammo_core.mammogram import read_mammogram, spacing_problem
from mammo_core.paths import path_arg
from mammo_core.progress import Progress
from mammo_core.report import csv_cell
from mammo_core.safeio import shown
from mammo_core.scan import (
    CANDIDATES_SCHEMA,
    DEFAULT_MAP_MODE,
    DEFAULT_MAX_MINUTES,
    DEFAULT_WINDOW_MM,
    MAP_MODES,
    MIN_WINDOW_PX,
    ScanSettings,
    map_overlay,
    scan_mammogram,
)
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
and DIR/candidates.csv: every candidates JSON in DIR (earlier runs' too), rebuilt after each
image. Each file is written beside its name and moved in whole (the JSON last); a symbolic
link or special file found in DIR is never written through (that image fails); DIR under /dev,
/proc or /sys (directly or through a link) is refused. A lock (DIR/.mammo-scan.lock) keeps a
second scan out of DIR while one runs: the second exits 1 at once with one line.

Cost: an image is refused (that image fails) when its windows x the time per window measured
on the first batches exceed --max-minutes (default {DEFAULT_MAX_MINUTES:g}); the message gives
the estimate and the --max-minutes that allows it. An image with no window of enough breast
fails saying no breast was found. Progress: a bar on a terminal, else one line every 10 s.

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

PROB_COLUMNS = ("baseline", "mass_benign", "mass_malignant", "calcification_benign", "calcification_malignant")
CSV_COLUMNS = ("source", "rank", "x", "y", "side", "p_abnormal", "p_map", "call", *PROB_COLUMNS,
               "conformal_set", "conformal_level", "warnings")


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
    p.add_argument("--window-mm", type=real(0, 1000, lo_open=True), default=None, metavar="MM",
                   help="window side in mm (default 19.2: the training data's median lesion window)")
    p.add_argument("--window-px", type=integer(MIN_WINDOW_PX, 100_000), default=None, metavar="PX",
                   help="window side in pixels (overrides --window-mm; no pixel size needed)")
    p.add_argument("--pixel-spacing", type=real(0, lo_open=True), default=None, metavar="MM",
                   help="pixel size in mm when the file does not say (or to override it)")
    p.add_argument("--stride", type=real(0, 1, lo_open=True), default=0.25, metavar="F",
                   help="window stride as a fraction of the side (default 0.25)")
    p.add_argument("--top-k", type=integer(0, 1000), default=10, metavar="K",
                   help="candidates per image (default 10)")
    p.add_argument("--map-members", default="fastest", metavar="fastest|all|NAME[,NAME]",
                   help="members that compute the map: 'fastest' (default: the smallest member "
                        "that estimates P(baseline), an approximation), 'all' (every such member: "
                        "the ensemble's exact P(abnormal)) or names")
    p.add_argument("--map-tta", choices=("none", "card"), default="none",
                   help="test-time augmentation of the map pass: 'none' (default: one view per "
                        "window, 8x cheaper, an approximation) or 'card' (each card's own, e.g. the "
                        "8 dihedral views: with --map-members all, the ensemble's exact value); "
                        "candidates are always re-classified with every model as its card says")
    p.add_argument("--map-mode", choices=MAP_MODES, default=DEFAULT_MAP_MODE,
                   help=f"how the map gets P(abnormal) per window: 'dense' (the member's trunk once "
                        "over the rescaled image, each window pooled from it: several times faster, "
                        "approximate; pooled-head members with one view only, else windowed with a "
                        "note) or 'windowed' (each window cut and run on its own); default "
                        f"{DEFAULT_MAP_MODE} (docs/whole_mammograms.md)")
    p.add_argument("--min-tissue", type=real(0, 1), default=0.9, metavar="F",
                   help="breast fraction a window needs to be scored (default 0.9)")
    p.add_argument("--keep-pectoral", action="store_true",
                   help="do not try to drop the pectoral muscle from the tissue mask")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=64, metavar="N",
                   help="windows per batch (default 64)")
    p.add_argument("--bits", type=BITS, default=None, metavar="N",
                   help="16-bit PNG/TIFF/.npy images hold only N bits (1-16; e.g. 12 for a 12-bit "
                        "mammogram saved in a 16-bit PNG), as in mammo predict; DICOM uses its own "
                        "BitsStored")
    p.add_argument("--max-minutes", type=real(0, 1e6, lo_open=True), default=DEFAULT_MAX_MINUTES,
                   metavar="MIN",
                   help=f"refuse an image whose scan is estimated to take longer (default "
                        f"{DEFAULT_MAX_MINUTES:g}; windows x the time per window measured on the "
                        "first batches)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (terminal) or heartbeat line every 10 s (log) on stderr")
    p.add_argument("--dicom-out", default=None, metavar="DIR",
                   help="also write DICOM results per image: TID 1500 SR, presentation state and "
                        "marked secondary capture (docs/dicom.md); send them with 'mammo send'")
    add_engine_arguments(p, scan=True)
    p.set_defaults(func=run)


def _approx(res) -> str:
    """Why a map is not the ensemble's exact P(abnormal)."""
    if res.map_mode == "dense":
        return "dense map, values rank windows (docs/whole_mammograms.md)"
    return "one view per window" if res.settings.map_tta == "none" else "a subset of the members"


def _usage(msg: str) -> int:
    print(f"mammo scan: error: {msg}", file=sys.stderr)
    return 2


#: Where an output folder must never be: writing "regular" files there (as root) plants them
#: among devices and kernel files.
_SPECIAL_ROOTS = ("/dev", "/proc", "/sys")
LOCK_NAME = ".mammo-scan.lock"
JSON_SUFFIX = "_candidates.json"
#: Largest candidates JSON read back when candidates.csv is rebuilt (ours are a few kB).
MAX_JSON_BYTES = 4 << 20


def _special(path: str) -> bool:
    return any(p == r or p.startswith(r + os.sep) for r in _SPECIAL_ROOTS for p in path_chain(path))


def path_chain(path: str) -> list[str]:
    """``path`` made absolute, every hop of its symlinks, and its real path."""
    return [*_link_chain(path), os.path.realpath(path)]


def _output_problem(out: str) -> str | None:
    """Why the output folder cannot be used (None when it can); checked before models load.
    Predict's rules for special files: a folder under /dev, /proc or /sys (directly or through
    a symlink) is refused, as is anything that exists and is not a folder (a file, a FIFO,
    /dev/null); the folder is made only after those checks."""
    if out == "":
        return "-o: empty folder name"
    if _special(out):
        return (f"-o {shown(out)}: leads to {shown(os.path.realpath(out))}, a system folder of "
                "devices / kernel files; name an ordinary folder for the outputs")
    if os.path.lexists(out) and not os.path.isdir(out):
        return f"-o {shown(out)}: exists and is not a folder"
    folder = Path(out)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"-o {shown(folder)}: cannot create the output folder: {exc.strerror or exc}"
    if not folder.is_dir():
        return f"-o {shown(folder)}: is not a folder"
    try:  # tried for real (root ignores permission bits)
        fd, probe = tempfile.mkstemp(prefix=".mammo-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"-o {shown(folder)}: cannot write in this folder: {exc.strerror or exc}"
    return None


def _lock(out: Path):
    """An exclusive lock on the output folder (``.mammo-scan.lock`` in it, ``flock``) held for
    the whole run: a second ``mammo scan`` into the same folder exits 1 at once with one line
    (it does not wait). Returns the open descriptor (closed at exit releases the lock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        return None
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(out / LOCK_NAME, flags, 0o644)
    except OSError as exc:
        raise MammoError(f"cannot lock the output folder ({LOCK_NAME}: {exc.strerror or exc}; "
                         "a symbolic link planted there is refused)", out) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise MammoError("another mammo scan is writing into this folder; wait for it to end or "
                         "choose another -o folder", out) from None
    return fd


def run(args) -> int:
    try:
        settings = ScanSettings(
            window_mm=args.window_mm if args.window_mm is not None else DEFAULT_WINDOW_MM,
            stride_fraction=args.stride, batch_size=args.batch_size, top_k=args.top_k,
            members=args.map_members if args.map_members in ("fastest", "all") else
            tuple(m.strip() for m in args.map_members.split(",") if m.strip()),
            min_tissue=args.min_tissue, map_tta=args.map_tta,
            drop_pectoral=not args.keep_pectoral, window_px=args.window_px,
            max_minutes=args.max_minutes, map_precision=args.map_precision,
            map_mode=args.map_mode)
    except MammoError as err:
        return _usage(err.problem)
    if args.pixel_spacing is not None and spacing_problem(args.pixel_spacing):
        return _usage(f"--pixel-spacing: {spacing_problem(args.pixel_spacing)}")
    why = _output_problem(args.output)
    if why:
        return _usage(why)
    why = None if args.dicom_out is None else _output_problem(args.dicom_out)
    if why:
        return _usage("--dicom-out" + why[2:])
    out = Path(args.output)
    inputs = {os.path.realpath(p) for p in args.images}
    if os.path.realpath(out / "candidates.csv") in inputs:
        return _usage(f"-o {shown(out)}: candidates.csv there is one of the inputs; refusing to overwrite it")
    lock = _lock(out)  # before models load: a second scan into this folder fails at once
    try:
        return _scan_all(args, settings, out, inputs)
    finally:
        if lock is not None:
            os.close(lock)


def _scan_all(args, settings: ScanSettings, out: Path, inputs: set[str]) -> int:
    clean_stale_temps(out)  # temporaries of a killed run
    session = Session(args.models_dir, engine_settings(args))
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

    index = CandidateIndex(out)
    errors = 0
    done_images = 0
    taken: set[str] = set()
    for given in args.images:
        try:
            mammo = read_mammogram(given, spacing_mm=args.pixel_spacing, bits=args.bits)
            with Progress(0, shown(Path(given).name), "window", disable=args.no_progress) as bar:
                res = scan_mammogram(mammo, session, settings, progress=bar.update_to)
            stem = free_stem(mammo.stem, taken)  # two inputs with one stem: keep both
            doc = _write_outputs(out, stem, mammo, res, inputs)
            if args.dicom_out is not None:
                dicom = scan_dicom_results(args.dicom_out, stem, mammo, res, session.provenance_record())
                print(f"mammo: {dicom.describe()}", file=sys.stderr)
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
                        type(err).__name__, shown(str(err).splitlines()[0] if str(err) else ""),
                        extra={"details": traceback.format_exc()})
            errors += 1
            continue
        done_images += 1
        index.put(f"{stem}{JSON_SUFFIX}", doc)
        if not _write_csv(index):
            errors += 1
        best = res.candidates[0] if res.candidates else None
        print(f"mammo: {shown(mammo.name)}: {len(res.p_abnormal)} windows of {res.window_px} px in "
              f"{res.seconds:.1f} s (map members: {res.members_text()}"
              f"{'' if res.exact else ', approximate: ' + _approx(res)}; {res.mode_text()}); best candidate "
              + (f"x={best.x} y={best.y} P(abnormal)={best.p_abnormal:.2f} ({best.call})" if best else "none"),
              file=sys.stderr)
    if not done_images and not _write_csv(index):  # rebuilt from the folder's JSON files
        errors += 1
    print(f"mammo: wrote {shown(out)} ({done_images} image(s) scanned, {errors} failed); {DISCLAIMER}",
          file=sys.stderr)
    if errors:
        return 3 if done_images else 1
    return 0


# --------------------------------------------------------------------------- writing
def _put(folder: Path, name: str, data: bytes) -> None:
    """Write ``folder/name`` as a unit: the bytes go to a temporary file beside it (created
    exclusively, so a symlink planted under the temporary name is never followed), then
    ``os.replace`` moves it in. A symlink (or anything but a regular file) found at the
    target is refused: nothing is ever written through a link found in the output folder."""
    target = folder / name
    if os.path.islink(target):
        raise MammoError(f"{name} in the output folder is a symbolic link; not writing through it "
                         "(remove it)", folder)
    if os.path.lexists(target) and not os.path.isfile(target):
        raise MammoError(f"{name} in the output folder is not a regular file; not replacing it", folder)
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-{os.getpid()}-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)  # replaces a link planted since the check, never follows it
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_outputs(out: Path, stem: str, mammo, res, inputs: set[str]) -> dict:
    """The three files of one image, each moved in whole; the JSON last (a JSON in the folder
    means its map and picture are there). Refused when one would replace an input. Returns the
    JSON document."""
    import cv2
    import numpy as np

    targets = {k: out / f"{stem}_{k}" for k in ("map.npy", "map.png", "candidates.json")}
    for t in targets.values():
        if os.path.realpath(t) in inputs:
            raise MammoError(f"its output {shown(t)} would overwrite an input; choose another -o folder",
                             mammo.source)
    ok, buf = cv2.imencode(".png", map_overlay(
        mammo.pixels, res.map, candidates=res.candidates, fs=mammo.full_scale, coverage=res.coverage,
        tissue=res.mask, unscanned=res.unscanned_mm(), unit="mm" if res.spacing_mm else "px")[..., ::-1])
    if not ok:
        raise MammoError("cannot encode PNG", targets["map.png"])
    doc = res.candidates_json()
    doc["source"] = shown(doc["source"])
    text = json.dumps(json_safe(doc), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    npy = io.BytesIO()
    np.save(npy, res.map, allow_pickle=False)
    _put(out, targets["map.npy"].name, npy.getvalue())
    _put(out, targets["map.png"].name, buf.tobytes())
    _put(out, targets["candidates.json"].name, text.encode("utf-8"))
    return json.loads(text)


class CandidateIndex:
    """The rows of ``candidates.csv``: rebuilt from the folder's ``*_candidates.json`` files
    (read once, under the folder's lock), updated as images are scanned; a JSON that is not a
    candidates file of ours (a symlink, too big, another schema, bad values) is left out with
    one warning line."""

    def __init__(self, out: Path):
        self.out = out
        self.docs: dict[str, list[dict]] = {}
        self.notes: dict[str, str] = {}  # per JSON: how its map was computed (a comment line)
        try:
            names = sorted(e.name for e in os.scandir(out) if e.name.endswith(JSON_SUFFIX))
        except OSError:
            names = []
        for name in names:
            try:
                doc = _read_json(out / name)
                self.docs[name] = rows_of(doc)
                self.notes[name] = map_note(doc)
            except (OSError, ValueError, TypeError, KeyError, MammoError) as exc:
                log.warning("leaving %s out of candidates.csv: %s", shown(out / name),
                            shown(getattr(exc, "problem", None) or getattr(exc, "strerror", None)
                                  or f"{type(exc).__name__}: {exc}"))

    def put(self, name: str, doc: dict) -> None:
        self.docs[name] = rows_of(doc)
        self.notes[name] = map_note(doc)

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
        w.writeheader()
        for name in sorted(self.docs):
            w.writerows(self.docs[name])
        for name in sorted(self.docs):
            if self.notes.get(name):
                buf.write(f"# {self.notes[name]}\n")
        buf.write(f"# {DISCLAIMER}\n")
        return buf.getvalue()


def map_note(doc: dict) -> str:
    """One comment line of candidates.csv: the image, how its map was computed (mode) and on
    what engine; '' for a candidates file written before these were recorded."""
    m = doc["map"] if isinstance(doc.get("map"), dict) else {}
    mode, eng = m.get("mode"), m.get("engine")
    if not isinstance(mode, str):
        return ""
    what = (f"{eng['name']} {eng['version']} {eng['precision']}"
            if isinstance(eng, dict) and all(isinstance(eng.get(k), str) for k in ("name", "version", "precision"))
            else "engine not recorded")
    dev = eng.get("deviation") if isinstance(eng, dict) and eng.get("precision") != "f32" else None
    if isinstance(dev, str) and dev:
        what += f" ({dev})"
    return csv_cell(shown(f"{doc['source']}: {mode} map on {what}"))


def _read_json(path: Path) -> dict:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
            raise MammoError("not a regular file")
        data = fh.read(MAX_JSON_BYTES + 1)
    if len(data) > MAX_JSON_BYTES:
        raise MammoError(f"larger than {MAX_JSON_BYTES >> 20} MB")

    def no_constant(c):
        raise ValueError(f"non-finite number {c}")
    return json.loads(data.decode("utf-8"), parse_constant=no_constant)


def _num(v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise MammoError(f"not a finite number: {str(v)[:20]!r}")
    return float(v)


def rows_of(doc) -> list[dict]:
    """The CSV rows of one candidates document (``mammo.candidates/1``)."""
    if not isinstance(doc, dict) or doc.get("schema") != CANDIDATES_SCHEMA:
        raise MammoError("not a mammo.candidates/1 file")
    source = doc["source"]
    if not isinstance(source, str) or not isinstance(doc["candidates"], list):
        raise MammoError("malformed candidates file")
    rows = []
    for k, c in enumerate(doc["candidates"], 1):
        probs = c["probabilities"]
        if not isinstance(probs, dict):
            raise MammoError("malformed probabilities")
        rows.append({"source": csv_cell(shown(source)), "rank": k,
                     **{f: int(_num(c[f])) for f in ("x", "y", "side")},
                     "p_abnormal": f"{_num(c['p_abnormal']):.6f}", "p_map": f"{_num(c['p_map']):.6f}",
                     "call": csv_cell(shown(str(c["call"]))),
                     **{k2: f"{_num(probs[k2]):.6f}" if k2 in probs else "nan" for k2 in PROB_COLUMNS},
                     **_trust_cells(c)})
    return rows


def _trust_cells(c) -> dict:
    """The conformal set, its level and the OOD warnings of one candidate (JSON -> CSV cells);
    empty for candidates files written before they existed."""
    cset, level, warn = c.get("conformal_set"), c.get("conformal_level"), c.get("warnings") or []
    if cset is not None and not (isinstance(cset, list) and all(isinstance(x, str) for x in cset)):
        raise MammoError("malformed conformal_set")
    if not isinstance(warn, list) or not all(isinstance(x, str) for x in warn):
        raise MammoError("malformed warnings")
    return {"conformal_set": "" if cset is None else csv_cell(shown("|".join(cset))),
            "conformal_level": "" if level is None else f"{_num(level):.2f}",
            "warnings": csv_cell(shown("; ".join(warn)))}


def _write_csv(index: CandidateIndex) -> bool:
    """Write candidates.csv (one unit, never through a link); False (one warning) when it fails."""
    try:
        _put(index.out, "candidates.csv", index.csv_text().encode("utf-8"))
    except (OSError, MammoError) as exc:
        log.warning("cannot write %s: %s", shown(index.out / "candidates.csv"),
                    shown(getattr(exc, "problem", None) or getattr(exc, "strerror", None) or exc))
        return False
    return True
