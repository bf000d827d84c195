"""`mammo predict`: classify patches with bundled models / the ensemble, optional Grad-CAM,
report as JSON / CSV / PDF. Same code path as the viewer (mammo_core.session.Session)."""
from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from mammo_core import DISCLAIMER
from mammo_core.atomic import atomic_path, atomic_write_bytes, write_through
from mammo_core.cliargs import BATCH_SIZE, BITS
from mammo_core.dicom_out import predict_dicom_results
from mammo_core.engine import add_engine_arguments, engine_settings
from mammo_core.errors import MammoError
from mammo_core.explain import overlay
from mammo_core.io import READ_EXTENSIONS
from mammo_core.paths import path_arg
from mammo_core.predictions import default_target
from mammo_core.progress import Progress
from mammo_core.report import PredictionRun, csv_text, json_text
from mammo_core.safeio import shown
from mammo_core.session import ENSEMBLE, Session

log = logging.getLogger(__name__)

EPILOG = f"""\
examples:
  mammo predict patches/ -o report.json
  mammo predict a.png b.dcm stack.npy --model all --format csv
  mammo predict patches/ --model path/to/bundle --gradcam --gradcam-dir maps/ -o report.pdf --format pdf

PATH is any mix of patch files (.npy .png .tif .jpg .pgm .dcm), stacked .npy arrays (N,150,150)
and folders. Intensities are scaled by the true bit depth: DICOM by its BitsStored, other files
by their container (8 or 16 bit) unless --bits says a 16-bit file holds fewer bits.
-o may name a special file (/dev/stdout, a FIFO): the report is written into it. Outputs are
checked before any model loads; an output that fails after the work still gets the report on
stdout (exit 1). Exit codes: 0 every input predicted, 1 bad input, model or output, 2 usage
error, 3 some inputs could not be read (the rest were predicted and reported).
{DISCLAIMER}.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="classify patches (ensemble by default), optional Grad-CAM, JSON/CSV/PDF report",
        description="Classify 150x150 mammogram patches with bundled models and their ensemble. "
                    + DISCLAIMER.capitalize() + ".",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="patch files, stacked .npy arrays, folders")
    p.add_argument("--model", default="ensemble", metavar="NAME|PATH|ensemble|all",
                   help="a bundled model's name, a bundle folder, 'ensemble' (default: the bundled "
                        "ensemble and its members) or 'all' (every bundle)")
    p.add_argument("--models-dir", type=path_arg, default=None, metavar="DIR",
                   help="folder of bundles (default: assets/models)")
    p.add_argument("--gradcam", action="store_true", help="compute Grad-CAM maps")
    p.add_argument("--gradcam-dir", type=_given_path, default=None, metavar="DIR",
                   help="write each map as .npy (float32 150x150 in [0,1]) and a PNG overlay "
                        "(implies --gradcam)")
    p.add_argument("--method", default="gradcam", choices=("gradcam", "gradcam++", "scorecam"),
                   help="heatmap method (default gradcam)")
    p.add_argument("--format", default="json", choices=("json", "csv", "pdf"),
                   help="report format (default json); pdf requires -o")
    p.add_argument("-o", "--output", type=_given_path, default=None, metavar="FILE",
                   help="report file (default: stdout for json/csv)")
    p.add_argument("--batch-size", type=BATCH_SIZE, default=32, metavar="N",
                   help="patches per batch (default 32)")
    p.add_argument("--bits", type=BITS, default=None, metavar="N",
                   help="16-bit PNG/TIFF/.npy files hold only N bits (1-16; e.g. 12 for a 12-bit "
                        "mammogram saved in a 16-bit PNG); DICOM uses its own BitsStored")
    p.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument("--dicom-out", type=_given_path, default=None, metavar="DIR",
                   help="also write DICOM results per source file: TID 1500 SR and presentation "
                        "state (docs/dicom.md); send them with 'mammo send'")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (terminal) or heartbeat line every 10 s (log) on stderr")
    add_engine_arguments(p)
    p.set_defaults(func=run)


def _usage(msg: str) -> int:
    print(f"mammo predict: error: {msg}", file=sys.stderr)
    return 2


def _safe(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", s).strip("_") or "x"


def _nearest_existing(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not os.path.lexists(p) and p != p.parent:
        p = p.parent
    return p


def _writable_folder(folder: Path) -> str | None:
    """None when files can be created in ``folder`` (or in the folders that would be made
    for it), else why not. Tried for real (a probe file), as root ignores permission bits."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        return f"{shown(base)} is not a folder"
    try:
        fd, probe = tempfile.mkstemp(prefix=".mammo-probe-", dir=base)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {shown(base)}: {exc.strerror or exc}"
    return None


def _given_path(text: str) -> Path | str:
    """argparse type of -o / --gradcam-dir: an empty argument stays "" (``Path('')`` would be
    the current folder) so that ``_check_outputs`` refuses it in one line (exit 2)."""
    return Path(text) if text else ""


def _inside(child: str, parent: str) -> bool:
    return child == parent or child.startswith(parent.rstrip(os.sep) + os.sep)


def _check_outputs(args) -> str | None:
    """Why the outputs cannot be written, before any model loads (None when they can)."""
    inputs = [Path(p) for p in args.paths]
    in_files = {os.path.realpath(p) for p in inputs if os.path.lexists(p) and not p.is_dir()}
    in_dirs = [os.path.realpath(p) for p in inputs if p.is_dir()]
    if args.output is not None:
        out = args.output
        if str(out) == "":
            return "-o: empty file name"
        if not write_through(out):
            real = os.path.realpath(out)
            if os.path.isdir(real):
                return f"-o {shown(out)}: is a folder; name a report file"
            if real in in_files:
                return f"-o {shown(out)}: is one of the inputs; refusing to overwrite it"
            if Path(real).suffix.lower() in READ_EXTENSIONS and any(
                    (os.path.dirname(real) == d) or (args.recursive and _inside(real, d)) for d in in_dirs):
                return f"-o {shown(out)}: lies in an input folder and would be read as an input; refusing"
            why = _writable_folder(Path(real).parent)
            if why:
                return f"-o {shown(out)}: {why}"
        elif os.path.isdir(out):
            return f"-o {shown(out)}: is a folder; name a report file"
    if args.gradcam_dir is not None:
        gd = args.gradcam_dir
        if str(gd) == "":
            return "--gradcam-dir: empty folder name"
        if os.path.lexists(gd) and not os.path.isdir(gd):
            return f"--gradcam-dir {shown(gd)}: exists and is not a folder"
        real = os.path.realpath(gd)
        for d in in_dirs:
            if _inside(real, d):
                return (f"--gradcam-dir {shown(gd)}: lies in the input folder {shown(d)}; its heatmaps "
                        "would be read as patches; choose a folder outside the inputs")
        why = _writable_folder(Path(real))
        if why:
            return f"--gradcam-dir {shown(gd)}: {why}"
        if args.output is not None and os.path.realpath(args.output) == real:
            return f"-o {shown(args.output)}: is the --gradcam-dir folder; name a report file"
    if args.dicom_out is not None:
        if str(args.dicom_out) == "" or (os.path.lexists(args.dicom_out) and not os.path.isdir(args.dicom_out)):
            return f"--dicom-out {shown(args.dicom_out)}: not a folder"
        why = _writable_folder(Path(os.path.realpath(args.dicom_out)))
        if why:
            return f"--dicom-out {shown(args.dicom_out)}: {why}"
    return None


def run(args) -> int:
    if args.format == "pdf" and args.output is None:
        return _usage("--format pdf requires -o FILE")
    if args.batch_size < 1:
        return _usage(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.bits is not None and not 1 <= args.bits <= 16:
        return _usage(f"--bits must be from 1 to 16, got {args.bits}")
    why = _check_outputs(args)
    if why:
        return _usage(why)
    gradcam = args.gradcam or args.gradcam_dir is not None

    from tqdm import tqdm

    session = Session(args.models_dir, engine_settings(args))
    coll = session.read(args.paths, recursive=args.recursive, bits=args.bits)
    for e in coll.errors:
        log.warning("cannot read %s: %s", shown(e.source), shown(e.error))

    if args.model == "all":
        names = None
    else:
        names = [args.model]
        if args.model == ENSEMBLE and not session.available():
            raise MammoError("no model bundles found; train one (training_scripts/) or pass "
                             "--model PATH", session.models_dir)
    disable = args.no_progress
    with tqdm(total=0, desc="loading models", unit="model", file=sys.stderr,
              disable=disable or not _tty(sys.stderr), leave=False) as bar:
        def on_load(i, total, name):
            bar.total = total
            bar.n = i
            bar.set_postfix_str(name)
            bar.refresh()

        failures = session.load(names, progress=on_load)
    if failures:
        raise MammoError("; ".join(str(f) for f in failures))
    if gradcam:  # before predicting: a card's missing Grad-CAM layer would fail only after it
        problems = session.gradcam_problems()
        if problems:
            raise MammoError("; ".join(problems) + " (run without --gradcam for predictions only)")

    with Progress(len(coll.patches), "predicting", "patch", disable=disable) as bar:
        preds = session.predict(coll.patches, batch_size=args.batch_size, progress=bar.update_to)

    heatmaps, heatmap_paths = {}, {}
    write_failed = None
    if gradcam:
        heatmaps, heatmap_paths, write_failed = _gradcam(session, coll.patches, preds, args, disable)

    run_ = PredictionRun(preds, session.provenance_record(), list(coll.errors), coll.patches, heatmaps,
                         heatmap_paths)
    for e in run_.errors[len(coll.errors):]:  # a non-finite answer: an error for that patch
        log.warning("cannot predict %s: %s", shown(e.source), shown(e.error))
    dicom_failed: list[MammoError] = []
    if args.dicom_out is not None:  # written before the report: a DICOM failure keeps the report
        kept = {id(p) for p in run_.predictions}  # the finite answers
        pairs = [(pa, pr) for pa, pr in zip(coll.patches, preds) if id(pr) in kept]
        done, dicom_failed = predict_dicom_results(args.dicom_out, [pa for pa, _ in pairs],
                                                   [pr for _, pr in pairs], session.provenance_record())
        for d in done:
            log.info("%s", d.describe())
        for err in dicom_failed:
            log.error("error: %s", err)
    errors = list(coll.errors)
    if args.output is None:
        sys.stdout.write(json_text(run_) if args.format == "json" else csv_text(run_))
        sys.stdout.flush()
    else:
        try:
            session.export(args.output, args.format, coll.patches, preds, heatmaps, errors=errors,
                           heatmap_paths=heatmap_paths)
        except (OSError, MammoError) as exc:
            write_failed = f"cannot write {shown(args.output)}: {_why(exc)}"
        else:
            log.info("wrote %s (%d patches, %d unreadable); %s", shown(args.output),
                     len(run_.predictions), len(run_.errors), DISCLAIMER)
    if write_failed:  # the work is done: never lose it
        text = csv_text(run_) if args.format == "csv" else json_text(run_)
        log.error("error: %s; the report (%s) follows on stdout", write_failed,
                  "CSV" if args.format == "csv" else "JSON")
        if args.output is not None:
            sys.stdout.write(text)
            sys.stdout.flush()
        return 1
    if dicom_failed:
        return 1
    if run_.errors:
        return 3 if run_.predictions else 1
    return 0


def _tty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _why(exc: BaseException) -> str:
    if isinstance(exc, MammoError):
        return exc.problem
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def _gradcam(session, patches, preds, args, disable):
    import numpy as np

    ens_loaded = ENSEMBLE in session.loaded
    heatmaps, paths = {}, {}
    failed = None
    out_dir = args.gradcam_dir
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            failed = f"cannot create --gradcam-dir {shown(out_dir)}: {_why(exc)}"
            out_dir = None
    with Progress(len(patches), "Grad-CAM", "patch", disable=disable) as bar:
        for i, (patch, pred) in enumerate(zip(patches, preds)):
            maps = {}
            if ens_loaded:
                maps.update(session.explain_all(patch, ENSEMBLE, args.method,
                                                target=default_target(pred.ensemble)))
            for name in pred.per_model:
                if name not in maps:
                    maps.update(session.explain_all(patch, name, args.method))
            key = patch.key
            for model, hm in maps.items():
                model = session.model_name(model)
                heatmaps[(key, model)] = hm
                if out_dir is not None:
                    stem = f"{i:05d}_{_safe(Path(patch.source).stem)}"
                    if patch.index is not None:
                        stem += f"_{patch.index}"
                    stem += f"_{_safe(model)}"
                    npy = out_dir / f"{stem}.npy"
                    try:
                        with atomic_path(npy) as tmp:
                            np.save(tmp, hm.astype(np.float32), allow_pickle=False)
                        _write_png(out_dir / f"{stem}.png", overlay(patch.pixels, hm))
                    except (OSError, MammoError) as exc:  # e.g. disk full: keep the maps in memory
                        failed = f"cannot write heatmaps in {shown(out_dir)}: {_why(exc)}"
                        out_dir = None
                        continue
                    paths[(key, model)] = str(npy)
            bar.update_to(i + 1)
    return heatmaps, paths, failed


def _write_png(path: Path, rgb) -> None:
    import cv2

    ok, buf = cv2.imencode(".png", rgb[..., ::-1])
    if not ok:
        raise MammoError("cannot encode PNG", path)
    atomic_write_bytes(path, buf.tobytes())
