"""The viewer's error message: non-blocking, the problem in one line (plain text: file names
are never read as markup), the traceback under "Show Details…"."""
from __future__ import annotations

import logging

from PyQt6.QtCore import QObject, Qt, pyqtSignal
from PyQt6.QtWidgets import QMainWindow, QMessageBox, QWidget

log = logging.getLogger("mammo-viewer")


def error_box(parent: QWidget, title: str, text: str, details: str = "") -> QMessageBox:
    """A non-blocking warning naming the problem, the traceback under "Show Details…"."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, text, QMessageBox.StandardButton.Ok, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    if details:
        box.setDetailedText(details)
    box.setWindowModality(Qt.WindowModality.NonModal)
    box.show()
    return box


class ErrorReporter(QObject):
    """Errors and notices of a window: the status bar, a non-blocking message box (when
    ``interactive``) with the traceback under "Show Details…", and the log (traceback too).
    ``messages`` keeps every text shown, newest last; never raises."""

    errorShown = pyqtSignal(str)  # the message shown

    def __init__(self, window: QMainWindow, interactive: bool):
        super().__init__(window)
        self.window = window
        self.interactive = interactive
        self.messages: list[str] = []
        self._box: QMessageBox | None = None

    def report(self, text: str, title: str = "Problem", details: str = "") -> None:
        self.messages.append(text)
        log.warning("%s", text, extra={"details": details})
        lines = [ln for ln in text.splitlines() if ln.strip()]
        summary = lines[0].rstrip(":") + (f": {lines[1]}" if len(lines) > 1 else "")
        if len(lines) > 2:
            summary += f" (+{len(lines) - 2} more)"
        self.window.statusBar().showMessage(summary, 20000)
        if self.interactive:
            if self._box is not None:
                self._box.close()
            self._box = error_box(self.window, title, text, details)
        self.errorShown.emit(text)
