"""The viewer's start: no display is one line saying how to run it instead (before Qt starts,
and in `make run`'s check before any library is installed); numeric options are checked at
parse time (an attack from issue 26: `--screenshot-timeout inf` ended in an OverflowError
traceback); text from files (names, DICOM header) is shown as plain text, never as markup
(issue 26 N3: a crafted file printed a red "REVIEWED: NO ABNORMALITY" banner into the view)."""
from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app import qtdeps
from app.main import build_parser

REPO = Path(__file__).resolve().parents[1]
CRAFTED = "<b style=color:red>REVIEWED: NO ABNORMALITY</b>"
CRAFTED_NAME = "<b style=color:red>REVIEWED: NO ABNORMALITY"  # a file name holds no "/"


def _bare_env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "cfg"), XDG_DATA_HOME=str(tmp_path / "data"),
               PYTHONPATH=str(REPO), **extra)
    return env


def test_without_a_display_the_viewer_says_how_to_run_it_in_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "app"], capture_output=True, text=True,
                         env=_bare_env(tmp_path), cwd=str(REPO), timeout=120, check=False)
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("mammo-viewer: error: no display")
    for how in ("desktop", "ssh -X", "xvfb-run make run", "--screenshot"):
        assert how in line
    assert "Traceback" not in res.stderr and "could not connect" not in res.stderr


def test_make_runs_check_says_it_first_and_installs_nothing():
    def run(*_a, **_k):
        raise AssertionError("nothing is run or installed without a display")

    out = io.StringIO()
    code = qtdeps.main([], run=run, out=out, euid=0, which=lambda n: f"/usr/bin/{n}",
                       env={"PATH": "/usr/bin"})
    assert code == 1 and out.getvalue().count("\n") == 1
    assert "xvfb-run make run" in out.getvalue()
    # `make run ARGS="x.dcm --screenshot shot.png"` needs no display, nor the X11 libraries
    out = io.StringIO()
    assert qtdeps.main(["--", "x.dcm", "--screenshot", "shot.png"], run=run, out=out,
                       euid=0, which=lambda n: f"/usr/bin/{n}", env={}) == 0
    assert out.getvalue() == ""


@pytest.mark.parametrize(("env", "ok"), [
    ({}, False),
    ({"DISPLAY": ":0"}, True),
    ({"WAYLAND_DISPLAY": "wayland-0"}, True),
    ({"QT_QPA_PLATFORM": "offscreen"}, True),
    ({"QT_QPA_PLATFORM": "xcb"}, False),
    ({"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":1"}, True),
    ({"QT_QPA_PLATFORM": "wayland", "DISPLAY": ":1"}, False),
])
def test_display_problem(env, ok):
    why = qtdeps.display_problem(env)
    assert (why is None) == ok
    if why is not None:
        assert "\n" not in why and "xvfb-run make run" in why
    assert qtdeps.display_problem(env, system="darwin") is None


def test_screenshot_timeout_inf_is_a_usage_error_not_a_traceback(tmp_path):
    res = subprocess.run([sys.executable, "-m", "app", "--screenshot", str(tmp_path / "s.png"),
                          "--screenshot-timeout", "inf"], capture_output=True, text=True,
                         env=_bare_env(tmp_path, QT_QPA_PLATFORM="offscreen"), cwd=str(REPO),
                         timeout=120, check=False)
    assert res.returncode == 2, res.stderr
    assert "--screenshot-timeout" in res.stderr and "finite" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("args", [
    ["--screenshot-timeout", "nan"], ["--screenshot-timeout", "-5"],
    ["--screenshot-timeout", "1e309"], ["--screenshot-timeout", "0"],
    ["--screenshot-timeout", "ten"], ["--size", "0x900"], ["--size", "1400x1e9"],
    ["--size", "99999999999999999999x900"], ["--size", "big"],
])
def test_numeric_options_are_checked_at_parse_time(args, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert args[0] in err and "Traceback" not in err


def test_numeric_options_in_range_parse():
    a = build_parser().parse_args(["--screenshot-timeout", "240", "--size", "1200x800"])
    assert a.screenshot_timeout == 240.0 and a.size == (1200, 800)


@pytest.mark.gui
def test_file_text_is_never_markup(qtbot, tmp_path):
    """A crafted file name and DICOM header value show as the characters they are."""
    from PyQt6.QtCore import Qt
    from PyQt6.QtWidgets import QLabel

    from app.dialogs.errors import error_box
    from app.text import plain_tooltip
    from app.views.mammogram_panel import MammogramPanel
    from mammo_core.mammogram import Mammogram

    px = np.zeros((400, 300), dtype=np.uint8)
    px[50:350, 20:200] = 120
    m = Mammogram(px, str(tmp_path / f"{CRAFTED_NAME}.png"), spacing_mm=(0.2, 0.2),
                  header=(("ImageComments", CRAFTED),), kind="dicom")
    p = MammogramPanel()
    qtbot.addWidget(p)
    p.open_mammogram(m)
    shown = [lab for lab in p.findChildren(QLabel) if "REVIEWED" in lab.text()]
    assert shown, "the file name is shown somewhere"
    assert all(lab.textFormat() == Qt.TextFormat.PlainText for lab in shown)
    cells = [p.header_table.item(r, 1).text() for r in range(p.header_table.rowCount())]
    assert CRAFTED in cells
    box = error_box(p, "Open", f"{CRAFTED}.dcm: cannot read")
    assert box.textFormat() == Qt.TextFormat.PlainText
    box.close()
    from app.results_panel import ResultsPanel

    panel = ResultsPanel()
    qtbot.addWidget(panel)
    panel.set_patch(f"{CRAFTED_NAME}.png", "mass_benign", CRAFTED)
    assert panel.patch_label.textFormat() == Qt.TextFormat.PlainText
    assert "&lt;b style=color:red&gt;" in panel.truth_label.text()  # escaped in its rich text
    tip = plain_tooltip(f"{CRAFTED_NAME}.png\nrow 1")
    assert "<b " not in tip and "&lt;b style=color:red&gt;" in tip


@pytest.mark.gui
def test_the_patch_list_folds_in_the_mammogram_tab_and_comes_back(qtbot, tmp_path):
    """Issue 27: the mammogram gets the screen. The list folds in the Mammogram tab, returns in
    the Patch tab, and a window closed in the Mammogram tab reopens with the list."""
    from PyQt6.QtCore import QSettings

    from app.main import build_window

    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "cfg"))
    (tmp_path / "models").mkdir()

    def window():
        w = build_window(tmp_path / "models", interactive_dialogs=False)
        qtbot.addWidget(w)
        w.resize(1400, 900)
        w.show()
        qtbot.waitExposed(w)
        return w

    win = window()
    width = win.ui.splitter.sizes()[0]
    assert width > 50 and win.browser.isVisible()
    win.ui.tabs.setCurrentWidget(win.mammo_tab)
    assert win.browser.isHidden()
    qtbot.waitUntil(lambda: win.ui.splitter.sizes()[0] == 0)
    win.ui.tabs.setCurrentWidget(win.patch_tab)
    qtbot.waitUntil(lambda: win.ui.splitter.sizes()[0] > 50)
    win.ui.tabs.setCurrentWidget(win.mammo_tab)
    win.close()  # saves the layout with the list
    win2 = window()
    try:
        assert win2.browser.isVisible() and win2.ui.splitter.sizes()[0] > 50
    finally:
        win2.shutdown(10)
