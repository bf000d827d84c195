"""``mammo-viewer [PATH...]``: the desktop viewer (also ``python -m app``).

The window shows first; TensorFlow and the models load afterwards in a background worker, and
the first patch's prediction and heatmap appear as soon as they are ready. Without paths the
bundled sample patches open with the bundled models. Research use only — not a medical device.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import cast

from app.main_window import MainWindow
from app.qtdeps import display_problem
from app.settings import APPLICATION, ORGANIZATION, make_settings
from app.text import APP_DISPLAY_NAME
from mammo_core import __version__, logsetup
from mammo_core.atomic import atomic_path
from mammo_core.paths import models_dir as default_models_dir
from mammo_core.paths import samples_dir

_T0 = time.perf_counter()
log = logging.getLogger("mammo-viewer")
LOG_NAME = "viewer.log"
# their records reach the log file only (TensorFlow's retracing warnings, Keras' warnings)
QUIET_LOGGERS = ("tensorflow", "absl", "keras", "h5py", "py.warnings", "tf_keras_vis")


def version() -> str:
    return __version__


MAX_SCREENSHOT_TIMEOUT_S = 24 * 3600.0
MAX_SIDE_PX = 16384


def timeout_seconds(text: str) -> float:
    """``--screenshot-timeout``: a finite number of seconds from 1 to a day."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(v) or not 1.0 <= v <= MAX_SCREENSHOT_TIMEOUT_S:
        raise argparse.ArgumentTypeError(
            f"must be a finite number of seconds from 1 to {MAX_SCREENSHOT_TIMEOUT_S:.0f}, "
            f"got {text!r}")
    return v


def window_size(text: str) -> tuple[int, int]:
    """``--size WxH``: two whole numbers of pixels from 1 to 16384."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WxH like 1400x900, got {text!r}") from None
    if not (1 <= w <= MAX_SIDE_PX and 1 <= h <= MAX_SIDE_PX):
        raise argparse.ArgumentTypeError(f"each side from 1 to {MAX_SIDE_PX} px, got {text!r}")
    return w, h


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mammo-viewer",
        description="View mammogram patches with the bundled CNN classifiers, their ensemble "
                    "and Grad-CAM heatmaps. Research use only — not a medical device.",
        epilog="Without PATH the bundled sample patches open. Keys: Up/Down/PageUp/PageDown/"
               "Home/End move through patches, G toggles the heatmap, S side by side, I invert, "
               "F fit, Ctrl+R predicts every open patch, Ctrl+E exports a report, Ctrl+M opens a "
               "whole mammogram, F1 lists every shortcut. Images far larger than a patch open "
               "as whole mammograms; with --screenshot the abnormality map is computed and its "
               "best candidate opened as a patch first.")
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="patch files (npy, png, tif, jpg, pgm, dcm), stacked .npy arrays or "
                        "folders (a CBIS-DDSM patch-array folder shows its splits and labels); "
                        "whole mammograms (dcm, png, pgm, tif) open in the Mammogram tab")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                   help="folder of model bundles (default: the bundled assets/models)")
    p.add_argument("--screenshot", type=Path, default=None, metavar="FILE",
                   help="open PATHs, select the first patch, wait for its prediction and "
                        "heatmap (and, for up to 256 patches, every prediction), save a PNG "
                        "of the window to FILE and exit (1 on failure or timeout)")
    p.add_argument("--screenshot-timeout", type=timeout_seconds, default=300.0, metavar="SECONDS",
                   help="give up on --screenshot after this many seconds (default 300)")
    p.add_argument("--size", type=window_size, default=(1400, 900), metavar="WxH",
                   help="window size for --screenshot (default 1400x900)")
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    return p


DARK_QSS = """
QWidget { font-size: 10pt; }
QLabel#banner { background: #3a2a0a; color: #ffcf70; padding: 4px; font-weight: bold; }
QLabel#sectionTitle { font-weight: bold; font-size: 11pt; }
QLabel#patchName { font-weight: bold; font-size: 11pt; }
QLabel#verdict { font-size: 11pt; }
QLabel#dim { color: #9aa0aa; }
QLabel#notice { color: #ffcf70; border-top: 1px solid #444; padding-top: 6px; }
QLabel#statusNotice { color: #ffcf70; padding-right: 6px; }
QLabel#stateLabel { color: #c8ccd4; }
QTableView { gridline-color: #333; selection-background-color: #2f5fa8; }
QToolBar { spacing: 6px; border: none; }
"""


def apply_style(app) -> None:
    """Fusion with a dark palette: dark surroundings keep attention on the image."""
    from PyQt6.QtGui import QColor, QPalette

    app.setStyle("Fusion")
    pal = QPalette()
    c = {
        QPalette.ColorRole.Window: QColor(37, 38, 42),
        QPalette.ColorRole.WindowText: QColor(225, 227, 232),
        QPalette.ColorRole.Base: QColor(27, 28, 31),
        QPalette.ColorRole.AlternateBase: QColor(33, 34, 38),
        QPalette.ColorRole.ToolTipBase: QColor(50, 52, 58),
        QPalette.ColorRole.ToolTipText: QColor(235, 235, 235),
        QPalette.ColorRole.Text: QColor(225, 227, 232),
        QPalette.ColorRole.Button: QColor(48, 50, 55),
        QPalette.ColorRole.ButtonText: QColor(225, 227, 232),
        QPalette.ColorRole.BrightText: QColor(255, 90, 90),
        QPalette.ColorRole.Highlight: QColor(47, 95, 168),
        QPalette.ColorRole.HighlightedText: QColor(255, 255, 255),
        QPalette.ColorRole.Link: QColor(110, 160, 255),
        QPalette.ColorRole.PlaceholderText: QColor(130, 134, 142),
    }
    for role, color in c.items():
        pal.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText,
                 QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, QColor(120, 122, 128))
    app.setPalette(pal)
    app.setStyleSheet(DARK_QSS)


def log_dir() -> Path:
    """The viewer's data folder (Qt's AppDataLocation once the application is named; else
    $XDG_DATA_HOME/mammo-patches)."""
    from PyQt6.QtCore import QStandardPaths

    where = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    if where:
        return Path(where)
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "mammo-patches"


def _install_excepthook(window_ref: list) -> None:
    """An exception in a slot becomes a message with its traceback under "Details" and in the
    log file, not an abort (PyQt6's default)."""

    def hook(etype, value, tb):
        details = "".join(traceback.format_exception(etype, value, tb))
        win = window_ref[0] if window_ref else None
        text = f"Unexpected error: {etype.__name__}: {value}"
        try:
            if win is not None:
                win.report_error(text, "Error", details)
            else:
                log.error("%s", text, extra={"details": details})
        except Exception:  # noqa: BLE001 - reporting must never raise
            traceback.print_exception(etype, value, tb)

    sys.excepthook = hook


def create_app(argv: list[str] | None = None):
    from PyQt6.QtWidgets import QApplication

    app = cast("QApplication", QApplication.instance() or QApplication(argv or [sys.argv[0]]))
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName(APP_DISPLAY_NAME)
    apply_style(app)
    return app


def build_window(models_dir: Path | None = None, settings=None, interactive_dialogs=True):
    """The main window, shown, before any model is loaded (no TensorFlow import here)."""
    win = MainWindow(settings if settings is not None else make_settings(),
                     models_dir or default_models_dir(), interactive_dialogs=interactive_dialogs)
    return win


RUN_ALL_IN_SHOT = 256  # --screenshot predicts every patch of folders up to this size
WATCHDOG_GRACE_S = 15.0  # the hard watchdog fires this long after --screenshot-timeout


def start_watchdog(seconds: float, on_fire):
    """Call ``on_fire()`` from a daemon thread after ``seconds`` unless the returned ``stop()``
    is called first. Unlike a Qt timer it fires even when the event loop is blocked."""
    import threading

    timer = threading.Timer(max(0.0, float(seconds)), on_fire)
    timer.daemon = True
    timer.start()
    return timer.cancel


def screenshot_target_problem(out: Path) -> str | None:
    """Why ``--screenshot FILE`` cannot be written (checked before the window is built), or None.
    Creates the missing folders, and tries a probe file there (as root, permission bits lie)."""
    import tempfile

    if str(out) == "":
        return "empty file name"
    out = Path(out)
    if out.is_dir():
        return f"{out}: is a folder; name a .png file"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".mammo-probe-", dir=out.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"{out}: cannot write there: {exc.strerror or exc}"
    return None


class ScreenshotJob:
    """Wait for the first patch's prediction and heatmap, then save the window as PNG."""

    def __init__(self, app, window, out: Path, timeout_s: float):
        from PyQt6.QtCore import QTimer

        self.app, self.window, self.out = app, window, Path(out)
        self.exit_code: int | None = None
        self._timer = QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self._poll)
        self._deadline = time.monotonic() + timeout_s
        self._timeout_s = timeout_s
        self._ready_since: float | None = None
        self._run_all: str | None = None
        self._mammogram: str | None = None
        window.patchesOpened.connect(self._on_opened)
        self._timer.start()

    def _on_opened(self, n: int) -> None:
        if self.window.browser.patch_model.rowCount() == 0:
            if self.window.mammo.pending is not None:
                self._mammogram = "opening"  # a whole mammogram: map it, open the best candidate
                return
            self.fail("no patch could be opened")
            return
        self.window.browser.select_index(0)

    def _mammogram_step(self) -> None:
        """--screenshot of a whole mammogram: once shown and the models are ready, compute the
        abnormality map and open its best candidate as a patch (predicted, Grad-CAM drawn)."""
        panel, mammo = self.window.mammo_tab, self.window.mammo
        if self._mammogram == "opening" and panel.mammogram is not None and self.window.models_ready:
            self._mammogram = "mapping"
            panel.request_map()
        elif self._mammogram == "mapping" and not panel.map_running():
            res = mammo.current_map()
            if res is None or not res.candidates:
                self.fail("the abnormality map gave no candidate")
                return
            self._mammogram = "candidate"
            panel.open_candidate(0)

    def _ready(self) -> bool:
        w = self.window
        entry = w.current_entry()
        return (entry is not None and w.browser.patch_model.prediction(entry.key) is not None
                and w.shown_heat_key() is not None)

    def _poll(self) -> None:
        try:
            self._poll_once()
        except Exception as exc:  # noqa: BLE001 - a slot must not leave the job hanging
            self.fail(f"{type(exc).__name__}: {exc}".splitlines()[0])

    def _poll_once(self) -> None:
        w = self.window
        if w.models_state in ("none", "failed"):
            self.fail(w.messages[-1] if w.messages else "no model could be loaded")
            return
        if self._mammogram in ("opening", "mapping"):
            self._mammogram_step()
        if self._ready():
            # a small set gets every prediction too, so the browser shows its classes
            if self._run_all is None and w.browser.patch_model.rowCount() <= RUN_ALL_IN_SHOT:
                self._run_all = "running"
                w.runAllFinished.connect(lambda _n: setattr(self, "_run_all", "done"))
                w.run_all()
            if self._run_all == "running":
                return
            if self._ready_since is None:  # let the layout settle for a moment
                self._ready_since = time.monotonic()
            elif time.monotonic() - self._ready_since > 0.4:
                self._save()
            return
        if time.monotonic() > self._deadline:
            self.fail(f"timed out after {self._timeout_s:.0f} s waiting for the prediction "
                       "and heatmap of the first patch"
                       + (f" (last message: {w.messages[-1]})" if w.messages else ""))

    def _save(self) -> None:
        self._timer.stop()
        self.app.processEvents()
        pix = self.window.grab()
        try:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(self.out) as tmp:
                if not pix.save(str(tmp), "PNG"):
                    raise OSError("Qt could not write the PNG")
        except OSError as exc:
            self.fail(f"{self.out}: cannot write screenshot: {exc}")
            return
        log.info("screenshot saved to %s (%dx%d)", self.out, pix.width(), pix.height())
        self.exit_code = 0
        self.app.exit(0)

    def fail(self, why: str) -> None:
        self._timer.stop()
        log.error("error: screenshot failed: %s", why)
        self.exit_code = 1
        self.app.exit(1)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    if args.screenshot is not None and not os.environ.get("QT_QPA_PLATFORM") and \
            not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ["QT_QPA_PLATFORM"] = "offscreen"
    why = display_problem(os.environ)
    if why:  # before Qt, which would abort with "could not connect to display" and a core
        print(f"mammo-viewer: error: {why}", file=sys.stderr)
        return 1
    if args.screenshot is not None:
        why = screenshot_target_problem(args.screenshot)
        if why:  # fail fast, before Qt, TensorFlow or any window
            print(f"mammo-viewer: error: screenshot failed: {why}", file=sys.stderr)
            return 1
        limit = args.screenshot_timeout + WATCHDOG_GRACE_S

        def hard_timeout():
            print(f"mammo-viewer: error: screenshot failed: no result after {limit:.0f} s "
                  "(--screenshot-timeout plus grace); giving up", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)
        start_watchdog(limit, hard_timeout)
    if args.screenshot is not None:  # reproducible: neither read nor write the user's settings
        import atexit
        import shutil
        import tempfile

        from PyQt6.QtCore import QSettings

        cfg = tempfile.mkdtemp(prefix="mammo-viewer-shot-")
        atexit.register(shutil.rmtree, cfg, True)
        shot_log = Path(cfg) / LOG_NAME
        QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, cfg)
    app = create_app([sys.argv[0]])
    # errors and their tracebacks also go to a log file in the data folder (not for
    # --screenshot, which leaves the user's files alone: its log is a temporary file)
    log_file = shot_log if args.screenshot is not None else log_dir() / LOG_NAME
    logsetup.configure("mammo-viewer", log_file=log_file, quiet=QUIET_LOGGERS)
    # TensorFlow's native start-up lines ("failed call to cuInit", oneDNN, retracing) and Qt's
    # native warnings go to the log file, not the terminal (the window is up, so a missing
    # platform plugin has already been reported)
    logging.captureWarnings(True)
    logsetup.divert_native_stderr(log_file)
    ref: list = []
    _install_excepthook(ref)
    shot = args.screenshot is not None
    window = build_window(args.models_dir, interactive_dialogs=not shot)
    ref.append(window)
    job = None
    if shot:
        w, h = args.size
        window.resize(max(w, 1200), max(h, 800))
        window.patch_tab.overlay_check.setChecked(True)
        window.patch_tab.side_check.setChecked(True)
        job = ScreenshotJob(app, window, args.screenshot, args.screenshot_timeout)
    window.show()
    app.processEvents()
    window.controller.timings["window_s"] = time.perf_counter() - _T0
    # the window is up: now the heavy part, in the background
    from PyQt6.QtCore import QTimer

    def start():
        window.start_models()
        paths = args.paths or ([str(samples_dir())] if samples_dir().is_dir() else [])
        if paths:
            window.open_paths(paths, remember=bool(args.paths))
        elif shot:
            job.fail(f"no PATH given and no sample patches in {samples_dir()}")
        else:
            window.status(f"No sample patches in {samples_dir()}; open files with File ▸ Open.")

    QTimer.singleShot(0, start)
    code = app.exec()
    if not shot:
        window.save_settings()
    window.shutdown()  # let a running model call end before the interpreter goes
    return int(job.exit_code if job is not None and job.exit_code is not None else code)


if __name__ == "__main__":
    raise SystemExit(main())
