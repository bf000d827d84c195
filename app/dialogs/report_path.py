"""Where to write a report: the save dialog of File ▸ Export report."""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QSettings
from PyQt6.QtWidgets import QFileDialog, QWidget

from app.settings import get_str


def ask_report_path(parent: QWidget, default: Path) -> Path | None:
    """Where to write a report (None: cancelled); a name without suffix gets the chosen type's."""
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export report", str(default), "PDF report (*.pdf);;CSV table (*.csv);;JSON (*.json)")
    if not path:
        return None
    if not Path(path).suffix:
        path += {"CSV": ".csv", "JSON": ".json"}.get(chosen.split()[0], ".pdf")
    return Path(path)


def choose_report_path(parent: QWidget, settings: QSettings, stem: str) -> Path | None:
    """Ask where to write ``<stem>_report.pdf`` (or ``report.pdf``), starting in the last export
    folder; the folder chosen is remembered. None: cancelled."""
    start = Path(get_str(settings, "last_export_folder",
                         get_str(settings, "last_folder", str(Path.home()))))
    path = ask_report_path(parent, start / ("report.pdf" if stem == "report" else f"{stem}_report.pdf"))
    if path is not None:
        settings.setValue("last_export_folder", str(path.parent))
    return path
