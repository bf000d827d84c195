"""The on-disk cache of converted (OpenVINO IR) model graphs.

One entry per key (a digest of the models' file hashes, the engine's version and the precision):
a folder ``<key>/`` with ``model.xml``, ``model.bin`` and ``entry.json`` (the key, the engine
version, the precision and the sha256 of both model files). An entry is used only when
``entry.json`` names the same key and version and both files hash as it says; anything else (a
file of another version, a truncated or edited file) is logged in one line, removed where
possible and rebuilt, never used. A folder that cannot be written (read-only, full) keeps the
converted graph in memory only, with one log line. Entries are written into a temporary folder
beside their place and renamed into it, so a reader never sees half an entry.

Research use only — not a medical device.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENTRY_FILE = "entry.json"
ENTRY_SCHEMA = "mammo.engine-cache/1"


def default_cache_dir() -> Path:
    """``$MAMMO_ENGINE_CACHE``, else ``$XDG_CACHE_HOME/mammo-patches/engines`` (default
    ``~/.cache/mammo-patches/engines``)."""
    env = os.environ.get("MAMMO_ENGINE_CACHE", "").strip()
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mammo-patches" / "engines"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_key(model_hashes: list[str], engine: str, version: str, precision: str, share: bool) -> str:
    text = json.dumps({"models": list(model_hashes), "engine": engine, "version": version,
                       "precision": precision, "share": bool(share), "schema": ENTRY_SCHEMA},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class IRCache:
    """Converted graphs by key in ``folder`` (None: :func:`default_cache_dir`)."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else default_cache_dir()
        self._warned = False

    def _entry(self, key: str) -> Path:
        return self.folder / key

    def load(self, core: Any, key: str, version: str, precision: str) -> Any | None:
        """The cached ``openvino.Model`` for ``key``, or None (absent, stale or corrupted: then
        logged and removed where possible)."""
        entry = self._entry(key)
        if not entry.exists():
            return None
        why = None
        try:
            meta = json.loads((entry / ENTRY_FILE).read_text(encoding="utf-8"))
            if not isinstance(meta, dict) or meta.get("schema") != ENTRY_SCHEMA:
                why = "not an entry of this cache version"
            elif meta.get("key") != key or meta.get("version") != version or meta.get("precision") != precision:
                why = f"made by {meta.get('version')!r} / {meta.get('precision')!r} for another key"
            else:
                for name in ("model.xml", "model.bin"):
                    if _sha256(entry / name) != meta.get("files", {}).get(name):
                        why = f"{name} does not match its recorded sha256 (corrupted)"
                        break
            if why is None:
                return core.read_model(str(entry / "model.xml"), str(entry / "model.bin"))
        except (OSError, ValueError, RuntimeError, TypeError, AttributeError) as err:
            why = f"unreadable ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        log.warning("engine cache entry %s: %s; rebuilding it", entry, why)
        shutil.rmtree(entry, ignore_errors=True)
        return None

    def store(self, ov: Any, model: Any, key: str, version: str, precision: str) -> bool:
        """Write ``model`` (an ``openvino.Model``) under ``key``; False (one log line per cache)
        when the folder cannot take it: the graph is then kept in memory only."""
        tmp = None
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=self.folder))
            ov.save_model(model, str(tmp / "model.xml"), compress_to_fp16=False)
            meta = {"schema": ENTRY_SCHEMA, "key": key, "version": version, "precision": precision,
                    "files": {n: _sha256(tmp / n) for n in ("model.xml", "model.bin")}}
            (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
            target = self._entry(key)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
            return True
        except (OSError, RuntimeError) as err:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if not self._warned:
                self._warned = True
                log.warning("engine cache %s cannot be written (%s); the compiled model is kept in "
                            "memory only", self.folder, getattr(err, "strerror", None) or err)
            return False


__all__ = ["ENTRY_FILE", "IRCache", "cache_key", "default_cache_dir"]
