"""`mammo models list|verify`: the bundled models, their cards, and their hashes."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from mammo_core import DISCLAIMER, io
from mammo_core.bundle import (
    MANIFEST_FILE,
    bundle_dirs,
    read_card,
    read_manifest,
    verify_bundle,
    write_manifest,
)
from mammo_core.confidence import quality_from_card
from mammo_core.ensemble import member_dirs, read_ensemble
from mammo_core.errors import MammoError
from mammo_core.inference import load_bundle, predict_arrays
from mammo_core.metrics import MIN_SPREAD, spread
from mammo_core.paths import models_dir, path_arg, samples_dir
from mammo_core.session import Session

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--models-dir", type=path_arg, default=None, metavar="DIR",
                        help="folder of bundles (default: assets/models)")
    p = subparsers.add_parser("list", parents=[common], help="list the bundled models (cards only)",
                              description="List bundles: name, kind, task, version, sha256, held-out "
                                          "metrics as the card states them. " + DISCLAIMER.capitalize() + ".")
    p.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    p.set_defaults(func=run_list)
    v = subparsers.add_parser(
        "verify", parents=[common],
        help="check every bundle's files against its card and MANIFEST.json (exit 1 on any failure)",
        description="Recompute the sha256 of every bundle file and compare it with the card and "
                    "the manifest; ensembles also check their members' hashes. Exit 1 naming the "
                    "bundle and file on any failure.")
    v.add_argument("names", nargs="*", metavar="NAME", help="bundles to check (default: all)")
    v.add_argument("--samples", type=path_arg, default=None, metavar="DIR",
                   help="patches to run every model on for its output spread (default: assets/samples)")
    v.add_argument("--no-spread", action="store_true",
                   help="hashes only: do not load the models and measure their output spread")
    v.set_defaults(func=run_verify)
    m = subparsers.add_parser(
        "manifest", parents=[common],
        help="(re)write MANIFEST.json from the bundles' cards after checking each against its card",
        description="Check every bundle folder against its own card, then write MANIFEST.json "
                    "listing them with their hashes (after adding or retraining a bundle).")
    m.set_defaults(func=run_manifest)


def _models_dir(args) -> Path:
    return args.models_dir if args.models_dir is not None else models_dir()


def _headline_metric(info) -> str:
    metric = info.card.headline_metric()
    return "" if metric is None else f"{metric[0]}={metric[1]:.3f}"


def _heldout(info) -> str:
    """``auc=0.333 [0.06, 0.65]`` (held-out AUC and 95 % interval), else the headline metric."""
    q = quality_from_card(info.card)
    if q.auc is not None and q.ci95 is not None:
        return f"auc={q.auc:.3f} [{q.ci95[0]:.2f}, {q.ci95[1]:.2f}]"
    return _headline_metric(info)


def run_list(args) -> int:
    root = _models_dir(args)
    if not root.is_dir():
        raise MammoError("no such models folder", root)
    infos = Session(root).available()
    if args.format == "json":
        out = {"models_dir": str(root), "disclaimer": DISCLAIMER, "bundles": [
            {"name": i.name, "kind": i.kind, "task": i.task, "classes": list(i.classes),
             "version": i.version, "sha256": i.sha256, "path": str(i.path),
             "gradcam_layer": i.gradcam_layer, "architecture": i.card.architecture,
             "metrics": i.card.metrics.to_dict(), "heldout": quality_from_card(i.card).to_dict(),
             "created": i.card.created}
            for i in infos]}
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    if not infos:
        log.warning("no bundles in %s", root)
        return 0
    rows = [("NAME", "KIND", "TASK", "VERSION", "SHA256", "HELD-OUT", "QUALITY")]
    rows += [(i.name, i.kind, i.task, i.version, i.sha256[:12], _heldout(i),
              quality_from_card(i.card).status) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for r in rows:
        print("  ".join(s.ljust(w) for s, w in zip(r, widths)).rstrip())
    return 0


def _sample_patches(folder: Path):
    """The sample patches of ``folder`` (``io.read_patches``) as model input, or None."""
    if not folder.is_dir():
        return None
    coll = io.read_patches(folder)
    return io.to_model_input(list(coll.patches)) if len(coll) else None


def model_spread(folder: Path, x, models_root: Path) -> dict:
    """A model bundle's output spread on ``x``; raises MammoError on a (near) constant model or a
    card naming a Grad-CAM layer the model lacks."""
    m = load_bundle(folder, models_root)
    m.check_gradcam_layer()
    p = predict_arrays([m], x)[m.name]
    s = spread(p)
    if len(p) >= 2 and max(s["std"]) < MIN_SPREAD:
        raise MammoError(f"constant model: every class probability varies by less than {MIN_SPREAD} "
                         f"(std {max(s['std']):.2e}) over {len(p)} sample patches")
    return s


def run_verify(args) -> int:
    root = _models_dir(args)
    if not root.is_dir():
        raise MammoError("no such models folder", root)
    problems: list[str] = []
    try:
        manifest = read_manifest(root)
    except MammoError as err:
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    folders = bundle_dirs(root)
    seen = set()
    x = None
    if not args.no_spread:
        x = _sample_patches(args.samples if args.samples is not None else samples_dir())
        if x is None:
            print("note: no sample patches found; output spread not measured", file=sys.stderr)
    for folder in folders:
        try:
            name = read_card(folder).name
        except MammoError as err:
            problems.append(str(err))
            print(f"FAIL {err}", file=sys.stderr)
            continue
        seen.add(name)
        if args.names and name not in args.names:
            continue
        try:
            info = verify_bundle(folder, manifest)
            if info.kind == "ensemble":
                _, spec = read_ensemble(folder, manifest)
                for mpath in member_dirs(spec, root).values():
                    verify_bundle(mpath, manifest)
            extra = ""
            if x is not None and info.kind == "model":
                sp = model_spread(folder, x, root)
                extra = (f"; spread on {sp['n']} samples: class-prob std max {max(sp['std']):.3f}, "
                         f"{sp['distinct_outputs']} distinct outputs, {sp['predicted_classes']} classes called")
            print(f"ok   {info.name} ({info.kind}, {info.task}) sha256 {info.sha256[:12]}{extra}")
        except MammoError as err:
            problems.append(f"{name}: {err}")
            print(f"FAIL {name}: {err}", file=sys.stderr)
    for name in manifest.get("bundles", {}):
        if name not in seen and (not args.names or name in args.names):
            msg = f"{name}: listed in {MANIFEST_FILE} but no bundle folder has that card"
            problems.append(msg)
            print(f"FAIL {msg}", file=sys.stderr)
    for name in args.names:
        if name not in seen:
            problems.append(f"{name}: no such bundle")
            print(f"FAIL {name}: no such bundle in {root}", file=sys.stderr)
    if problems:
        log.error("%d bundle problem(s)", len(problems))
        return 1
    return 0


def run_manifest(args) -> int:
    root = _models_dir(args)
    if not root.is_dir():
        raise MammoError("not a folder", root)
    manifest = write_manifest(root)
    for name, entry in manifest["bundles"].items():
        print(f"{name} ({entry['kind']}, {entry['task']})")
    log.info("wrote %s (%d bundles)", root / MANIFEST_FILE, len(manifest["bundles"]))
    return 0
