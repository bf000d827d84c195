"""JSON output shared by training, the ensemble fit and the model tables.

``json_safe`` makes metric dicts strict-JSON: NaN and +/-inf become ``null`` (a metric that was not
estimated, never a fake number), numpy scalars become Python scalars, tuples become lists, paths
become strings and mapping keys become strings. ``write_json`` writes the result atomically.
"""
from __future__ import annotations

import json
import math
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from mammo_core.atomic import atomic_write_text
from mammo_core.safeio import SMALL_FILE_BYTES, read_bytes


def read_json_object(path: str | Path, what: str, error_cls: type[Exception]) -> dict[str, Any]:
    """The JSON object in ``path``; ``error_cls("unreadable <what>: ...", path)`` when it cannot
    be read or parsed, ``error_cls("<what> is not a JSON object", path)`` when it is not one."""
    return read_json_object_bytes(path, what, error_cls)[0]


def read_json_object_bytes(path: str | Path, what: str,
                           error_cls: type[Exception]) -> tuple[dict[str, Any], bytes]:
    """``read_json_object`` and the exact bytes parsed (to hash what was read, not a re-read).

    Only a regular file is read (a FIFO or device is refused without blocking), at most
    ``SMALL_FILE_BYTES``; nesting too deep for the parser is an error like any other."""
    try:
        raw = read_bytes(path, SMALL_FILE_BYTES)
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error_cls(f"unreadable {what}: {exc}", path) from None
    except RecursionError:
        raise error_cls(f"unreadable {what}: JSON nested too deeply", path) from None
    except ValueError as exc:  # e.g. integers with too many digits
        raise error_cls(f"unreadable {what}: {exc}", path) from None
    if not isinstance(data, dict):
        raise error_cls(f"{what} is not a JSON object", path)
    return data, raw


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts (for the types we write).

    dict -> dict with ``str`` keys; list/tuple -> list; numpy scalars -> Python scalars;
    non-finite floats -> None; ``Path`` -> str. Anything else is returned unchanged.
    """
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.generic):
        return json_safe(obj.item())
    if isinstance(obj, PurePath):
        return str(obj)
    return obj


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``json_safe(obj)`` to ``path`` atomically: indent 2, trailing newline."""
    path = Path(path)
    atomic_write_text(path, json.dumps(json_safe(obj), indent=2) + "\n")
    return path
