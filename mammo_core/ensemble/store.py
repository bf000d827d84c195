"""An ensemble bundle on disk: writing and reading ``ensemble.json`` with its card, and finding
the members' bundles (sha256-checked).

Research use only — not a medical device.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mammo_core import __version__
from mammo_core.atomic import atomic_write_text
from mammo_core.bundle import (
    CARD_FILE,
    CARD_SCHEMA,
    BundleInfo,
    iter_bundles,
    now_iso,
    read_card,
    sha256_file,
    verify_bundle,
    write_card,
)
from mammo_core.card import parse_card
from mammo_core.ensemble.spec import CALIBRATION, ENSEMBLE_FILE, WEIGHTING, EnsembleSpec
from mammo_core.errors import BundleError
from mammo_core.jsonutil import read_json_object
from mammo_core.labels import (
    CLASS_NAMES,
    FACTORS,
)
from mammo_core.ood import FeatureReference


def write_ensemble(out_dir: str | Path, spec: EnsembleSpec, card: Mapping[str, Any] | None = None,
                   reference: FeatureReference | None = None) -> BundleInfo:
    """Write the ensemble bundle: the OOD feature reference (when the spec names one),
    ``ensemble.json`` then ``card.json`` (each atomically; the card hashes every file)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ref_file = None if spec.ood is None else spec.ood.reference_file
    if (ref_file is None) != (reference is None):
        raise BundleError("an ensemble's OOD spec and its feature reference go together", out_dir)
    if ref_file is not None:
        reference.save(out_dir / ref_file)
    atomic_write_text(out_dir / ENSEMBLE_FILE, json.dumps(spec.to_dict(), indent=2) + "\n")
    digest = sha256_file(out_dir / ENSEMBLE_FILE)
    cov = spec.coverage
    full: dict[str, Any] = {
        "schema": CARD_SCHEMA,
        "name": "ensemble",
        "kind": "ensemble",
        "task": "five_class",
        "classes": list(CLASS_NAMES),
        "version": "1.0.0",
        "architecture": {"members": [m.name for m in spec.members], "combination": WEIGHTING,
                         "calibration": CALIBRATION, "hierarchy": list(FACTORS)},
        "gradcam_layer": None,
        "coverage": cov,
        "notes": [] if cov["baseline"] else [
            ("no member estimates P(baseline): five-class output is conditional on the patch "
             "being abnormal (P(baseline) = 0)")],
        "created": now_iso(),
        "software": {"mammo": __version__},
    }
    full.update(card or {})
    full["kind"] = "ensemble"
    full["task"] = "five_class"
    full["classes"] = list(CLASS_NAMES)
    full["files"] = {ENSEMBLE_FILE: digest}
    if ref_file is not None:
        full["files"][ref_file] = sha256_file(out_dir / ref_file)
    full["sha256"] = digest
    write_card(out_dir, parse_card(full, out_dir / CARD_FILE))
    return read_card(out_dir)


def read_ensemble(bundle_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> tuple[BundleInfo, EnsembleSpec]:
    """Verify an ensemble bundle's hashes and parse its spec."""
    info = verify_bundle(bundle_dir, manifest)
    if info.kind != "ensemble":
        raise BundleError(f"bundle {info.name!r} is not an ensemble (kind {info.kind!r})", info.path)
    path = info.path / ENSEMBLE_FILE
    if ENSEMBLE_FILE not in info.card.files:
        raise BundleError(f"card does not hash {ENSEMBLE_FILE}", info.path)
    d = read_json_object(path, "ensemble spec", BundleError)
    spec = EnsembleSpec.from_dict(d, path)
    ref = None if spec.ood is None else spec.ood.reference_file
    if ref is not None and ref not in info.card.files:
        raise BundleError(f"card does not hash the OOD reference {ref}", info.path)
    return info, spec


def read_reference(info: BundleInfo, spec: EnsembleSpec) -> FeatureReference | None:
    """The ensemble's OOD feature reference (hash checked by :func:`read_ensemble`), or None."""
    if spec.ood is None or spec.ood.reference_file is None:
        return None
    path = Path(info.path) / spec.ood.reference_file
    ref = FeatureReference.load(path)
    if spec.ood.acquisition and ref.acquisition is None:
        raise BundleError("ensemble.json names an acquisition check the OOD reference does not hold", path)
    return ref


def member_dirs(spec: EnsembleSpec, search_dir: str | Path) -> dict[str, Path]:
    """Find each member's bundle folder by card name in ``search_dir`` and check its sha256
    against the spec. Raises BundleError naming the member on a miss or a mismatch."""
    search_dir = Path(search_dir)
    by_name: dict[str, BundleInfo] = {}
    broken: list[str] = []
    for _sub, info in iter_bundles(search_dir):
        if isinstance(info, BundleError):
            broken.append(str(info))
        else:
            by_name.setdefault(info.name, info)
    out = {}
    for m in spec.members:
        info = by_name.get(m.name)
        if info is None:
            if broken:  # most likely the member's own card: say why it could not be read
                raise BundleError(f"ensemble member {m.name!r}: no readable card has that name; "
                                  f"unreadable: {'; '.join(broken)[:300]}")
            raise BundleError(f"ensemble member {m.name!r} not found", search_dir)
        if info.sha256 != m.sha256:
            raise BundleError(
                f"ensemble member {m.name!r}: sha256 {info.sha256[:12]}... differs from "
                f"{ENSEMBLE_FILE} ({m.sha256[:12]}...); refusing", info.path)
        out[m.name] = info.path
    return out
