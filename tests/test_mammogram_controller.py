"""The Mammogram tab's controller without TensorFlow and without a window: regions cut as the
dataset builders cut them, the map on the shared model service with its generation guard (a
map started before "Choose models folder" is discarded), errors with their traceback, and the
tab's modules kept to their own objects (an AST check)."""
from __future__ import annotations

import ast
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_session import FakeSession

from app.controllers.mammogram import MammogramController
from app.service import ModelService
from mammo_core.mammogram import Mammogram
from mammo_core.protocol import cut_window, point_window

pytestmark = pytest.mark.gui
WAIT = 10_000
REPO = Path(__file__).resolve().parents[1]
# the Mammogram tab (its widget, its view and its controller), and with it every other tab,
# view, controller and dialog: each touches only its own objects
TAB_MODULES = ("app/views/mammogram_panel.py", "app/views/mammogram_view.py",
               "app/controllers/mammogram.py")
OWN_OBJECTS_ONLY = sorted({*TAB_MODULES, "app/service.py",
                           *(p.relative_to(REPO).as_posix() for d in ("views", "controllers", "dialogs")
                             for p in (REPO / "app" / d).glob("*.py"))})


def _mammogram(source: str = "case_L_CC.png") -> Mammogram:
    px = (np.arange(600 * 500, dtype=np.uint32).reshape(600, 500) % 251).astype(np.uint8)
    px.flags.writeable = False
    return Mammogram(px, source, laterality="L", view="CC")


@pytest.fixture()
def service(qtbot, tmp_path):
    made: list[FakeSession] = []

    def factory(models_dir):
        made.append(FakeSession(models_dir))
        return made[-1]

    s = ModelService(tmp_path / "a", session_factory=factory)
    s.made = made
    with qtbot.waitSignal(s.modelsLoaded, timeout=WAIT):
        s.start_models()
    yield s
    s.shutdown(10)


class GatedScan:
    """A stand-in for scan_mammogram that waits for the test to let it finish."""

    def __init__(self, fail: bool = False):
        self.gate, self.started, self.fail = threading.Event(), threading.Event(), fail
        self.sessions: list = []

    def __call__(self, mammo, session, settings, progress, cancel):
        self.sessions.append(session)
        self.started.set()
        assert self.gate.wait(10)
        progress(1, 1)
        if self.fail:
            raise RuntimeError("scan exploded")
        return SimpleNamespace(source=mammo.source, complete=True, candidates=[])


def test_a_point_cuts_the_builders_window(qtbot):
    c = MammogramController()
    m = _mammogram()
    c.set_mammogram(m)
    with qtbot.waitSignal(c.regionCut) as sig:
        region = c.pick_point(300, 250, 30)
    assert sig.args[0] is region and region.how == "point r=30 px"
    assert region.box == point_window(300, 250, 30, m.shape)
    np.testing.assert_array_equal(region.patch.pixels, cut_window(m.pixels, region.box, m.full_scale))
    assert region.patch.source.startswith("case_L_CC.png [window top=")
    assert c.region_for(region.patch.key) is region
    c.set_mammogram(_mammogram("other_R_CC.png"))
    assert c.region_for(region.patch.key) is None  # not drawn on another mammogram


def test_no_models_no_map(qtbot):
    c = MammogramController()
    c.set_mammogram(_mammogram())
    with qtbot.waitSignal(c.mapFailed) as sig:
        assert not c.request_map()
    assert "not loaded" in sig.args[0]


def test_a_map_started_before_switching_models_is_discarded(qtbot, service, tmp_path):
    scan = GatedScan()
    c = MammogramController(service, scan=scan)
    c.set_mammogram(_mammogram())
    finished: list = []
    c.mapFinished.connect(finished.append)
    assert c.request_map() and c.map_running()
    assert scan.started.wait(10)
    service.start_models(tmp_path / "b")  # "Choose models folder" while the map runs
    assert finished == [None] and not c.map_running()
    scan.gate.set()
    qtbot.waitUntil(lambda: service.models_ready and not service.busy(), timeout=WAIT)
    qtbot.wait(100)  # any queued signal of the old map has arrived by now
    assert finished == [None] and c.maps == {}  # never shown, never cached
    # a map started now runs with the new models and is kept
    scan.started.clear()
    with qtbot.waitSignal(c.mapFinished, timeout=WAIT) as sig:
        assert c.request_map()
    assert sig.args[0].complete and scan.sessions[-1] is service.made[-1]
    assert c.current_map() is sig.args[0]


def test_a_map_that_fails_reports_its_traceback(qtbot, service):
    scan = GatedScan(fail=True)
    scan.gate.set()
    c = MammogramController(service, scan=scan)
    c.set_mammogram(_mammogram())
    failed: list = []
    c.mapFailed.connect(failed.append)
    with qtbot.waitSignal(c.errorOccurred, timeout=WAIT) as sig:
        c.request_map()
    message, title, details = sig.args
    assert "scan exploded" in message and title == "Abnormality map"
    assert "Traceback" in details and "RuntimeError: scan exploded" in details
    assert failed == ["scan exploded"] and not c.map_running()


def test_an_unreadable_mammogram_is_one_line_with_the_traceback_behind(qtbot, tmp_path):
    bad = tmp_path / "broken.dcm"
    bad.write_bytes(b"not a dicom")
    c = MammogramController()
    with qtbot.waitSignal(c.errorOccurred, timeout=WAIT) as sig:
        c.open_path(bad)
    message, title, details = sig.args
    assert message.startswith(str(bad)) and "\n" not in message and title == "Open mammogram"
    assert "Traceback" in details  # behind "Show Details…" and in viewer.log
    assert c.pending is None and c.mammogram is None


def _foreign_private_and_lookups(path: Path) -> list[str]:
    """``obj._name`` on anything but ``self``, widget/menu lookups by text, the host window's
    layout reached into."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            name = node.attr
            private = name.startswith("_") and not (name.startswith("__") and name.endswith("__"))
            on_self = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
            if private and not on_self:
                bad.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
            if name in ("findChild", "findChildren", "menuBar", "replaceWidget", "splitter",
                        "insertAction", "actions"):
                bad.append(f"{path.name}:{node.lineno} {ast.unparse(node)}")
        elif isinstance(node, ast.Constant) and node.value in ("&File", "&Help", "&Analysis", "&View"):
            bad.append(f"{path.name}:{node.lineno} menu text {node.value!r}")
    return bad


def test_the_mammogram_tab_touches_only_its_own_objects():
    assert all((REPO / m).is_file() for m in TAB_MODULES)
    found = [b for m in OWN_OBJECTS_ONLY for b in _foreign_private_and_lookups(REPO / m)]
    assert found == []


def test_the_ast_check_catches_the_old_patterns(tmp_path):
    old = tmp_path / "old_tab.py"
    old.write_text("def install(win, c):\n"
                   "    menus = {a.text(): a.menu() for a in win.menuBar().actions()}\n"
                   "    fm = menus.get('&File')\n"
                   "    win.splitter.replaceWidget(1, None)\n"
                   "    pool = c._executor\n"
                   "    win._update_count()\n")
    found = _foreign_private_and_lookups(old)
    assert any("menuBar" in b for b in found) and any("'&File'" in b for b in found)
    assert any("replaceWidget" in b for b in found) and any("c._executor" in b for b in found)
    assert any("win._update_count" in b for b in found)
