"""A trained model on disk: ``<dir>/model.keras`` + ``<dir>/card.json``, sha256-checked.

The card (JSON) describes the model: ``name``, ``kind`` ("model" or "ensemble"), ``task``,
``classes``, ``input`` contract, ``architecture``, ``training`` (data, split, protocol,
command), ``metrics`` (held-out, with how they were measured), ``gradcam_layer``,
``version``, ``created``, ``files`` ({file name: sha256}) and ``sha256`` (of the model file).

``assets/models/MANIFEST.json`` (schema ``mammo.manifest/2``) lists every bundled bundle with
the sha256 of each of its files *and of its card*, so nothing that decides an answer (weights,
classes, task) can change unnoticed; a bundle whose files do not match its card or the
manifest is refused with a clear message. Card fields are checked: ``task`` must be one of
``labels.py`` and ``classes`` exactly its classes; ``name`` a plain name; ``files`` plain file
names inside the bundle, each a regular file, mapped to sha256 hex digests; ``sha256`` that
of the model file. After :func:`verify_bundle`, ``BundleInfo.sha256`` is the hash computed
from the file itself (what reports give), not the card's claim. Models load with Keras
``safe_mode=True`` (no Lambda layers, no arbitrary code).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mammo_core import __version__, tfload
from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.errors import BundleError
from mammo_core.jsonutil import read_json_object, read_json_object_bytes
from mammo_core.labels import get_task
from mammo_core.safeio import UnsafeFile, open_regular, read_head

CARD_FILE = "card.json"
MODEL_FILE = "model.keras"
MANIFEST_FILE = "MANIFEST.json"
CARD_SCHEMA = "mammo.card/1"
MANIFEST_SCHEMA = "mammo.manifest/2"  # /2: each entry also hashes card.json
INPUT_CONTRACT = {
    "shape": [None, 150, 150, 1],
    "dtype": "float32",
    "range": [0.0, 1.0],
    "scaling": "pixels / (2**bits - 1) by the image's true bit depth (DICOM BitsStored, else the "
               "8- or 16-bit container or --bits): uint8 / 255, 12-bit / 4095, uint16 / 65535; "
               "normalisation happens inside the model",
}
REQUIRED_CARD_KEYS = ("name", "kind", "task", "classes", "version", "files")


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")
_HEX_RE = re.compile(r"^[0-9a-f]{64}$")
KINDS = ("model", "ensemble")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file (a FIFO or device raises ``OSError`` at once, never blocks)."""
    fd, _ = open_regular(path)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def plain_name(name: object) -> bool:
    """A bundle or file name without any path in it (letters, digits, ``._+-``)."""
    return isinstance(name, str) and bool(_NAME_RE.match(name)) and name not in (".", "..")


@dataclass(frozen=True)
class Card:
    """A bundle's card, typed (``card.json``, schema ``mammo.card/1``). :meth:`from_json`
    checks it (:func:`check_card`) and :meth:`to_json` gives back the same JSON object: the
    known fields under their schema names, every other key kept in ``extra`` as read."""

    name: str
    kind: str
    task: str
    classes: tuple[str, ...]
    version: str
    files: Mapping[str, str]
    sha256: str | None = None
    gradcam_layer: str | None = None
    architecture: Mapping[str, Any] | None = None
    training: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    input: Mapping[str, Any] | None = None
    created: str | None = None
    schema: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    present: frozenset[str] = field(default=frozenset(), compare=False, repr=False)  # null ones

    FIELDS = ("name", "kind", "task", "classes", "version", "files", "sha256", "gradcam_layer",
              "architecture", "training", "metrics", "input", "created", "schema")

    @classmethod
    def from_json(cls, card: Mapping[str, Any], path: str | Path = CARD_FILE) -> Card:
        check_card(card, path)
        known = {k: card[k] for k in cls.FIELDS if k in card}
        known["classes"] = tuple(known["classes"])
        known["version"] = str(known["version"])
        known["files"] = dict(known["files"])
        return cls(**known, extra={k: v for k, v in card.items() if k not in cls.FIELDS},
                   present=frozenset(known))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k in self.FIELDS:
            v = getattr(self, k)
            if v is None and k not in self.present:
                continue
            out[k] = list(v) if k == "classes" else (dict(v) if k == "files" else v)
        out.update(self.extra)
        return out

    def headline_metric(self) -> tuple[str, float] | None:
        """The held-out number ``mammo models list`` shows: the AUC, else the accuracy, of the
        card's ``metrics`` (measured on held-out data, see ``metrics.split``)."""
        m = self.metrics if isinstance(self.metrics, Mapping) else {}
        for key in ("auc", "accuracy"):
            v = m.get(key)
            if isinstance(v, int | float) and not isinstance(v, bool):
                return key, float(v)
        return None


@dataclass(frozen=True)
class BundleInfo:
    """What the card says about a bundle (reading it never imports TensorFlow)."""

    path: Path
    card: Mapping[str, Any]
    card_sha256: str | None = None  # of the card.json bytes parsed
    computed: Mapping[str, str] | None = field(default=None, compare=False)  # set by verify_bundle

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
        """The main file's sha256: computed from the file when verified, else the card's claim."""
        files = self.card["files"]
        main = MODEL_FILE if MODEL_FILE in files else next(iter(files))
        if self.computed and main in self.computed:
            return self.computed[main]
        return str(self.card.get("sha256") or files[main])

    @property
    def gradcam_layer(self) -> str | None:
        return self.card.get("gradcam_layer")

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def record(self) -> Card:
        """The card, typed (checked when the card was read)."""
        return Card.from_json(self.card, self.path / CARD_FILE)


def bundle_dirs(models_root: str | Path) -> list[Path]:
    """The bundle folders directly under ``models_root`` (those holding a ``card.json``, a
    dangling link included so that it is reported), by name; none for a missing folder."""
    root = Path(models_root)
    if not root.is_dir():
        return []
    return [p for p in sorted(root.iterdir()) if os.path.lexists(p / CARD_FILE)]


def iter_bundles(models_root: str | Path) -> Iterator[tuple[Path, BundleInfo | BundleError]]:
    """Every bundle folder under ``models_root`` with its card read (no hash check, no
    TensorFlow), or the :class:`BundleError` reading it gave: the one scan of a models folder;
    each caller decides what a bad card means for it."""
    for sub in bundle_dirs(models_root):
        try:
            yield sub, read_card(sub)
        except BundleError as err:
            yield sub, err


def read_card(bundle_dir: str | Path) -> BundleInfo:
    """Read and check ``card.json`` of a bundle folder (no hash check, no TensorFlow)."""
    bundle_dir = Path(bundle_dir)
    card_path = bundle_dir / CARD_FILE
    if not bundle_dir.is_dir():
        raise BundleError("not a bundle folder (missing or not a directory)", bundle_dir)
    if not card_path.is_file():
        raise BundleError(f"missing {CARD_FILE}", bundle_dir)
    card, raw = read_json_object_bytes(card_path, "card", BundleError)
    check_card(card, card_path)
    return BundleInfo(bundle_dir, card, hashlib.sha256(raw).hexdigest())


def check_card(card: Mapping[str, Any], card_path: str | Path) -> None:
    """Raise :class:`BundleError` (one line naming the card) for a field that is missing, of
    the wrong type or inconsistent with ``labels.py``."""
    missing = [k for k in REQUIRED_CARD_KEYS if k not in card]
    if missing:
        raise BundleError(f"card lacks {', '.join(missing)}", card_path)
    if not plain_name(card["name"]):
        raise BundleError(f"card name {str(card['name'])[:60]!r} is not a plain name (letters, digits, ._+-)",
                          card_path)
    if card["kind"] not in KINDS:
        raise BundleError(f"card kind {str(card['kind'])[:40]!r} is not one of {', '.join(KINDS)}", card_path)
    if not isinstance(card["task"], str):
        raise BundleError("card task must be a string", card_path)
    try:
        task = get_task(card["task"])
    except Exception:  # noqa: BLE001 - unknown task, whatever labels.py raises
        raise BundleError(f"card task {card['task'][:40]!r} is not a known task", card_path) from None
    classes = card["classes"]
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise BundleError("card classes must be a list of class names", card_path)
    if tuple(classes) != tuple(task.classes):
        raise BundleError(f"card classes {classes[:8]} are not the classes of task {task.name!r} "
                          f"({', '.join(task.classes)}, in that order)", card_path)
    if not isinstance(card["version"], (str, int, float)) or isinstance(card["version"], bool):
        raise BundleError("card version must be a string", card_path)
    files = card["files"]
    if not isinstance(files, dict) or not files:
        raise BundleError("card 'files' must map file names to sha256", card_path)
    for fname, digest in files.items():
        if not plain_name(fname) or fname == CARD_FILE:
            raise BundleError(f"card 'files' entry {str(fname)[:60]!r} is not a plain file name inside "
                              "the bundle", card_path)
        if not isinstance(digest, str) or not _HEX_RE.match(digest):
            raise BundleError(f"card 'files' entry {fname!r}: {str(digest)[:20]!r} is not a sha256 hex digest",
                              card_path)
    if card["kind"] == "model" and MODEL_FILE not in files:
        raise BundleError(f"card 'files' does not list {MODEL_FILE}", card_path)
    if "sha256" in card:
        main = MODEL_FILE if MODEL_FILE in files else next(iter(files))
        if card["sha256"] != files[main]:
            raise BundleError(f"card sha256 {str(card['sha256'])[:12]}... differs from its 'files' entry "
                              f"for {main} ({files[main][:12]}...)", card_path)
    layer = card.get("gradcam_layer")
    if layer is not None and not isinstance(layer, str):
        raise BundleError("card gradcam_layer must be a layer name", card_path)


def check_manifest(manifest: Mapping[str, Any], path: str | Path) -> dict[str, Mapping[str, Any]]:
    """The ``bundles`` mapping of a manifest; :class:`BundleError` for a malformed one or one
    whose schema does not hash the cards."""
    schema = manifest.get("schema")
    if schema != MANIFEST_SCHEMA:
        raise BundleError(f"manifest schema {str(schema)[:40]!r} is not {MANIFEST_SCHEMA!r} (which also "
                          "hashes each card.json); regenerate it with 'mammo models manifest'", path)
    bundles = manifest.get("bundles")
    if not isinstance(bundles, dict):
        raise BundleError("malformed manifest: 'bundles' must map bundle names to entries", path)
    for name, entry in bundles.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("files"), dict) \
                or not isinstance(entry.get("card"), str):
            raise BundleError(f"malformed manifest entry {str(name)[:60]!r}: needs 'files' and 'card'", path)
    return bundles


def verify_bundle(bundle_dir: str | Path, manifest: Mapping[str, Any] | None = None) -> BundleInfo:
    """Check every file of the bundle against the card (and the manifest entry, if given).

    Raises :class:`BundleError` naming the file on a missing file or a hash mismatch.
    """
    info = read_card(bundle_dir)
    root = os.path.realpath(info.path)
    computed = {}
    for fname, expected in info.card["files"].items():
        fpath = info.path / fname
        if not os.path.lexists(fpath):
            raise BundleError(f"missing file {fname} listed in {CARD_FILE}", fpath)
        if os.path.dirname(os.path.realpath(fpath)) != root:
            raise BundleError(f"file {fname} listed in {CARD_FILE} leads outside the bundle (symlink)", fpath)
        try:
            actual = sha256_file(fpath)
        except UnsafeFile as exc:
            raise BundleError(str(exc), fpath) from None
        except OSError as exc:
            raise BundleError(f"cannot read: {exc.strerror or exc}", fpath) from None
        computed[fname] = actual
        if actual != expected:
            raise BundleError(
                f"sha256 mismatch: card says {expected[:12]}..., file is {actual[:12]}... "
                "(modified or corrupted; refusing to load)",
                fpath,
            )
    if MODEL_FILE in computed:
        config = check_keras_archive(info.path / MODEL_FILE)
        n_out = keras_output_units(config) if info.kind == "model" else None
        why = None if n_out is None else outputs_problem(info, n_out)
        if why:
            raise BundleError(why, info.path / CARD_FILE)
    if manifest is not None:
        entry = check_manifest(manifest, info.path.parent / MANIFEST_FILE).get(info.name)
        if entry is None:
            raise BundleError(f"bundle {info.name!r} is not in {MANIFEST_FILE}", info.path)
        if entry.get("files") != dict(info.card["files"]):
            raise BundleError(
                f"files or hashes differ from {MANIFEST_FILE} entry {info.name!r}", info.path
            )
        if entry.get("card") != info.card_sha256:
            raise BundleError(
                f"sha256 mismatch: {MANIFEST_FILE} says {str(entry.get('card'))[:12]}..., the card is "
                f"{str(info.card_sha256)[:12]}... (card edited after the manifest; refusing to load)",
                info.path / CARD_FILE)
    return replace(info, computed=computed)


#: Largest total uncompressed size of a model.keras archive and largest expansion ratio of one
#: member (a zip bomb declares gigabytes in a few kilobytes).
MAX_ARCHIVE_BYTES = 4 << 30
MAX_MEMBER_RATIO = 1000
#: Layer classes that carry code; refused before Keras sees the file (safe_mode refuses them too).
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer"})


def _class_names(obj: Any, depth: int = 0) -> Iterator[str]:
    if depth > 200:
        raise BundleError("config.json is nested too deeply")
    if isinstance(obj, dict):
        if isinstance(obj.get("class_name"), str):
            yield obj["class_name"]
        for v in obj.values():
            yield from _class_names(v, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            yield from _class_names(v, depth + 1)


def check_keras_archive(path: str | Path) -> Any:
    """Check a ``model.keras`` zip without TensorFlow: a zip archive with a ``config.json``; no
    member outside the archive (absolute or ``..`` names); no member expanding more than
    ``MAX_MEMBER_RATIO`` x, none larger than ``MAX_ARCHIVE_BYTES`` in all; no layer class that
    carries code (``Lambda``, ``TFSMLayer``). Raises :class:`BundleError` naming the file;
    returns the parsed ``config.json``."""
    import zipfile

    path = Path(path)
    if read_head(path, 4) != b"PK\x03\x04":
        raise BundleError("not a Keras model file (a .keras file is a zip archive)", path)
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            total = 0
            for zi in infos:
                parts = zi.filename.replace("\\", "/").split("/")
                if zi.filename.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                    raise BundleError(f"archive member {zi.filename[:80]!r} points outside the archive", path)
                total += zi.file_size
                if zi.file_size > (1 << 20) and zi.file_size > MAX_MEMBER_RATIO * max(1, zi.compress_size):
                    raise BundleError(f"archive member {zi.filename[:80]!r} expands {zi.file_size:,} bytes "
                                      f"from {zi.compress_size:,} (a zip bomb?)", path)
            if total > MAX_ARCHIVE_BYTES:
                raise BundleError(f"archive expands to {total:,} bytes, over {MAX_ARCHIVE_BYTES:,}", path)
            if "config.json" not in zf.namelist():
                raise BundleError("not a Keras model archive (no config.json)", path)
            raw = zf.read("config.json")
    except BundleError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as exc:
        raise BundleError(f"not a readable Keras model archive ({type(exc).__name__}: {exc})", path) from None
    try:
        config = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"config.json is not readable JSON ({type(exc).__name__})", path) from None
    try:
        bad = sorted({c for c in _class_names(config) if c in CODE_LAYERS})
    except BundleError as err:
        raise BundleError(err.problem, path) from None
    if bad:
        raise BundleError(f"model contains {', '.join(bad)} layers (code inside a model file); "
                          "refusing to load", path)
    return config


def keras_output_units(config: Any) -> int | None:
    """The number of outputs of a saved Keras model, read from its ``config.json`` without
    TensorFlow: the ``units`` of its one output layer when that is a Dense-like layer; None when
    the config does not say it that simply (then only loading the model tells)."""
    try:
        cfg = config["config"]
        layers = cfg["layers"]
        if config.get("class_name") == "Sequential":
            out = layers[-1]
        else:
            outs = cfg["output_layers"]
            if outs and isinstance(outs[0], list):
                if len(outs) != 1:
                    return None
                outs = outs[0]
            out = next(la for la in layers if (la.get("name") or la["config"].get("name")) == outs[0])
        units = out["config"].get("units")
    except (KeyError, TypeError, IndexError, AttributeError, StopIteration):
        return None
    return units if isinstance(units, int) and not isinstance(units, bool) and units > 0 else None


def outputs_problem(info: BundleInfo, n_out: int) -> str | None:
    """Why a model with ``n_out`` outputs does not fit the card of ``info`` (None when it does)."""
    if n_out == len(info.classes):
        return None
    return (f"model {info.name!r}: model.keras has {n_out} outputs but the card lists "
            f"{len(info.classes)} classes ({', '.join(info.classes)})")


def load_model(bundle_dir: str | Path, verify: bool = True):
    """Load the Keras model of a bundle with ``safe_mode=True`` (after the hash check)."""
    info = verify_bundle(bundle_dir) if verify else read_card(bundle_dir)
    if not info.model_path.is_file():
        raise BundleError(f"missing {MODEL_FILE}", info.path)
    if read_head(info.model_path, 4) != b"PK\x03\x04":
        raise BundleError("not a Keras model file (a .keras file is a zip archive)", info.model_path)
    tfload.keras_backend()  # quietly, once (TensorFlow unless KERAS_BACKEND names another)
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
    if not os.path.lexists(path):
        raise BundleError(f"missing {MANIFEST_FILE}", models_root)
    manifest = read_json_object(path, "manifest", BundleError)
    check_manifest(manifest, path)
    return manifest


def write_manifest(models_root: str | Path) -> dict[str, Any]:
    """(Re)write ``MANIFEST.json`` from the cards of every bundle folder under ``models_root``."""
    models_root = Path(models_root)
    bundles = {}
    for sub in bundle_dirs(models_root):
        info = verify_bundle(sub)
        bundles[info.name] = {
            "path": sub.name,
            "kind": info.kind,
            "task": info.task,
            "version": info.version,
            "files": dict(info.card["files"]),
            "card": info.card_sha256,
        }
    manifest = {"schema": MANIFEST_SCHEMA, "bundles": bundles}
    atomic_write_text(models_root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest
