"""Persistent viewer settings (QSettings, INI format, per user).

Tests point the INI location at a temporary folder with
``QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))``
before creating the window, so they never touch the user's settings.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from PyQt6.QtCore import QSettings

if TYPE_CHECKING:  # pragma: no cover
    from app.main_window import MainWindow

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


def restore_window(win: MainWindow, s: QSettings) -> str:
    """Geometry, overlay, image and reading choices of the last session; returns the heatmap
    model to select once the models are loaded."""
    geom = s.value("window/geometry")
    if geom is not None:
        win.restoreGeometry(geom)
    else:
        win.resize(1400, 900)
    win.opacity.setValue(round(100 * get_float(s, "overlay/opacity", 0.4)))
    win.overlay_check.setChecked(get_bool(s, "overlay/on", True))
    win.side_check.setChecked(get_bool(s, "overlay/side_by_side", False))
    i = win.method_combo.findData(get_str(s, "overlay/method", "gradcam"))
    win.method_combo.setCurrentIndex(max(i, 0))
    win.auto_check.setChecked(get_bool(s, "image/auto", True))
    win.invert_check.setChecked(get_bool(s, "image/invert", False))
    try:
        bits = int(get_str(s, "read/bits", "16") or 16)
    except ValueError:
        bits = 16
    win.set_read_bits(bits if bits in win.bits_actions else 16, reopen=False)
    engine = get_str(s, "engine/name", "auto")
    win.set_engine(engine if engine in win.engine_actions else "auto",
                   get_str(s, "engine/precision", "") == "bf16")
    return get_str(s, "overlay/model", "ensemble")


def save_window(win: MainWindow, s: QSettings) -> None:
    s.setValue("window/geometry", win.saveGeometry())
    s.setValue("window/splitter", win.splitter.saveState())
    s.setValue("overlay/opacity", win.opacity.value() / 100.0)
    s.setValue("overlay/on", win.overlay_check.isChecked())
    s.setValue("overlay/side_by_side", win.side_check.isChecked())
    s.setValue("overlay/method", win.method_combo.currentData())
    model = win.heat_model.currentData()
    if model:
        s.setValue("overlay/model", model)
    s.setValue("image/auto", win.auto_check.isChecked())
    s.setValue("image/invert", win.invert_check.isChecked())
    s.sync()
