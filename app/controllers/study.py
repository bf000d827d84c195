"""The Study tab's state and work, without widgets: the studies of an opened folder
(:func:`mammo_core.study.open_studies`, off the GUI thread), the study shown, and one
:class:`~app.controllers.mammogram.MammogramController` per position of the hanging (R CC,
L CC, R MLO, L MLO), all on the one :class:`~app.service.ModelService`, so each view reads
its mammogram, computes its own map and keeps its own candidates.
"""
from __future__ import annotations

from pathlib import Path

from PyQt6.QtCore import QObject, QThreadPool, pyqtSignal

from app.controllers.mammogram import MammogramController, ScanFn
from app.service import ModelService, one_line
from app.workers import Worker
from mammo_core.dicom_out import scan_dicom_results
from mammo_core.errors import MammoError
from mammo_core.scan import ScanSettings, scan_mammogram
from mammo_core.study import HANGING, Study, StudySet, open_studies


class StudyController(QObject):
    """Studies of a folder and the one shown; ``views`` are the hanging's controllers."""

    studiesOpened = pyqtSignal(object)        # StudySet
    studyShown = pyqtSignal(int, object)      # index, Study
    errorOccurred = pyqtSignal(str, str, str)  # message, title, traceback
    statusMessage = pyqtSignal(str, int)

    def __init__(self, service: ModelService | None = None, settings: ScanSettings | None = None,
                 scan: ScanFn = scan_mammogram, parent: QObject | None = None):
        super().__init__(parent)
        self.service = service
        self.views = tuple(MammogramController(service, settings, scan, parent=self) for _ in HANGING)
        self.studies: StudySet | None = None
        self.index = -1

    def connect_messages(self, error, status) -> None:
        """Send the errors (message, title, traceback) and status lines of this controller and
        of its views to ``error`` and ``status``."""
        self.errorOccurred.connect(error)
        self.statusMessage.connect(status)
        for c in self.views:
            c.errorOccurred.connect(error)
            c.statusMessage.connect(status)

    @property
    def study(self) -> Study | None:
        if self.studies is None or not 0 <= self.index < len(self.studies.studies):
            return None
        return self.studies.studies[self.index]

    def open_path(self, path: str | Path) -> Worker:
        """Group the mammograms under ``path`` into studies off the GUI thread; the first
        study is shown."""
        self.statusMessage.emit(f"Reading the studies in {Path(path).name}…", 0)
        w = Worker(open_studies, [str(path)], name="open studies")
        w.on_return(self.set_studies)
        w.on_error(lambda exc: self.errorOccurred.emit(f"{path}: {one_line(exc)}", "Open study",
                                                       w.traceback or ""))
        return w.start(QThreadPool.globalInstance())

    def set_studies(self, studies: StudySet) -> None:
        self.studies = studies
        self.studiesOpened.emit(studies)
        n = len(studies.studies)
        bad = f"; {len(studies.failures)} file(s) could not be used" if studies.failures else ""
        self.statusMessage.emit(f"{n} stud{'y' if n == 1 else 'ies'}{bad}", 8000)
        if n:
            self.show_study(0)

    def show_study(self, index: int) -> None:
        """Read the views of study ``index`` into the hanging's controllers."""
        if self.studies is None or not self.studies.studies:
            return
        self.index = index % len(self.studies.studies)
        study = self.studies.studies[self.index]
        for ctrl, image in zip(self.views, study.hanging()):
            ctrl.cancel_map()
            if image is not None:
                ctrl.open_path(image.path)
            else:
                ctrl.mammogram = None
        self.studyShown.emit(self.index, study)

    def next_study(self, step: int = 1) -> None:
        if self.studies is not None and self.studies.studies:
            self.show_study(self.index + step)

    def request_maps(self) -> int:
        """Start the map of every open view (each view's own); how many started."""
        return sum(bool(c.request_map()) for c in self.views if c.mammogram is not None)

    def export_dicom(self, folder: str | Path) -> list[str]:
        """Write the DICOM results (:mod:`mammo_core.dicom_out`: TID 1500 SR, presentation
        state, marked capture) of every view whose map is complete into ``folder``; one line
        per view (what was written, or why not)."""
        session = self.service.ready_session() if self.service is not None else None
        if session is None:
            return ["the models are not loaded yet"]
        lines = []
        for ctrl in self.views:
            mammo, res = ctrl.mammogram, ctrl.current_map()
            if mammo is None or res is None:
                continue
            try:
                lines.append(scan_dicom_results(folder, Path(mammo.source).stem, mammo, res,
                                                session.provenance_record()).describe())
            except MammoError as err:
                lines.append(str(err))
        return lines or ["no view has a complete map to export"]
