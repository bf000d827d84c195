"""Where to write a report: the save dialog of File ▸ Export report."""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtWidgets import QFileDialog, QWidget


def ask_report_path(parent: QWidget, default: Path) -> Path | None:
    """Where to write a report (None: cancelled); a name without suffix gets the chosen type's."""
    path, chosen = QFileDialog.getSaveFileName(
        parent, "Export report", str(default), "PDF report (*.pdf);;CSV table (*.csv);;JSON (*.json)")
    if not path:
        return None
    if not Path(path).suffix:
        path += {"CSV": ".csv", "JSON": ".json"}.get(chosen.split()[0], ".pdf")
    return Path(path)
