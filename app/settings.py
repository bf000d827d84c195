"""Persistent viewer settings (QSettings, INI format, per user).

Tests point the INI location at a temporary folder with
``QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))``
before creating the window, so they never touch the user's settings.
"""
from __future__ import annotations

from PyQt6.QtCore import QSettings

ORGANIZATION = "mammo-patches"
APPLICATION = "mammo-viewer"
MAX_RECENT = 8


def make_settings() -> QSettings:
    return QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION,
                     APPLICATION)


def get_str(s: QSettings, key: str, default: str = "") -> str:
    v = s.value(key, default)
    return default if v is None else str(v)


def get_float(s: QSettings, key: str, default: float) -> float:
    try:
        return float(s.value(key, default))
    except (TypeError, ValueError):
        return default


def get_bool(s: QSettings, key: str, default: bool) -> bool:
    v = s.value(key, default)
    if isinstance(v, str):
        return v.lower() in ("1", "true", "yes", "on")
    return bool(v)


def get_list(s: QSettings, key: str) -> list[str]:
    v = s.value(key, [])
    if v is None:
        return []
    if isinstance(v, str):
        return [v] if v else []
    return [str(x) for x in v]


def push_recent(s: QSettings, path: str) -> list[str]:
    recent = [p for p in get_list(s, "recent") if p != path]
    recent.insert(0, path)
    recent = recent[:MAX_RECENT]
    s.setValue("recent", recent)
    return recent
