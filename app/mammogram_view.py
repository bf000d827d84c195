"""The whole-mammogram view: open a mammogram, pick a region, map the breast.

* ``DisplayPyramid``: the image shrunk by 2, 4, 8, ... (INTER_AREA) once at opening; the view
  draws the level that matches the zoom, windowed through a lookup table, so a 5,000 x 7,000
  16-bit image never redraws at full resolution while panning or fitted.
* ``MammogramView`` (QGraphicsView, scene units = source pixels, origin top-left as stored):
  wheel zoom at the cursor, left-drag pan, double-click fit, right-drag window/level
  (horizontal: width, vertical: level), the pixel value and position under the cursor, a mm
  scale bar (pixel spacing from DICOM or a stated default), laterality / view, and three tools:
  pan, point (a click with a radius) and box (drag). A picked region becomes the protocol v1
  window (``mammo_core.protocol.point_window`` / ``box_window``), the code the dataset
  builders use, and is cut by ``cut_window`` into the 150 x 150 patch the training data had.
* ``MammogramPanel``: toolbar (tools, radius, presets, invert, map, opacity, cancel), the view,
  an info line, the DICOM header, and the ranked candidate list of the abnormality map.
  The panel never runs a model: it emits ``regionCut(patch, box)`` and ``mapRequested``; a
  ``MapJobs`` object (owned by the window) runs ``mammo_core.scan.scan_mammogram`` on the
  models' worker thread and feeds progress / result / cancel back. Maps are cached per image.

Research use only — not a medical device.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QFont, QImage, QPainter, QPen, QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QDoubleSpinBox,
    QGraphicsPixmapItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import imaging
from app.image_view import set_fit_scrollbars
from app.patch_browser import patch_key
from app.text import NOTICE, class_short
from app.workers import Worker
from mammo_core.errors import MammoError, NotAPatchError
from mammo_core.io import Patch, check_patch_size, read_image
from mammo_core.mammogram import read_mammogram
from mammo_core.protocol import (
    TISSUE_LEVEL,
    Box,
    box_window,
    cut_window,
    full_scale,
    point_window,
    window_ref,
)
from mammo_core.scan import ScanSettings, scan_mammogram

BACKGROUND = QColor(10, 10, 12)
REGION_PEN = QColor(80, 220, 255)
CANDIDATE_PEN = QColor(255, 210, 60)
PYRAMID_MIN = 256          # stop halving below this longest side
TOOLS = ("pan", "point", "box")

REGION_HELP = (
    "How big a region to pick: the models were trained on windows of side max(2 x lesion "
    "radius, 96 px) at 200 µm pixels (mini-MIAS), i.e. at least 19.2 mm, shrunk or enlarged to "
    "150 x 150. Point: click the lesion centre and set the radius to the lesion's radius (the "
    "window is then exactly the training window). Box: drag a box that just encloses the "
    "lesion; the window is the square around it, never smaller than 19.2 mm. Windows that "
    "include background (skin line, film edge) are outside the training data and tend to be "
    "called abnormal."
)

MOUSE_HELP = (
    ("Wheel", "zoom at the cursor (mammogram and patch views)"),
    ("Left-drag", "pan (Pan tool); drag a box (Box tool)"),
    ("Click", "cut the window at this point with the radius set (Point tool)"),
    ("Right-drag", "window/level on the mammogram: left-right width, up-down level"),
    ("Double-click", "fit the image to the view"),
    ("Double-click a candidate", "open it as a patch and classify it"),
)

VIEW_KEYS = (
    ("F", "fit (patch and mammogram)"), ("P", "Pan tool"),
    ("C", "Point tool (click a lesion centre)"), ("B", "Box tool"),
    ("M", "compute the abnormality map"), ("Esc", "cancel the map (and Run all)"),
    ("0-3", "window presets (full range, breast, dense, DICOM)"),
)


# --------------------------------------------------------------------------- pixels
class DisplayPyramid:
    """Levels ``[full, 1/2, 1/4, ...]`` of one image (native dtype) and a windowing LUT."""

    def __init__(self, pixels: np.ndarray, fs: int | None = None):
        import cv2

        # fs: the mammogram's true full scale (Mammogram.full_scale: 4095 for a 12-bit DICOM),
        # so a region cut here has the pixels mammo scan and predict see
        self.full_scale = fs or full_scale(pixels)
        self.levels: list[np.ndarray] = [pixels]
        cur = pixels
        while max(cur.shape) > PYRAMID_MIN:
            h, w = cur.shape
            cur = cv2.resize(np.ascontiguousarray(cur), (max(1, w // 2), max(1, h // 2)),
                             interpolation=cv2.INTER_AREA)
            self.levels.append(cur)
        self._lut_key: Any = None
        self._lut: np.ndarray | None = None

    def lut(self, window: imaging.Window) -> np.ndarray:
        key = (window.center, window.width, window.invert)
        if key != self._lut_key:
            ramp = np.arange(self.full_scale + 1, dtype=np.float32) / np.float32(self.full_scale)
            self._lut = imaging.apply_window(ramp, window)
            self._lut_key = key
        return self._lut

    def level_for(self, zoom: float) -> int:
        """The coarsest level still at least as sharp as the screen at ``zoom``."""
        if zoom <= 0:
            return len(self.levels) - 1
        k = math.floor(math.log2(max(1.0, 1.0 / zoom)))
        return max(0, min(k, len(self.levels) - 1))

    def render(self, level: int, window: imaging.Window) -> QImage:
        arr = self.levels[level]
        lut = self.lut(window)
        idx = np.minimum(arr, self.full_scale) if arr.dtype.kind in "ui" else arr
        return imaging.to_qimage(lut[idx])

    def breast_window(self) -> imaging.Window:
        """A window over the breast's intensities (smallest level, pixels above the tissue
        level, 1st-99.5th percentile)."""
        small = self.levels[-1].astype(np.float32) / self.full_scale
        vals = small[small > TISSUE_LEVEL]
        if vals.size < 50:
            vals = small.ravel()
        return imaging.auto_window(vals.reshape(1, -1))


def window_presets(pyr: DisplayPyramid, header: dict[str, str]) -> dict[str, imaging.Window]:
    out = {"Full range": imaging.Window(0.5, 1.0), "Breast (auto)": pyr.breast_window()}
    b = out["Breast (auto)"]
    out["Dense tissue"] = imaging.Window(b.center + b.width / 4, b.width / 2)
    try:
        c = float(str(header.get("WindowCenter", "")).split("\\")[0])
        w = float(str(header.get("WindowWidth", "")).split("\\")[0])
        if w > 0:
            out["DICOM window"] = imaging.Window(c / pyr.full_scale, w / pyr.full_scale)
    except ValueError:
        pass
    return out


def heat_rgba(values: np.ndarray, alpha: float = 1.0) -> QImage:
    """Float map in [0, 1] (NaN = transparent) -> RGBA QImage in the jet colour map."""
    import cv2

    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    col = cv2.applyColorMap(np.clip(v * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    a = np.where(np.isfinite(values), int(255 * alpha), 0).astype(np.uint8)
    rgba = np.ascontiguousarray(np.dstack([col, a]))
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()


def nice_length_mm(mm_per_screen_px: float, target_px: float = 120) -> float:
    """A round scale-bar length (1, 2, 5 x 10^k mm) near ``target_px`` screen pixels."""
    raw = mm_per_screen_px * target_px
    if raw <= 0 or not math.isfinite(raw):
        return 0.0
    e = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * e >= raw * 0.6:
            return m * e
    return 10 * e


# --------------------------------------------------------------------------- the view
class MammogramView(QGraphicsView):
    """The mammogram on a QGraphicsScene whose units are source pixels."""

    hovered = pyqtSignal(str)
    pointPicked = pyqtSignal(int, int)           # row, col
    boxPicked = pyqtSignal(int, int, int, int)   # top, left, height, width
    windowChanged = pyqtSignal(object)           # imaging.Window
    levelShown = pyqtSignal(int)                 # pyramid level drawn (tests, benchmark)

    MIN_ZOOM, MAX_ZOOM = 0.01, 32.0

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(BACKGROUND))
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.setMouseTracking(True)
        self.setMinimumSize(300, 300)
        self.mammogram = None
        self.pyramid: DisplayPyramid | None = None
        self.window = imaging.Window()
        self.tool = "pan"
        self._fit_mode = True
        set_fit_scrollbars(self, True)
        self._level = -1
        self._image_item = QGraphicsPixmapItem()
        self._image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._image_item)
        self._map_item = QGraphicsPixmapItem()
        self._map_item.setZValue(2)
        self._map_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._map_item)
        self._heat_item = QGraphicsPixmapItem()
        self._heat_item.setZValue(3)
        self._heat_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().addItem(self._heat_item)
        self._region_item = QGraphicsRectItem()
        pen = QPen(REGION_PEN, 2)
        pen.setCosmetic(True)
        self._region_item.setPen(pen)
        self._region_item.setZValue(5)
        self._region_item.setVisible(False)
        self.scene().addItem(self._region_item)
        self._rubber = QGraphicsRectItem()
        rp = QPen(QColor(255, 255, 255), 1, Qt.PenStyle.DashLine)
        rp.setCosmetic(True)
        self._rubber.setPen(rp)
        self._rubber.setZValue(6)
        self._rubber.setVisible(False)
        self.scene().addItem(self._rubber)
        self._cand_items: list = []
        self._press: QPointF | None = None
        self._press_window: imaging.Window | None = None
        self._right_start = None
        self.set_tool("pan")

    # --- content ---------------------------------------------------------------------------
    def set_mammogram(self, mammo, pyramid: DisplayPyramid, window: imaging.Window) -> None:
        self.mammogram = mammo
        self.pyramid = pyramid
        self.window = window
        self._level = -1
        h, w = mammo.shape
        self.scene().setSceneRect(QRectF(-0.05 * w, -0.05 * h, 1.1 * w, 1.1 * h))
        self.clear_overlays()
        self.fit()
        self._redraw(force=True)

    def clear_overlays(self) -> None:
        self._map_item.setPixmap(QPixmap())
        self._heat_item.setPixmap(QPixmap())
        self._region_item.setVisible(False)
        self.set_candidates([])

    def set_window(self, window: imaging.Window) -> None:
        self.window = window
        self._redraw(force=True)
        self.windowChanged.emit(window)

    def shown_level(self) -> int:
        return self._level

    def _redraw(self, force: bool = False) -> None:
        if self.pyramid is None:
            return
        k = self.pyramid.level_for(self.zoom())
        if k == self._level and not force:
            return
        self._level = k
        img = self.pyramid.render(k, self.window)
        self._image_item.setPixmap(QPixmap.fromImage(img))
        h, w = self.mammogram.shape
        from PyQt6.QtGui import QTransform

        self._image_item.setTransform(QTransform.fromScale(w / img.width(), h / img.height()))
        self.levelShown.emit(k)

    def show_region(self, box) -> None:
        self._region_item.setRect(QRectF(box.left, box.top, box.width, box.height))
        self._region_item.setVisible(True)
        self._heat_item.setPixmap(QPixmap())

    def show_heat(self, box, heat: np.ndarray | None, opacity: float = 0.45) -> None:
        """Grad-CAM (150 x 150 in [0, 1]) drawn over ``box`` on the mammogram."""
        if heat is None:
            self._heat_item.setPixmap(QPixmap())
            return
        img = heat_rgba(np.asarray(heat, dtype=np.float32))
        self._heat_item.setPixmap(QPixmap.fromImage(img))
        from PyQt6.QtGui import QTransform

        self._heat_item.setTransform(QTransform.fromScale(box.width / img.width(), box.height / img.height()))
        self._heat_item.setPos(box.left, box.top)
        self._heat_item.setOpacity(opacity)
        self.show_region_only(box)

    def show_region_only(self, box) -> None:
        self._region_item.setRect(QRectF(box.left, box.top, box.width, box.height))
        self._region_item.setVisible(True)

    def set_map(self, amap: np.ndarray | None, stride: int = 1, opacity: float = 0.4) -> None:
        if amap is None:
            self._map_item.setPixmap(QPixmap())
            return
        img = heat_rgba(amap)
        self._map_item.setPixmap(QPixmap.fromImage(img))
        from PyQt6.QtGui import QTransform

        self._map_item.setTransform(QTransform.fromScale(stride, stride))
        self._map_item.setOpacity(opacity)

    def set_map_opacity(self, opacity: float) -> None:
        self._map_item.setOpacity(opacity)

    def map_shown(self) -> bool:
        return not self._map_item.pixmap().isNull()

    def set_candidates(self, candidates) -> None:
        for it in self._cand_items:
            self.scene().removeItem(it)
        self._cand_items = []
        pen = QPen(CANDIDATE_PEN, 1.5)
        pen.setCosmetic(True)
        f = QFont()
        f.setPointSize(10)
        f.setBold(True)
        for k, c in enumerate(candidates, 1):
            b = c.box
            r = self.scene().addRect(QRectF(b.left, b.top, b.width, b.height), pen)
            r.setZValue(4)
            t = self.scene().addSimpleText(str(k), f)
            t.setBrush(QBrush(CANDIDATE_PEN))
            t.setFlag(t.GraphicsItemFlag.ItemIgnoresTransformations)
            t.setPos(b.left, b.top)
            t.setZValue(4)
            self._cand_items += [r, t]

    # --- zoom / fit --------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        factor = min(max(factor, self.MIN_ZOOM), self.MAX_ZOOM)
        self._fit_mode = False
        set_fit_scrollbars(self, False)
        self.setTransform(self.transform().fromScale(factor, factor))
        self._redraw()

    def fit(self) -> None:
        self._fit_mode = True
        set_fit_scrollbars(self, True)
        if self.mammogram is None:
            return
        h, w = self.mammogram.shape
        self.fitInView(QRectF(0, 0, w, h), Qt.AspectRatioMode.KeepAspectRatio)
        self._redraw()

    def wheelEvent(self, event):
        d = event.angleDelta().y()
        if d:
            self.set_zoom(self.zoom() * 1.25 ** (d / 120.0))
        event.accept()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit()

    def mouseDoubleClickEvent(self, event):
        self.fit()

    # --- tools --------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(tool)
        self.tool = tool
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if tool == "pan"
                         else QGraphicsView.DragMode.NoDrag)
        self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if tool == "pan"
                                  else Qt.CursorShape.CrossCursor)

    def _scene_rc(self, pos) -> tuple[int, int]:
        p = self.mapToScene(pos)
        return math.floor(p.y()), math.floor(p.x())

    def _inside(self, r: int, c: int) -> bool:
        return self.mammogram is not None and 0 <= r < self.mammogram.shape[0] and 0 <= c < self.mammogram.shape[1]

    def mousePressEvent(self, event):
        if event.button() == Qt.MouseButton.RightButton and self.mammogram is not None:
            self._right_start = event.position()
            self._press_window = self.window
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and self.tool in ("point", "box"):
            r, c = self._scene_rc(event.position().toPoint())
            if self._inside(r, c):
                if self.tool == "point":
                    self.pointPicked.emit(r, c)
                else:
                    self._press = QPointF(c, r)
                    self._rubber.setRect(QRectF(c, r, 0, 0))
                    self._rubber.setVisible(True)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event):
        if self._right_start is not None and self._press_window is not None:
            d = event.position() - self._right_start
            w0 = self._press_window
            width = float(np.clip(w0.width * math.exp(d.x() / 200.0), 0.002, 2.0))
            center = float(np.clip(w0.center - d.y() / 400.0, -0.5, 1.5))
            self.set_window(imaging.Window(center, width, w0.invert))
            event.accept()
            return
        if self._press is not None:
            r, c = self._scene_rc(event.position().toPoint())
            x0, y0 = self._press.x(), self._press.y()
            self._rubber.setRect(QRectF(QPointF(min(x0, c), min(y0, r)), QPointF(max(x0, c), max(y0, r))))
        self._emit_hover(event.position().toPoint())
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event):
        if event.button() == Qt.MouseButton.RightButton and self._right_start is not None:
            self._right_start = None
            self._press_window = None
            event.accept()
            return
        if event.button() == Qt.MouseButton.LeftButton and self._press is not None:
            rect = self._rubber.rect().normalized()
            self._rubber.setVisible(False)
            self._press = None
            h, w = self.mammogram.shape
            top, left = max(0, int(rect.top())), max(0, int(rect.left()))
            bottom, right = min(h, math.ceil(rect.bottom())), min(w, math.ceil(rect.right()))
            if bottom - top >= 2 and right - left >= 2:
                self.boxPicked.emit(top, left, bottom - top, right - left)
            event.accept()
            return
        super().mouseReleaseEvent(event)
        self._redraw()

    def scrollContentsBy(self, dx, dy):
        super().scrollContentsBy(dx, dy)  # the pixmap is not re-rendered: only repainted

    def hover_text(self, r: int, c: int) -> str:
        m = self.mammogram
        if m is None or not self._inside(r, c):
            return ""
        v = int(m.pixels[r, c])
        txt = f"x {c}, y {r} px  value {v} ({v / self.pyramid.full_scale:.3f} of full scale)"
        if m.spacing_mm is not None:
            txt += f"  ({c * m.spacing_mm[1]:.1f}, {r * m.spacing_mm[0]:.1f} mm)"
        return txt

    def _emit_hover(self, pos) -> None:
        r, c = self._scene_rc(pos)
        self.hovered.emit(self.hover_text(r, c))

    # --- overlay text + scale bar (screen coordinates) ------------------------------------------
    def drawForeground(self, painter: QPainter, rect: QRectF) -> None:
        m = self.mammogram
        if m is None:
            return
        painter.save()
        painter.resetTransform()
        vp = self.viewport().rect()
        f = QFont()
        f.setPointSize(10)
        painter.setFont(f)
        painter.setPen(QColor(235, 235, 235))
        lat = {"L": "LEFT", "R": "RIGHT"}.get(m.laterality or "", "side ?")
        painter.drawText(10, 18, f"{lat}  {m.view or 'view ?'}")
        painter.drawText(10, 34, f"{m.shape[1]} x {m.shape[0]} px   zoom {100 * self.zoom():.0f} %")
        painter.setPen(QColor(240, 170, 60))
        painter.drawText(10, vp.height() - 10, NOTICE)
        if m.mm_per_pixel is not None and self.zoom() > 0:
            mm_per_screen = m.mm_per_pixel / self.zoom()
            length = nice_length_mm(mm_per_screen)
            px = length / mm_per_screen
            x1 = vp.width() - 20
            x0 = x1 - px
            y = vp.height() - 20
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(int(x0), y, int(x1), y)
            painter.drawLine(int(x0), y - 5, int(x0), y + 5)
            painter.drawLine(int(x1), y - 5, int(x1), y + 5)
            painter.drawText(int(x0), y - 8, f"{length:g} mm")
        painter.restore()


# --------------------------------------------------------------------------- the panel
@dataclass
class Region:
    """A patch cut from the open mammogram: its window (source pixels) and the patch."""

    box: Any          # mammo_core.protocol.Box
    patch: Any        # mammo_core.io.Patch
    how: str          # "point r=30" / "box 60x40" / "candidate 1"


def region_source(path: str, box) -> str:
    """How a cut patch names its provenance (the report's ``source``): the mammogram file and
    the window in its pixels (origin top-left as stored)."""
    return f"{path} [window top={box.top} left={box.left} side={box.height}]"


class MammogramPanel(QWidget):
    """Toolbar + MammogramView + info/header/candidates. See the module docstring."""

    regionCut = pyqtSignal(object)        # Region
    mapRequested = pyqtSignal(object)     # Mammogram
    mapCancelRequested = pyqtSignal()
    opened = pyqtSignal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.mammogram = None
        self.pyramid: DisplayPyramid | None = None
        self.presets: dict[str, imaging.Window] = {}
        self.regions: dict[str, Region] = {}       # patch key -> region
        self.maps: dict[str, Any] = {}             # source -> ScanResult (cache per image)
        self._map_running = False
        self.view = MammogramView(self)
        self._build()
        self.view.pointPicked.connect(self._on_point)
        self.view.boxPicked.connect(self._on_box)
        self.view.hovered.connect(self.hover_label.setText)

    def _build(self) -> None:
        bar = QHBoxLayout()
        bar.setContentsMargins(2, 2, 2, 0)
        bar2 = QHBoxLayout()
        bar2.setContentsMargins(2, 0, 2, 2)
        self.tool_buttons: dict[str, QToolButton] = {}
        for tool, text, tip in (("pan", "Pan", "Pan and zoom (P)"),
                                ("point", "Point", "Click a lesion centre; the radius sets the window (C)"),
                                ("box", "Box", "Drag a box around a lesion (B)")):
            b = QToolButton(self)
            b.setText(text)
            b.setToolTip(tip)
            b.setCheckable(True)
            b.clicked.connect(lambda _=False, t=tool: self.set_tool(t))
            self.tool_buttons[tool] = b
            bar.addWidget(b)
        self.radius = QDoubleSpinBox(self)
        self.radius.setRange(1, 2000)
        self.radius.setDecimals(0)
        self.radius.setValue(48)
        self.radius.setPrefix("r ")
        self.radius.setSuffix(" px")
        self.radius.setToolTip("Lesion radius for the Point tool (window side = max(2 r, 96 px))")
        bar.addWidget(self.radius)
        self.preset_box = QComboBox(self)
        self.preset_box.setToolTip("Window/level presets (right-drag on the image adjusts; keys 0-3)")
        self.preset_box.activated.connect(lambda i: self.apply_preset(self.preset_box.itemText(i)))
        bar.addWidget(self.preset_box)
        self.invert_box = QCheckBox("Invert", self)
        self.invert_box.toggled.connect(self._on_invert)
        bar.addWidget(self.invert_box)
        self.fit_button = QToolButton(self)
        self.fit_button.setText("Fit")
        self.fit_button.clicked.connect(self.view.fit)
        bar.addWidget(self.fit_button)
        bar.addStretch(1)
        self.map_button = QPushButton("Abnormality map", self)
        self.map_button.setToolTip("Slide the training window over the breast and map P(abnormal) (M)")
        self.map_button.clicked.connect(self.request_map)
        bar2.addWidget(self.map_button)
        self.cancel_button = QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_map)
        bar2.addWidget(self.cancel_button)
        self.progress = QProgressBar(self)
        self.progress.setMaximumWidth(120)
        self.progress.setVisible(False)
        bar2.addWidget(self.progress)
        bar2.addWidget(QLabel("opacity", self))
        self.opacity = QSlider(Qt.Orientation.Horizontal, self)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(40)
        self.opacity.setMaximumWidth(90)
        self.opacity.setToolTip("Opacity of the abnormality map")
        self.opacity.valueChanged.connect(lambda v: self.view.set_map_opacity(v / 100))
        bar2.addWidget(self.opacity)
        bar2.addStretch(1)

        from PyQt6.QtWidgets import QTabWidget

        side = QTabWidget(self)
        side.setDocumentMode(True)
        self.side_tabs = side
        info = QWidget(side)
        sl = QVBoxLayout(info)
        sl.setContentsMargins(2, 2, 2, 2)
        self.info_label = QLabel("Open a whole mammogram (File > Open mammogram…)", info)
        self.info_label.setWordWrap(True)
        sl.addWidget(self.info_label)
        sl.addWidget(QLabel("Double-click a candidate to open it as a patch", info))
        self.candidate_list = QListWidget(info)
        self.candidate_list.itemActivated.connect(self._on_candidate)
        sl.addWidget(self.candidate_list, 1)
        self.map_label = QLabel("", info)
        self.map_label.setWordWrap(True)
        sl.addWidget(self.map_label)
        side.addTab(info, "Candidates")
        self.header_table = QTableWidget(0, 2, side)
        self.header_table.setHorizontalHeaderLabels(["Field", "Value"])
        self.header_table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        self.header_table.verticalHeader().setVisible(False)
        side.addTab(self.header_table, "Header")
        help_label = QLabel(REGION_HELP, side)
        help_label.setWordWrap(True)
        help_label.setAlignment(Qt.AlignmentFlag.AlignTop)
        side.addTab(help_label, "Region size")

        split = QSplitter(self)
        split.addWidget(self.view)
        split.addWidget(side)
        split.setStretchFactor(0, 1)
        split.setStretchFactor(1, 0)
        split.setSizes([700, 260])
        self.side_split = split
        self.hover_label = QLabel("", self)
        self.hover_label.setObjectName("dim")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(bar)
        lay.addLayout(bar2)
        lay.addWidget(split, 1)
        lay.addWidget(self.hover_label)
        self.set_tool("pan")

    def showEvent(self, event):
        super().showEvent(event)
        if not getattr(self, "_placed", False):  # needs the real width, known once shown
            self._placed = True
            w = max(self.side_split.width(), 600)
            self.side_split.setSizes([int(w * 0.72), w - int(w * 0.72)])

    # --- opening ---------------------------------------------------------------------------------
    def open_mammogram(self, mammo) -> None:
        """Show ``mammo`` (a mammo_core.mammogram.Mammogram, already read)."""
        self.mammogram = mammo
        self.pyramid = DisplayPyramid(mammo.pixels, mammo.full_scale)
        header = dict(mammo.header)
        self.presets = window_presets(self.pyramid, header)
        self.preset_box.clear()
        self.preset_box.addItems(list(self.presets))
        self.preset_box.setCurrentText("Breast (auto)")
        win = self.presets["Breast (auto)"]
        self.invert_box.blockSignals(True)
        self.invert_box.setChecked(False)
        self.invert_box.blockSignals(False)
        self.view.set_mammogram(mammo, self.pyramid, win)
        if mammo.mm_per_pixel is not None:  # default radius: half the training window, 9.6 mm
            self.radius.setValue(max(1, round(9.6 / mammo.mm_per_pixel)))
        self.info_label.setText(mammo.describe() + (f"\nlaterality/view from {mammo.orientation_source}"
                                                    if mammo.orientation_source else ""))
        self.header_table.setRowCount(0)
        rows = list(mammo.header) or [("(no DICOM header)", mammo.kind)]
        self.header_table.setRowCount(len(rows))
        for i, (k, v) in enumerate(rows):
            self.header_table.setItem(i, 0, QTableWidgetItem(k))
            self.header_table.setItem(i, 1, QTableWidgetItem(v))
        self.candidate_list.clear()
        self.map_label.setText("")
        cached = self.maps.get(mammo.source)
        if cached is not None:
            self._show_map(cached)
        self.opened.emit(mammo.source)

    # --- window / tools --------------------------------------------------------------------------
    def apply_preset(self, name: str) -> None:
        if name in self.presets:
            w = self.presets[name]
            self.view.set_window(imaging.Window(w.center, w.width, self.invert_box.isChecked()))

    def _on_invert(self, on: bool) -> None:
        w = self.view.window
        self.view.set_window(imaging.Window(w.center, w.width, on))

    def set_tool(self, tool: str) -> None:
        self.view.set_tool(tool)
        for t, b in self.tool_buttons.items():
            b.setChecked(t == tool)

    # --- regions ---------------------------------------------------------------------------------
    def cut_region(self, box, how: str) -> Region:
        """Cut the protocol-v1 window ``box`` into a 150 x 150 patch with provenance."""

        m = self.mammogram
        pixels = cut_window(m.pixels, box, self.pyramid.full_scale)
        pixels.flags.writeable = False
        patch = Patch(pixels, region_source(m.source, box), None, None, (box.height, box.width),
                      source_ref=window_ref(m.source, m.source_ref, box))
        region = Region(box, patch, how)

        self.regions[patch_key(patch)] = region
        self.view.show_region(box)
        self.regionCut.emit(region)
        return region

    def pick_point(self, row: int, col: int, radius: float | None = None) -> Region:

        r = float(self.radius.value() if radius is None else radius)
        return self.cut_region(point_window(row, col, r, self.mammogram.shape), f"point r={r:g} px")

    def pick_box(self, top: int, left: int, height: int, width: int) -> Region:

        return self.cut_region(box_window(Box(top, left, height, width), self.mammogram.shape),
                               f"box {width}x{height} px")

    def _on_point(self, r: int, c: int) -> None:
        self.pick_point(r, c)

    def _on_box(self, t: int, l_: int, h: int, w: int) -> None:
        self.pick_box(t, l_, h, w)

    def region_for(self, key: str) -> Region | None:
        return self.regions.get(key)

    def show_region_heat(self, key: str, heat: np.ndarray | None) -> None:
        """Draw the region of patch ``key`` (and its Grad-CAM when given) on the mammogram."""
        region = self.regions.get(key)
        if region is None or self.mammogram is None or not region.patch.source.startswith(self.mammogram.source + " ["):
            return
        self.view.show_heat(region.box, heat)

    # --- the map ---------------------------------------------------------------------------------
    def request_map(self) -> None:
        if self.mammogram is None or self._map_running:
            return
        cached = self.maps.get(self.mammogram.source)
        if cached is not None and cached.complete:
            self._show_map(cached)
            return
        self._map_running = True
        self.map_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.map_label.setText("Computing the abnormality map…")
        self.mapRequested.emit(self.mammogram)

    def cancel_map(self) -> None:
        if self._map_running:
            self.map_label.setText("Cancelling…")
            self.mapCancelRequested.emit()

    def map_progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(done)

    def map_finished(self, result) -> None:
        self._end_map()
        if result is None:
            return
        if result.complete:
            self.maps[result.source] = result
        if self.mammogram is not None and result.source == self.mammogram.source:
            self._show_map(result)

    def map_failed(self, message: str) -> None:
        self._end_map()
        self.map_label.setText(f"Map failed: {message}")

    def _end_map(self) -> None:
        self._map_running = False
        self.map_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)

    def map_running(self) -> bool:
        return self._map_running

    def _show_map(self, res) -> None:
        self.view.set_map(res.map, res.stride_px, self.opacity.value() / 100)
        self.view.set_candidates(res.candidates)
        self.candidate_list.clear()
        for k, c in enumerate(res.candidates, 1):
            it = QListWidgetItem(f"{k}. x {c.x}, y {c.y}  P(abnormal) {c.p_abnormal:.2f}  {class_short(c.call)}")
            it.setData(Qt.ItemDataRole.UserRole, k - 1)
            self.candidate_list.addItem(it)
        state = "" if res.complete else " (cancelled: partial map, no candidates)"
        members = res.members_text() + (
            "" if res.exact else " (approximate: a subset of the ensemble or one view per window)")
        self.map_label.setText(
            f"{len(res.p_abnormal)} windows of {res.window_px} px, stride {res.stride_px} px, "
            f"{res.seconds:.1f} s{state}. Map members: {members}. {NOTICE}.")

    def _on_candidate(self, item: QListWidgetItem) -> None:
        res = self.maps.get(self.mammogram.source) if self.mammogram is not None else None
        if res is None:
            return
        k = int(item.data(Qt.ItemDataRole.UserRole))
        self.open_candidate(k)

    def open_candidate(self, k: int) -> Region | None:
        res = self.maps.get(self.mammogram.source)
        if res is None or k >= len(res.candidates):
            return None
        return self.cut_region(res.candidates[k].box, f"candidate {k + 1}")

    # --- keys ------------------------------------------------------------------------------------
    def keyPressEvent(self, event):
        key = event.key()
        K = Qt.Key
        presets = list(self.presets)
        if key == K.Key_F:
            self.view.fit()
        elif key == K.Key_P:
            self.set_tool("pan")
        elif key == K.Key_C:
            self.set_tool("point")
        elif key == K.Key_B:
            self.set_tool("box")
        elif key == K.Key_M:
            self.request_map()
        elif key == K.Key_Escape:
            self.cancel_map()
        elif K.Key_0 <= key <= K.Key_3 and key - K.Key_0 < len(presets):
            name = presets[key - K.Key_0]
            self.preset_box.setCurrentText(name)
            self.apply_preset(name)
        else:
            super().keyPressEvent(event)
            return
        event.accept()


# --------------------------------------------------------------------------- running the map
class MapJobs:
    """Runs the panel's map requests on the models' worker thread (``pool``: the window's
    SerialExecutor) with ``session_fn()`` giving the loaded Session; one job at a time."""

    def __init__(self, panel: MammogramPanel, session_fn, pool, settings=None, on_error=None):
        self.panel = panel
        self.session_fn = session_fn
        self.pool = pool
        self.settings = settings
        self.on_error = on_error
        self.worker = None
        panel.mapRequested.connect(self.start)
        panel.mapCancelRequested.connect(self.cancel)

    def start(self, mammo) -> None:

        session = self.session_fn()
        if session is None:
            self.panel.map_failed("the models are not loaded yet")
            return

        def work(progress, cancel, mammo=mammo, session=session, settings=self.settings):

            return scan_mammogram(mammo, session, settings or ScanSettings(),
                                  progress=lambda d, t: progress(d, t), cancel=cancel)

        w = Worker(work, callbacks=True, name="abnormality map")
        w.on_progress(lambda v: self.panel.map_progress(*v))
        w.on_return(self.panel.map_finished)
        w.on_error(self._failed)
        w.on_finish(self._done)
        self.worker = w
        w.start(self.pool)

    def _failed(self, exc) -> None:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.panel.map_failed(msg)
        if self.on_error is not None:
            self.on_error(msg)

    def _done(self) -> None:
        self.worker = None

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()


# --------------------------------------------------------------------------- help
def shortcut_rows(actions=()) -> list[tuple[str, str]]:
    """(keys, what) rows: the window's QActions with shortcuts, the mammogram keys, the mouse."""
    rows = []
    for a in actions:
        seq = a.shortcut().toString()
        if seq:
            rows.append((seq, a.text().replace("&", "").rstrip("…").strip()))
    rows += [(k, f"mammogram view: {v}") for k, v in VIEW_KEYS]
    rows += list(MOUSE_HELP)
    return rows


class ShortcutSheet(QDialog):
    """F1: every keyboard shortcut and mouse gesture, and how big a region to pick."""

    def __init__(self, actions=(), parent=None):
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts and mouse")
        lay = QVBoxLayout(self)
        rows = shortcut_rows(actions)
        self.table = QTableWidget(len(rows), 2, self)
        self.table.setHorizontalHeaderLabels(["Keys / mouse", "Does"])
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
        for i, (k, v) in enumerate(rows):
            self.table.setItem(i, 0, QTableWidgetItem(k))
            self.table.setItem(i, 1, QTableWidgetItem(v))
        self.table.resizeColumnToContents(0)
        lay.addWidget(self.table)
        note = QLabel(REGION_HELP, self)
        note.setWordWrap(True)
        lay.addWidget(note)
        bb = QDialogButtonBox(QDialogButtonBox.StandardButton.Close, self)
        bb.rejected.connect(self.reject)
        bb.accepted.connect(self.accept)
        lay.addWidget(bb)
        self.resize(620, 560)


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


# --------------------------------------------------------------------------- in the main window
class MammogramTab:
    """The mammogram panel installed in the main window: a "Mammogram" tab beside the patch
    view (the results panel stays visible), File ▸ Open mammogram… (Ctrl+M), Help ▸ Keyboard
    shortcuts (F1); a cut region joins the patch list with its provenance and is predicted and
    explained by the window's usual path (results panel, reports); its box and Grad-CAM are
    drawn on the mammogram; the map runs on the controller's model thread."""

    def __init__(self, win):
        from PyQt6.QtGui import QAction, QKeySequence
        from PyQt6.QtWidgets import QTabWidget

        self.win = win
        self.panel = MammogramPanel()
        self.pending: str | None = None
        centre = win.splitter.widget(1)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        win.splitter.replaceWidget(1, self.tabs)
        self.tabs.addTab(centre, "Patch")
        self.tabs.addTab(self.panel, "Mammogram")
        self.jobs = MapJobs(self.panel, self._session, None, on_error=lambda m: win.status(f"Map failed: {m}"))
        menus = {a.text(): a.menu() for a in win.menuBar().actions()}
        self.act_open = QAction("Open &mammogram…", win, shortcut="Ctrl+M")
        self.act_open.setToolTip("Open a whole mammogram (DICOM, PNG, PGM, TIFF) to pick regions and map it")
        self.act_open.triggered.connect(self.open_dialog)
        fm = menus.get("&File")
        if fm is not None:
            fm.insertAction(win.act_samples, self.act_open)
        self.act_shortcuts = QAction("&Keyboard shortcuts", win, shortcut=QKeySequence.StandardKey.HelpContents)
        self.act_shortcuts.triggered.connect(self.show_shortcuts)
        hm = menus.get("&Help")
        if hm is not None:
            hm.insertAction(hm.actions()[0] if hm.actions() else None, self.act_shortcuts)
        win.addAction(self.act_shortcuts)
        self.act_map = QAction("Abnormality &map of the mammogram", win, shortcut="Ctrl+Shift+M")
        self.act_map.triggered.connect(self._map_from_menu)
        am = menus.get("&Analysis")
        if am is not None:
            am.addAction(self.act_map)
        win.act_fit.triggered.connect(lambda: self.showing() and self.panel.view.fit())
        win.act_cancel.triggered.connect(self.panel.cancel_map)
        self.panel.regionCut.connect(self._on_region)
        win.heatmapShown.connect(self._on_heat_shown)
        win.predictionShown.connect(self._on_prediction_shown)

    def _session(self):
        c = self.win.controller
        self.jobs.pool = c._executor
        return c.session if c.models_ready else None

    def showing(self) -> bool:
        return self.tabs.currentWidget() is self.panel

    # --- opening ---------------------------------------------------------------------------------
    def open_dialog(self) -> None:
        from PyQt6.QtWidgets import QFileDialog

        start = str(self.win.settings.value("last_folder", "") or "")
        path, _ = QFileDialog.getOpenFileName(
            self.win, "Open a whole mammogram", start,
            "Mammograms (*.dcm *.dicom *.png *.pgm *.tif *.tiff *.npy);;All files (*)")
        if path:
            self.open_path(path)

    def open_path(self, path: str | Path):
        """Read ``path`` as a whole mammogram off the GUI thread and show it in the tab."""

        self.pending = str(path)
        self.tabs.setCurrentWidget(self.panel)
        self.win.status(f"Reading the mammogram {Path(path).name}…", 0)
        w = Worker(read_mammogram, str(path), name="read mammogram")
        w.on_return(self._opened)
        w.on_error(lambda exc: self.win.report_error(f"{path}: {str(exc).splitlines()[0]}",
                                                     "Open mammogram"))
        return w.start()

    def _opened(self, mammo) -> None:
        self.panel.open_mammogram(mammo)
        self.tabs.setCurrentWidget(self.panel)
        self.win.status(f"Opened {mammo.describe()} as a whole mammogram")

    # --- regions -> patches --------------------------------------------------------------------
    def _on_region(self, region: Region) -> None:

        key = patch_key(region.patch)
        if self.win.patch_model.row_of(key) is None:
            self.win.patch_model.add_patches([region.patch])
            self.win._update_count()
        self.win.select_key(key)
        self.win.status(f"Cut {region.how}: window top {region.box.top}, left {region.box.left}, "
                        f"side {region.box.height} px -> 150 x 150 patch; classifying…")

    def _on_prediction_shown(self, key: str) -> None:
        region = self.panel.region_for(key)
        if region is not None and self.panel.mammogram is not None:
            self.panel.show_region_heat(key, None)

    def _on_heat_shown(self, key: str) -> None:
        hk = self.win.shown_heat_key()
        cached = self.win.controller.heatmap(hk) if hk is not None else None
        if cached is not None and self.panel.region_for(key) is not None:
            self.panel.show_region_heat(key, cached[0])

    def _map_from_menu(self) -> None:
        self.tabs.setCurrentWidget(self.panel)
        self.panel.request_map()

    def show_shortcuts(self) -> ShortcutSheet:
        acts = [a for a in self.win.findChildren(type(self.act_open)) if a.shortcut().toString()]
        seen, uniq = set(), []
        for a in acts:
            if a.text() not in seen:
                seen.add(a.text())
                uniq.append(a)
        sheet = ShortcutSheet(uniq, self.win)
        sheet.setModal(False)
        sheet.show()
        self.sheet = sheet
        return sheet
