"""A trained model on disk: ``<dir>/model.keras`` + ``<dir>/card.json``, sha256-checked.

The card (JSON, read and written only by :mod:`mammo_core.card`, a typed and versioned
document) describes the model: name, kind, task, classes, input contract, architecture,
training (data, split, protocol, command), metrics (held-out, with how they were measured),
Grad-CAM layer, version, date, ``files`` ({file name: sha256}) and ``sha256`` (of the model file).

``assets/models/MANIFEST.json`` (schema ``mammo.manifest/2``) lists every bundled bundle with
the sha256 of each of its files *and of its card*, so nothing that decides an answer (weights,
classes, task) can change unnoticed; a bundle whose files do not match its card or the
manifest is refused with a clear message (the card's own checks: :meth:`Card.check`).
After :func:`verify_bundle`, ``BundleInfo.sha256`` is the hash computed
from the file itself (what reports give), not the card's claim. Models load with Keras
``safe_mode=True`` (no Lambda layers, no arbitrary code).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from mammo_core import __version__, tfload
from mammo_core.atomic import atomic_path, atomic_write_text
from mammo_core.card import (
    CARD_FILE,
    CARD_SCHEMA,
    INPUT_CONTRACT,
    MODEL_FILE,
    Card,
    card_json,
    parse_card,
)
from mammo_core.errors import BundleError, MammoError
from mammo_core.jsonutil import read_json_object, read_json_object_bytes
from mammo_core.paths import models_dir
from mammo_core.safeio import UnsafeFile, open_regular, read_head

MANIFEST_FILE = "MANIFEST.json"
MANIFEST_SCHEMA = "mammo.manifest/2"  # /2: each entry also hashes card.json


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a regular file (a FIFO or device raises ``OSError`` at once, never blocks)."""
    fd, _ = open_regular(path)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class BundleInfo:
    """A bundle folder and its card, read and checked once (reading never imports TensorFlow)."""

    path: Path
    card: Card
    card_sha256: str | None = None  # of the card.json bytes parsed
    computed: Mapping[str, str] | None = field(default=None, compare=False)  # set by verify_bundle

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def kind(self) -> str:
        return self.card.kind

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.card.classes

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def sha256(self) -> str:
        """The main file's sha256: computed from the file when verified, else the card's claim."""
        main = self.card.main_file
        if self.computed and main in self.computed:
            return self.computed[main]
        return self.card.sha256 or self.card.files[main]

    @property
    def gradcam_layer(self) -> str | None:
        return self.card.gradcam_layer

    @property
    def model_path(self) -> Path:
        return self.path / MODEL_FILE


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
    return BundleInfo(bundle_dir, parse_card(card, card_path), hashlib.sha256(raw).hexdigest())


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
    for fname, expected in info.card.files.items():
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
        archive = inspect_keras_archive(info.path / MODEL_FILE)
        n_out = keras_output_units(archive.config) if info.kind == "model" else None
        why = (None if n_out is None else outputs_problem(info, n_out)) or binding_problem(
            info, archive.binding, computed[MODEL_FILE])
        if why:
            raise BundleError(why, info.path / CARD_FILE)
    if manifest is not None:
        entry = check_manifest(manifest, info.path.parent / MANIFEST_FILE).get(info.name)
        if entry is None:
            raise BundleError(f"bundle {info.name!r} is not in {MANIFEST_FILE}", info.path)
        if entry.get("files") != dict(info.card.files):
            raise BundleError(
                f"files or hashes differ from {MANIFEST_FILE} entry {info.name!r}", info.path
            )
        if entry.get("card") != info.card_sha256:
            raise BundleError(
                f"sha256 mismatch: {MANIFEST_FILE} says {str(entry.get('card'))[:12]}..., the card is "
                f"{str(info.card_sha256)[:12]}... (card edited after the manifest; refusing to load)",
                info.path / CARD_FILE)
    return replace(info, computed=computed)


#: Largest total uncompressed size of a model.keras archive; largest expansion of the whole
#: archive over its file size (Keras stores its members uncompressed: 1.0 for every bundle here)
#: once it expands past ``RATIO_FREE_BYTES``; largest expansion ratio of one member (a zip bomb
#: declares gigabytes in a few kilobytes); largest ``config.json`` (a VGG16's is 20 kB) and
#: binding member. Nothing larger than these bounds is read.
MAX_ARCHIVE_BYTES = 4 << 30
MAX_ARCHIVE_RATIO = 20
RATIO_FREE_BYTES = 16 << 20
MAX_MEMBER_RATIO = 1000
MAX_CONFIG_BYTES = 16 << 20
MAX_BINDING_BYTES = 64 << 10
#: The member of model.keras that binds the model to its task and classes (written at training
#: time, covered by the model file's sha256): a card edited afterwards is refused.
BINDING_MEMBER = "mammo_binding"  # key in Keras's metadata.json
METADATA_MEMBER = "metadata.json"
BINDING_SCHEMA = "mammo.binding/1"
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


@dataclass(frozen=True)
class Binding:
    """What a model was trained for, stored inside its ``model.keras`` (:data:`BINDING_MEMBER`)."""

    task: str
    classes: tuple[str, ...]


@dataclass(frozen=True)
class KerasArchive:
    """The parts of a checked ``model.keras`` read without TensorFlow: its ``config.json`` and
    its binding (None for a model saved before bindings were written)."""

    config: Any  # parsed JSON, as Keras wrote it
    binding: Binding | None


def check_keras_archive(path: str | Path) -> Any:
    """:func:`inspect_keras_archive`'s parsed ``config.json``."""
    return inspect_keras_archive(path).config


def _read_member(zf: Any, name: str, limit: int, path: Path) -> bytes:
    """At most ``limit`` bytes of member ``name`` (more is refused, never read)."""
    if zf.getinfo(name).file_size > limit:
        raise BundleError(f"archive member {name} declares {zf.getinfo(name).file_size:,} bytes, over "
                          f"{limit:,} (refusing to read it)", path)
    with zf.open(name) as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise BundleError(f"archive member {name} is over {limit:,} bytes (refusing to read it)", path)
    return bytes(raw)


def inspect_keras_archive(path: str | Path) -> KerasArchive:
    """Check a ``model.keras`` zip without TensorFlow: a zip archive with a ``config.json``; no
    member outside the archive (absolute or ``..`` names); no member expanding more than
    ``MAX_MEMBER_RATIO`` x; the whole archive expanding to at most ``MAX_ARCHIVE_BYTES`` and, past
    ``RATIO_FREE_BYTES``, to at most ``MAX_ARCHIVE_RATIO`` x its file size (checked on the
    declared sizes before anything is decompressed); ``config.json`` at most ``MAX_CONFIG_BYTES``
    (read no further); no layer class that carries code (``Lambda``, ``TFSMLayer``); a binding
    member, if any, well formed. Raises :class:`BundleError` naming the file."""
    import zipfile

    path = Path(path)
    if read_head(path, 4) != b"PK\x03\x04":
        raise BundleError("not a Keras model file (a .keras file is a zip archive)", path)
    try:
        size = path.stat().st_size
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
            if total > RATIO_FREE_BYTES and total > MAX_ARCHIVE_RATIO * size:
                raise BundleError(f"archive expands to {total:,} bytes from {size:,} (over {MAX_ARCHIVE_RATIO}x "
                                  "its size; a zip bomb?)", path)
            names = zf.namelist()
            if "config.json" not in names:
                raise BundleError("not a Keras model archive (no config.json)", path)
            raw = _read_member(zf, "config.json", MAX_CONFIG_BYTES, path)
            raw_meta = _read_member(zf, METADATA_MEMBER, MAX_BINDING_BYTES, path) \
                if METADATA_MEMBER in names else None
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
    return KerasArchive(config, _binding_of(raw_meta, path))


def _binding_of(raw_meta: bytes | None, path: Path) -> Binding | None:
    """The binding kept under :data:`BINDING_MEMBER` in Keras's ``metadata.json`` (None when absent:
    a model saved before bindings were written)."""
    if raw_meta is None:
        return None
    try:
        meta = json.loads(raw_meta)
    except (ValueError, RecursionError):
        raise BundleError("metadata.json is not readable JSON", path) from None
    if not isinstance(meta, dict) or BINDING_MEMBER not in meta:
        return None
    d = meta[BINDING_MEMBER]
    if not (isinstance(d, dict) and d.get("schema") == BINDING_SCHEMA and isinstance(d.get("task"), str)
            and isinstance(d.get("classes"), list) and all(isinstance(c, str) for c in d["classes"])):
        raise BundleError(f"metadata.json's {BINDING_MEMBER} is not a {BINDING_SCHEMA} document", path)
    return Binding(d["task"], tuple(d["classes"]))


def bind_model(model_file: str | Path, task: str, classes: tuple[str, ...] | list[str]) -> None:
    """Store in a saved ``model.keras`` what it was trained for (task and classes), before its
    sha256 is taken: a card that later names another task or other classes is refused."""
    import zipfile

    doc = {"schema": BINDING_SCHEMA, "task": task, "classes": list(classes)}
    # kept inside Keras's own metadata.json (Keras writes it and never reads it back): a fourth
    # archive member would make keras.saving.load_model extract the whole archive, weights
    # included, to a temporary folder on every load
    model_file = Path(model_file)
    with zipfile.ZipFile(model_file) as zf:
        members = [(i, zf.read(i.filename)) for i in zf.infolist()]
    tmp = model_file.with_name(f".{model_file.name}.bind-tmp")
    with zipfile.ZipFile(tmp, "w") as out:
        for info, data in members:
            if info.filename == METADATA_MEMBER:
                meta = json.loads(data)
                meta[BINDING_MEMBER] = doc
                data = json.dumps(meta).encode()
            out.writestr(info, data)
    os.replace(tmp, model_file)


def _shipped_models() -> dict[str, str]:
    """model.keras sha256 -> card sha256 of the bundled models (their MANIFEST.json), for
    models saved before bindings were written; empty when it cannot be read."""
    try:
        manifest = read_manifest(models_dir())
    except MammoError:
        return {}
    out = {}
    for entry in manifest["bundles"].values():
        model = entry["files"].get(MODEL_FILE)
        if isinstance(model, str):
            out[model] = entry["card"]
    return out


def binding_problem(info: BundleInfo, binding: Binding | None, model_sha256: str) -> str | None:
    """Why the card of ``info`` is not the one its model was trained with (None when it is, or
    when nothing binds them): the task and classes stored in ``model.keras``, else, for a model
    shipped with this package before bindings were written, the card the bundled manifest hashes."""
    if binding is not None:
        if (binding.task, binding.classes) == (info.task, info.classes):
            return None
        return (f"model {info.name!r}: the card says task {info.task!r} ({', '.join(info.classes)}) but "
                f"model.keras was trained for {binding.task!r} ({', '.join(binding.classes)}); the card was "
                "edited after training, refusing")
    shipped = _shipped_models().get(model_sha256)
    if shipped is None or shipped == info.card_sha256:
        return None
    return (f"model {info.name!r}: this model.keras was shipped with another card (sha256 {shipped[:12]}..., "
            f"this one {str(info.card_sha256)[:12]}...); the card was edited after training, refusing")


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
        bind_model(tmp, str(card["task"]), [str(c) for c in card["classes"]])
    digest = sha256_file(out_dir / MODEL_FILE)
    full: dict[str, object] = {"schema": CARD_SCHEMA, "kind": "model", "version": "1.0.0"}
    full.update(card)
    full.setdefault("input", INPUT_CONTRACT.to_dict())
    full.setdefault("created", now_iso())
    full.setdefault("software", {"mammo": __version__})
    full["files"] = {MODEL_FILE: digest}
    full["sha256"] = digest
    write_card(out_dir, parse_card(full, out_dir / CARD_FILE))
    return read_card(out_dir)


def now_iso() -> str:
    """The time a card records (``created``): UTC, to the second."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


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


def write_card(bundle_dir: str | Path, card: Card) -> None:
    """The one card writer: ``card.json`` of ``bundle_dir`` from :func:`mammo_core.card.card_json`,
    atomically."""
    atomic_write_text(Path(bundle_dir) / CARD_FILE, json.dumps(card_json(card), indent=2) + "\n")


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
            "files": dict(info.card.files),
            "card": info.card_sha256,
        }
    manifest = {"schema": MANIFEST_SCHEMA, "bundles": bundles}
    atomic_write_text(models_root / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")
    return manifest
