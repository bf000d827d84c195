"""The Mammogram tab's state and work, without widgets: the open mammogram, the regions cut
from it, the abnormality map (``mammo_core.scan.scan_mammogram`` on the shared model thread,
cancellable, cached per image) and its candidates.

A picked region becomes the protocol v1 window (``mammo_core.protocol.point_window`` /
``box_window``, the code the dataset builders use) and is cut by ``cut_window`` into the
150 x 150 patch the training data had; ``regionCut(Region)`` hands it to whoever shows patches.

The map runs on the :class:`~app.service.ModelService`'s model thread inside its generation
guard: a map started before the models change ("Choose models folder") is discarded, never shown
or cached, and the maps of the old models are dropped. Failures carry their traceback
(``errorOccurred(message, title, traceback)``). Several controllers may share one service (one
per view of a study). Nothing here imports TensorFlow or draws anything.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from PyQt6.QtCore import QObject, QThreadPool, pyqtSignal

from app.service import BACKGROUND, ModelService, one_line
from app.workers import Worker
from mammo_core.errors import MammoError, NotAPatchError
from mammo_core.io import Patch, check_patch_size, read_image
from mammo_core.mammogram import Mammogram, read_mammogram
from mammo_core.protocol import Box, box_window, cut_window, point_window, window_ref
from mammo_core.scan import ScanResult, ScanSettings, scan_mammogram

ScanFn = Callable[..., ScanResult]


@dataclass(frozen=True)
class Region:
    """A patch cut from the open mammogram: its window (source pixels) and the patch."""

    box: Box
    patch: Patch
    how: str          # "point r=30" / "box 60x40" / "candidate 1"


def region_source(path: str, box: Box) -> str:
    """How a cut patch names its provenance (the report's ``source``): the mammogram file and
    the window in its pixels (origin top-left as stored)."""
    return f"{path} [window top={box.top} left={box.left} side={box.height}]"


def is_mammogram_file(path: str | Path) -> bool:
    """True when ``path`` reads as an image far larger than a patch (a whole mammogram)."""
    try:
        img = read_image(path)
        check_patch_size(img.shape[-2:], path)
    except NotAPatchError:
        return True
    except MammoError:
        return False
    return False


class MammogramController(QObject):
    """One mammogram, its regions and its map; reports through signals (GUI thread)."""

    opened = pyqtSignal(object)              # Mammogram, now the open one
    regionCut = pyqtSignal(object)           # Region
    mapStarted = pyqtSignal()
    mapProgress = pyqtSignal(int, int)       # windows done, total
    mapFinished = pyqtSignal(object)         # ScanResult (complete or cancelled), or None
    mapFailed = pyqtSignal(str)              # one line
    errorOccurred = pyqtSignal(str, str, str)  # message, title, traceback ("" if none)
    statusMessage = pyqtSignal(str, int)     # text, milliseconds (0: until replaced)

    def __init__(self, service: ModelService | None = None,
                 settings: ScanSettings | None = None, scan: ScanFn = scan_mammogram,
                 parent: QObject | None = None):
        super().__init__(parent)
        self.service = service
        self.settings = settings or ScanSettings()
        self._scan = scan
        self.mammogram: Mammogram | None = None
        self.pending: str | None = None            # path being read
        self.regions: dict[str, Region] = {}       # patch key -> region
        self.maps: dict[str, ScanResult] = {}      # source -> complete map (cache per image)
        self.worker: Worker | None = None          # the map being computed
        if service is not None:
            service.modelsChanging.connect(self._drop_old_models)

    # ------------------------------------------------------------------ opening
    def open_path(self, path: str | Path) -> Worker:
        """Read ``path`` as a whole mammogram off the GUI thread; ``opened`` follows."""
        self.pending = str(path)
        self.statusMessage.emit(f"Reading the mammogram {Path(path).name}…", 0)
        w = Worker(read_mammogram, str(path), name="read mammogram")
        w.on_return(self.set_mammogram)
        w.on_error(lambda exc: self._read_failed(w, path, exc))
        return w.start(QThreadPool.globalInstance())

    def _read_failed(self, worker: Worker, path: str | Path, exc: BaseException) -> None:
        self.pending = None
        self.errorOccurred.emit(f"{path}: {one_line(exc)}", "Open mammogram",
                                worker.traceback or "")

    def set_mammogram(self, mammo: Mammogram) -> None:
        """Make ``mammo`` (already read) the open mammogram."""
        self.pending = None
        self.mammogram = mammo
        self.opened.emit(mammo)
        self.statusMessage.emit(f"Opened {mammo.describe()} as a whole mammogram", 8000)

    # ------------------------------------------------------------------ regions
    def cut_region(self, box: Box, how: str) -> Region:
        """Cut the protocol-v1 window ``box`` into a 150 x 150 patch with provenance."""
        m = self._open()
        pixels = cut_window(m.pixels, box, m.full_scale)
        pixels.flags.writeable = False
        patch = Patch(pixels, region_source(m.source, box), None, None, (box.height, box.width),
                      source_ref=window_ref(m.source, m.source_ref, box))
        region = Region(box, patch, how)
        self.regions[patch.key] = region
        self.regionCut.emit(region)
        return region

    def pick_point(self, row: int, col: int, radius: float) -> Region:
        m = self._open()
        r = float(radius)
        return self.cut_region(point_window(row, col, r, m.shape), f"point r={r:g} px")

    def pick_box(self, top: int, left: int, height: int, width: int) -> Region:
        m = self._open()
        return self.cut_region(box_window(Box(top, left, height, width), m.shape),
                               f"box {width}x{height} px")

    def region_for(self, key: str) -> Region | None:
        """The region of patch ``key`` when it was cut from the open mammogram."""
        region = self.regions.get(key)
        if region is None or self.mammogram is None:
            return None
        if not region.patch.source.startswith(self.mammogram.source + " ["):
            return None
        return region

    def _open(self) -> Mammogram:
        if self.mammogram is None:
            raise ValueError("no mammogram is open")
        return self.mammogram

    # ------------------------------------------------------------------ the map
    def current_map(self) -> ScanResult | None:
        """The cached complete map of the open mammogram, or None."""
        return self.maps.get(self.mammogram.source) if self.mammogram is not None else None

    def map_running(self) -> bool:
        return self.worker is not None

    def request_map(self) -> bool:
        """Compute the open mammogram's map (or show the cached one at once: ``mapFinished``).
        Returns False when nothing was started."""
        mammo = self.mammogram
        if mammo is None or self.worker is not None:
            return False
        cached = self.maps.get(mammo.source)
        if cached is not None:
            self.mapFinished.emit(cached)
            return False
        service = self.service
        session = service.ready_session() if service is not None else None
        if service is None or session is None:
            self.mapFailed.emit("the models are not loaded yet")
            return False
        scan, settings = self._scan, self.settings

        def work(progress, cancel):
            return scan(mammo, session, settings, progress=lambda d, t: progress(d, t),
                        cancel=cancel)

        w = Worker(work, callbacks=True, name="abnormality map")
        w.on_progress(service.guarded(lambda v: self.mapProgress.emit(int(v[0]), int(v[1]))))
        w.on_return(service.guarded(self._map_done))
        w.on_error(service.guarded(lambda exc: self._map_error(w, exc)))
        self.worker = w
        self.mapStarted.emit()
        service.start(w, BACKGROUND)
        return True

    def cancel_map(self) -> bool:
        if self.worker is None:
            return False
        self.worker.cancel()
        self.statusMessage.emit("Cancelling the map…", 0)
        return True

    def _map_done(self, result: ScanResult) -> None:
        if result.complete:
            self.maps[result.source] = result
        self.worker = None
        self.mapFinished.emit(result)

    def _map_error(self, worker: Worker, exc: BaseException) -> None:
        self.worker = None
        msg = one_line(exc)
        self.mapFailed.emit(msg)
        self.errorOccurred.emit(f"Abnormality map failed: {msg}", "Abnormality map",
                                worker.traceback or "")

    def _drop_old_models(self) -> None:
        """New models: the running map is cancelled and discarded, cached maps dropped."""
        self.maps.clear()
        w, self.worker = self.worker, None
        if w is not None:
            w.cancel()
            self.mapFinished.emit(None)
            self.statusMessage.emit("The models changed: the map being computed was discarded",
                                    8000)

    def open_candidate(self, k: int) -> Region | None:
        """Cut candidate ``k`` (0-based) of the open mammogram's map as a patch."""
        res = self.current_map()
        if res is None or not 0 <= k < len(res.candidates):
            return None
        return self.cut_region(res.candidates[k].box, f"candidate {k + 1}")
