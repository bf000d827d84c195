"""docs/study.png: a synthetic four-view study (the tests' synthetic mammograms, tiny models
trained on synthetic patches by tests/bundle_factory.py) in the Study tab, each view with the
map and candidates its own controller computed (the real scan code, the real model service).
From the repository root:
    PYTHONPATH=.:tests QT_QPA_PLATFORM=offscreen python docs/study_screenshot.py docs/study.png
(docs/study.png was then shrunk to 1050 x 750 and quantised to 128 colours with Pillow.)
"""
from __future__ import annotations

import pathlib
import sys
import tempfile

from PyQt6.QtWidgets import QApplication

from app.controllers.study import StudyController
from app.service import ModelService
from app.views.study_tab import StudyTab
from mammo_core.scan import ScanSettings

BLOBS = {("R", "CC"): (300, 250), ("L", "CC"): (520, 380), ("R", "MLO"): (420, 300), ("L", "MLO"): (600, 200)}


def wait(app: QApplication, done) -> None:
    while not done():
        app.processEvents()


def main(out: str) -> None:
    app = QApplication([])
    from bundle_factory import models_dir_with  # tests/ on the path
    from dicom_makers import write_mammo_dicom
    from test_scan import synthetic_mammogram

    d = pathlib.Path(tempfile.mkdtemp())
    models = models_dir_with(d / "models", ["mass_calc", "benign_malignant", "baseline_mass_calc"])
    for k, ((lat, view), blob) in enumerate(BLOBS.items()):
        write_mammo_dicom(d / f"view{k}.dcm", synthetic_mammogram(seed=k, blob=blob), patient="SYNTH",
                          study_uid="1.2.826.0.1.3680043.8.498.77", laterality=lat, view=view, spacing_mm=0.128)
    svc = ModelService(models)
    loaded: list = []
    svc.modelsLoaded.connect(lambda *a: loaded.append(1))
    svc.start_models()
    wait(app, lambda: loaded)
    ctrl = StudyController(svc, settings=ScanSettings(window_px=150))
    tab = StudyTab(ctrl)
    tab.resize(1400, 1000)
    tab.show()
    ctrl.open_path(d)
    wait(app, lambda: all(c.mammogram is not None for c in ctrl.views))
    ctrl.request_maps()
    wait(app, lambda: all(cell.result is not None for cell in tab.cells))
    for _ in range(50):
        app.processEvents()
    assert tab.grab().save(out)
    print("wrote", out)
    svc.shutdown(30)


if __name__ == "__main__":
    main(sys.argv[1])
