"""The mammogram on screen.

* ``DisplayPyramid``: the image shrunk by 2, 4, 8, ... (INTER_AREA) once at opening; the view
  draws the level that matches the zoom, windowed through a lookup table, so a 5,000 x 7,000
  16-bit image never redraws at full resolution while panning or fitted.
* ``MammogramView`` (a :class:`~app.views.zoom_view.ZoomView`, scene units = source pixels,
  origin top-left as stored): wheel zoom at the cursor, left-drag pan, double-click fit,
  right-drag window/level (horizontal: width, vertical: level), the pixel value and position
  under the cursor, a mm scale bar (pixel spacing from DICOM or a stated default), laterality /
  view, and three tools: pan, point (a click with a radius) and box (drag). It only draws and
  reports picks; what a pick means is the controller's (:mod:`app.controllers.mammogram`).

Research use only — not a medical device.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from PyQt6.QtCore import QPointF, QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QFont, QFontMetrics, QImage, QPainter, QPen, QPixmap, QTransform
from PyQt6.QtWidgets import QGraphicsPixmapItem, QGraphicsRectItem, QGraphicsView

from app import imaging
from app.text import NOTICE
from app.views.zoom_view import ZoomView
from mammo_core.protocol import TISSUE_LEVEL, full_scale
from mammo_core.scan import coverage_weight

BACKGROUND = QColor(10, 10, 12)
REGION_PEN = QColor(80, 220, 255)
CANDIDATE_PEN = QColor(255, 210, 60)
PYRAMID_MIN = 256          # stop halving below this longest side
TOOLS = ("pan", "point", "box")

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


def heat_rgba(values: np.ndarray, alpha: float = 1.0, weight: np.ndarray | None = None) -> QImage:
    """Float map in [0, 1] (NaN = transparent) -> RGBA QImage in the jet colour map; ``weight``
    (0..1 per cell, :func:`mammo_core.scan.coverage_weight`) fades cells covered by fewer windows."""
    import cv2

    v = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0)
    col = cv2.applyColorMap(np.clip(v * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_JET)[..., ::-1]
    w = np.ones(v.shape) if weight is None else np.asarray(weight, dtype=np.float64)
    a = np.where(np.isfinite(values), np.round(255 * alpha * w), 0).astype(np.uint8)
    rgba = np.ascontiguousarray(np.dstack([col, a]))
    h, w = rgba.shape[:2]
    return QImage(rgba.data, w, h, rgba.strides[0], QImage.Format.Format_RGBA8888).copy()  # type: ignore[call-overload]


def map_legend_image(width: int = 220, height: int = 30) -> QImage:
    """The colour bar of the map: P(abnormal) 0 (left, blue) to 1 (right, red), labelled."""
    from PyQt6.QtGui import QColor, QPainter

    ramp = np.linspace(0.0, 1.0, width - 20)[None, :].repeat(12, axis=0)
    bar = heat_rgba(ramp)
    img = QImage(width, height, QImage.Format.Format_RGBA8888)
    img.fill(QColor(0, 0, 0, 0))
    p = QPainter(img)
    p.drawImage(10, 0, bar)
    p.setPen(QColor(60, 60, 60))
    p.drawText(4, height - 3, "P(abnormal) 0")
    p.drawText(width - 30, height - 3, "1")
    p.drawText(width // 2 - 8, height - 3, "0.5")
    p.end()
    return img


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
class MammogramView(ZoomView):
    """The mammogram on a QGraphicsScene whose units are source pixels."""

    hovered = pyqtSignal(str)
    pointPicked = pyqtSignal(int, int)           # row, col
    boxPicked = pyqtSignal(int, int, int, int)   # top, left, height, width
    windowChanged = pyqtSignal(object)           # imaging.Window
    levelShown = pyqtSignal(int)                 # pyramid level drawn (tests, benchmark)

    MIN_ZOOM, MAX_ZOOM = 0.01, 32.0

    def __init__(self, parent=None):
        super().__init__(BACKGROUND, smooth=True, parent=parent)
        self.setMouseTracking(True)
        self.mammogram: Any = None  # mammo_core.mammogram.Mammogram
        self.pyramid: DisplayPyramid | None = None
        # shadows QWidget.window() (the display window, kept under this name for the tests)
        self.window: imaging.Window = imaging.Window()  # type: ignore[assignment]
        self.tool = "pan"
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
        self._heat_item.setTransform(QTransform.fromScale(box.width / img.width(), box.height / img.height()))
        self._heat_item.setPos(box.left, box.top)
        self._heat_item.setOpacity(opacity)
        self.show_region_only(box)

    def show_region_only(self, box) -> None:
        self._region_item.setRect(QRectF(box.left, box.top, box.width, box.height))
        self._region_item.setVisible(True)

    def set_map(self, amap: np.ndarray | None, stride: int = 1, opacity: float = 0.4,
                coverage: np.ndarray | None = None) -> None:
        if amap is None:
            self._map_item.setPixmap(QPixmap())
            return
        img = heat_rgba(amap, weight=coverage_weight(coverage))
        self._map_item.setPixmap(QPixmap.fromImage(img))
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

    # --- zoom ---------------------------------------------------------------------------------
    def fit_rect(self) -> QRectF | None:
        if self.mammogram is None:
            return None
        h, w = self.mammogram.shape
        return QRectF(0, 0, w, h)

    def zoomed(self) -> None:
        self._redraw()

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
    def notice_rect(self) -> QRectF:
        """Where the "Research use only" line is drawn (viewport pixels)."""
        f = QFont()
        f.setPointSize(10)
        fm = QFontMetrics(f)
        y = self.viewport().rect().height() - 10
        return QRectF(10, y - fm.ascent(), fm.horizontalAdvance(NOTICE), fm.height())

    def scale_bar_geometry(self) -> tuple[float, float, int, str] | None:
        """(x0, x1, y, label) of the mm scale bar in viewport pixels, or None without a pixel
        spacing. The bar sits at the bottom right; when the viewport is too narrow for it beside
        the "Research use only" line, it goes a text line above, never over it."""
        m = self.mammogram
        if m is None or m.mm_per_pixel is None or self.zoom() <= 0:
            return None
        vp = self.viewport().rect()
        f = QFont()
        f.setPointSize(10)
        fm = QFontMetrics(f)
        mm_per_screen = m.mm_per_pixel / self.zoom()
        length = nice_length_mm(mm_per_screen)
        px = length / mm_per_screen
        x1 = vp.width() - 20
        x0 = x1 - px
        y = vp.height() - 20
        if x0 - 12 < 10 + fm.horizontalAdvance(NOTICE):  # would reach the notice: lift it
            y = vp.height() - 10 - fm.height() - 14
        return x0, x1, y, f"{length:g} mm"

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
        bar = self.scale_bar_geometry()
        if bar is not None:
            x0, x1, y, label = bar
            painter.setPen(QPen(QColor(255, 255, 255), 2))
            painter.drawLine(int(x0), y, int(x1), y)
            painter.drawLine(int(x0), y - 5, int(x0), y + 5)
            painter.drawLine(int(x1), y - 5, int(x1), y + 5)
            painter.drawText(int(x0), y - 8, label)
        painter.restore()


