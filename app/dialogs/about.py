"""Help ▸ About."""
from __future__ import annotations

from PyQt6.QtWidgets import QMessageBox, QWidget

from app.text import NOTICE
from mammo_core import __version__


def show_about(parent: QWidget) -> None:
    QMessageBox.about(parent, "About", f"<b>mammo-viewer</b> {__version__}<br>{NOTICE}.<br>"
                      "Classifies 150 × 150 mammogram patches with the bundled CNNs and "
                      "their ensemble and shows Grad-CAM heatmaps.")
