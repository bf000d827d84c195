"""A trained model on disk: ``<dir>/model.keras`` + ``<dir>/card.json``, sha256-checked.

The card (JSON) describes the model: ``name``, ``kind`` ("model" or "ensemble"), ``task``,
``classes``, ``input`` contract, ``architecture``, ``training`` (data, split, protocol,
command), ``metrics`` (held-out, with how they were measured), ``gradcam_layer``,
``version``, ``created``, ``files`` ({file name: sha256}) and ``sha256`` (of the model file).

``assets/models/MANIFEST.json`` lists every bundled bundle with its hashes; a bundle whose files
do not match its card or the manifest is refused with a clear message. Models load with
Keras ``safe_mode=True`` (no Lambda layers, no arbitrary code).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mammo_core import __version__, tfload
from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.errors import BundleError
from mammo_core.jsonutil import read_json_object

CARD_FILE = "card.json"
MODEL_FILE = "model.keras"
MANIFEST_FILE = "MANIFEST.json"
CARD_SCHEMA = "mammo.card/1"
MANIFEST_SCHEMA = "mammo.manifest/1"
INPUT_CONTRACT = {
    "shape": [None, 150, 150, 1],
    "dtype": "float32",
    "range": [0.0, 1.0],
    "scaling": "uint16 / 65535, uint8 / 255; normalisation happens inside the model",
}
REQUIRED_CARD_KEYS = ("name", "kind", "task", "classes", "version", "files")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleInfo:
    """What the card says about a bundle (reading it never imports TensorFlow)."""

    path: Path
    card: Mapping[str, Any]

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def kind(self) -> str:
        return str(self.card.get("kind", "model"))

    @property
    def task(self) -> str:
        return str(self.card["task"])

    @property
    def classes(self) -> tuple[str, ...]:
        return tuple(self.card["classes"])

    @property
    def version(self) -> str:
        return str(self.card["version"])

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256") or next(iter(self.card["files"].values())))

    @property
    def gradcam_layer(self) -> str | None:
        return self.card.get("gradcam_layer")

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


def read_card(bundle_dir: str | Path) -> BundleInfo:
    """Read and check ``card.json`` of a bundle folder (no hash check, no TensorFlow)."""
    bundle_dir = Path(bundle_dir)
    card_path = bundle_dir / CARD_FILE
    if not bundle_dir.is_dir():
        raise BundleError("not a bundle folder (missing or not a directory)", bundle_dir)
    if not card_path.is_file():
        raise BundleError(f"missing {CARD_FILE}", bundle_dir)
    card = read_json_object(card_path, "card", BundleError)
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise BundleError(f"card lacks {', '.join(missing)}", card_path)
    if not isinstance(card["files"], dict) or not card["files"]:
        raise BundleError("card 'files' must map file names to sha256", card_path)
    return BundleInfo(bundle_dir, card)


def verify_bundle(bundle_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> BundleInfo:
    """Check every file of the bundle against the card (and the manifest entry, if given).

    Raises :class:`BundleError` naming the file on a missing file or a hash mismatch.
    """
    info = read_card(bundle_dir)
    for fname, expected in info.card["files"].items():
        fpath = info.path / fname
        if not fpath.is_file():
            raise BundleError(f"missing file {fname} listed in {CARD_FILE}", fpath)
        actual = sha256_file(fpath)
        if actual != expected:
            raise BundleError(
                f"sha256 mismatch: card says {expected[:12]}..., file is {actual[:12]}... "
                "(modified or corrupted; refusing to load)",
                fpath,
            )
    if manifest is not None:
        entry = manifest.get("bundles", {}).get(info.name)
        if entry is None:
            raise BundleError(f"bundle {info.name!r} is not in {MANIFEST_FILE}", info.path)
        if entry.get("files") != dict(info.card["files"]):
            raise BundleError(
                f"files or hashes differ from {MANIFEST_FILE} entry {info.name!r}", info.path
            )
    return info


def load_model(bundle_dir: str | Path, verify: bool = True):
    """Load the Keras model of a bundle with ``safe_mode=True`` (after the hash check)."""
    info = verify_bundle(bundle_dir) if verify else read_card(bundle_dir)
    if not info.model_path.is_file():
        raise BundleError(f"missing {MODEL_FILE}", info.path)
    tfload.tensorflow()  # quietly, once
    import keras  # lazy: heavy

    try:
        return keras.saving.load_model(info.model_path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for a bad file
        raise BundleError(f"cannot load model: {type(exc).__name__}: {exc}".splitlines()[0],
                          info.model_path) from exc


def write_bundle(model, out_dir: str | Path, card: Mapping[str, Any]) -> BundleInfo:
    """Save ``model`` as a bundle in ``out_dir``: ``model.keras`` then ``card.json``, atomically.

    ``card`` must give at least ``name``, ``task`` and ``classes``; ``kind``, ``version``,
    ``created``, ``input``, ``files`` and ``sha256`` are filled in here.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / MODEL_FILE) as tmp:
        _inference_copy(model).save(tmp)
    digest = sha256_file(out_dir / MODEL_FILE)
    full = {"schema": CARD_SCHEMA, "kind": "model", "version": "1.0.0"}
    full.update(card)
    full.setdefault("input", INPUT_CONTRACT)
    full.setdefault("created", _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))
    full.setdefault("software", {"mammo": __version__})
    full["files"] = {MODEL_FILE: digest}
    full["sha256"] = digest
    write_card(out_dir, full)
    return read_card(out_dir)


def _inference_copy(model):
    """The same layers and weights without the optimizer state (a bundle is for inference;
    Adam's moments would triple the file). Functional models only; others are saved as they are."""
    if getattr(model, "optimizer", None) is None:
        return model
    import keras

    try:
        return keras.Model(inputs=model.inputs, outputs=model.outputs, name=model.name)
    except (ValueError, TypeError, AttributeError):
        return model


def write_card(bundle_dir: str | Path, card: Mapping[str, Any]) -> None:
    atomic_write_text(Path(bundle_dir) / CARD_FILE, json.dumps(card, indent=2, sort_keys=False) + "\n")


def read_manifest(models_root: str | Path) -> dict[str, Any]:
    path = Path(models_root) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"missing {MANIFEST_FILE}", models_root)
    return read_json_object(path, "manifest", BundleError)


def write_manifest(models_root: str | Path) -> dict[str, Any]:
    """(Re)write ``MANIFEST.json`` from the cards of every bundle folder under ``models_root``."""
    models_root = Path(models_root)
    bundles = {}
    for sub in sorted(p for p in models_root.iterdir() if (p / CARD_FILE).is_file()):
        info = verify_bundle(sub)
        bundles[info.name] = {
            "path": sub.name,
            "kind": info.kind,
            "task": info.task,
            "version": info.version,
            "files": dict(info.card["files"]),
        }
    manifest = {"schema": MANIFEST_SCHEMA, "bundles": bundles}
    atomic_write_text(models_root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest
