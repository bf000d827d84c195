"""Persistent viewer settings (QSettings, INI format, per user).

Tests point the INI location at a temporary folder with
``QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path))``
before creating the window, so they never touch the user's settings.
"""
from __future__ import annotations

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QMainWindow, QSplitter

from app.views.patch_tab import PatchTab
from app.window_ui import WindowUi

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


def restore_window(win: QMainWindow, tab: PatchTab, s: QSettings) -> int:
    """Geometry, overlay and image choices of the last session (the heatmap model to select once
    the models are loaded goes to ``tab.preferred_model``); returns the bits setting."""
    geom = s.value("window/geometry")
    if geom is not None:
        win.restoreGeometry(geom)
    else:
        win.resize(1400, 900)
    tab.opacity.setValue(round(100 * get_float(s, "overlay/opacity", 0.4)))
    tab.overlay_check.setChecked(get_bool(s, "overlay/on", True))
    tab.side_check.setChecked(get_bool(s, "overlay/side_by_side", False))
    i = tab.method_combo.findData(get_str(s, "overlay/method", "gradcam"))
    tab.method_combo.setCurrentIndex(max(i, 0))
    tab.auto_check.setChecked(get_bool(s, "image/auto", True))
    tab.invert_check.setChecked(get_bool(s, "image/invert", False))
    tab.preferred_model = get_str(s, "overlay/model", "ensemble")
    try:
        return int(get_str(s, "read/bits", "16") or 16)
    except ValueError:
        return 16


def save_window(win: QMainWindow, ui: WindowUi, tab: PatchTab, s: QSettings) -> None:
    s.setValue("window/geometry", win.saveGeometry())
    s.setValue("window/splitter", ui.splitter.saveState())
    s.setValue("overlay/opacity", tab.opacity.value() / 100.0)
    s.setValue("overlay/on", tab.overlay_check.isChecked())
    s.setValue("overlay/side_by_side", tab.side_check.isChecked())
    s.setValue("overlay/method", tab.method_combo.currentData())
    model = tab.heat_model.currentData()
    if model:
        s.setValue("overlay/model", model)
    s.setValue("image/auto", tab.auto_check.isChecked())
    s.setValue("image/invert", tab.invert_check.isChecked())
    s.sync()


def place_splitter(splitter: QSplitter, s: QSettings) -> None:
    """The browser | tabs | results sizes of the last session, else 27 % | rest | 27 %."""
    state = s.value("window/splitter")
    if state is None or not splitter.restoreState(state):
        total = max(splitter.width(), 1000)
        left, right = int(total * 0.27), int(total * 0.27)
        splitter.setSizes([left, total - left - right, right])
