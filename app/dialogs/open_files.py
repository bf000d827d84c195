"""File ▸ Open files / Open folder / Choose models folder: the file dialogs."""
from __future__ import annotations

from PyQt6.QtWidgets import QFileDialog, QWidget

FILE_FILTER = ("Patches (*.npy *.png *.tif *.tiff *.jpg *.jpeg *.pgm *.pnm *.dcm *.dicom);;"
               "All files (*)")


def ask_patch_paths(parent: QWidget, start: str, folder: bool) -> list[str]:
    """Patch files (or one folder of them) to open; [] when cancelled."""
    if folder:
        chosen = QFileDialog.getExistingDirectory(parent, "Open folder of patches", start)
        return [chosen] if chosen else []
    files, _ = QFileDialog.getOpenFileNames(parent, "Open patches", start, FILE_FILTER)
    return list(files)


def ask_models_folder(parent: QWidget, start: str) -> str:
    """A folder of model bundles; "" when cancelled."""
    return QFileDialog.getExistingDirectory(parent, "Models folder", start)
