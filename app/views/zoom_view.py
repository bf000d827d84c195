"""The one zoomable image view: a ``QGraphicsView`` with wheel zoom at the cursor, drag pan,
fit (kept on resize) and a double-click to fit. The patch view (:mod:`app.views.image_view`)
and the mammogram view (:mod:`app.views.mammogram_view`) are both this class; each says what
"fit" shows (:meth:`ZoomView.fit_rect`) and what to redo after a zoom
(:meth:`ZoomView.zoomed`)."""
from __future__ import annotations

from PyQt6.QtCore import QRectF, Qt, pyqtSignal
from PyQt6.QtGui import QBrush, QColor, QPainter
from PyQt6.QtWidgets import QGraphicsScene, QGraphicsView, QWidget


def set_fit_scrollbars(view: QGraphicsView, fitted: bool) -> None:
    """No scroll bars while ``view`` is fitted (everything is in sight; panning still works),
    as needed once zoomed. Fitting on resize with scroll bars "as needed" can loop for ever:
    a bar appears, the viewport shrinks, the refit zooms out, the bar goes, the viewport grows,
    the refit zooms in, the bar comes back... (seen with create_app()'s style sheet, whose
    scroll bars are narrower: the mammogram map test spun at full CPU)."""
    policy = Qt.ScrollBarPolicy.ScrollBarAlwaysOff if fitted else Qt.ScrollBarPolicy.ScrollBarAsNeeded
    if view.horizontalScrollBarPolicy() != policy:
        view.setHorizontalScrollBarPolicy(policy)
    if view.verticalScrollBarPolicy() != policy:
        view.setVerticalScrollBarPolicy(policy)


class ZoomView(QGraphicsView):
    """Zoom (wheel, :meth:`set_zoom`, :meth:`zoom_by`), pan and fit over its own scene."""

    zoomChanged = pyqtSignal(float)

    MIN_ZOOM, MAX_ZOOM = 0.1, 40.0
    WHEEL_STEP = 1.25  # zoom factor per wheel notch (120 units)

    def __init__(self, background: QColor, smooth: bool, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setBackgroundBrush(QBrush(background))
        self.setFrameShape(QGraphicsView.Shape.NoFrame)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, smooth)
        self.setMinimumSize(300, 300)
        self._fit_mode = True
        set_fit_scrollbars(self, True)

    # --- what subclasses say ---------------------------------------------------------------
    def fit_rect(self) -> QRectF | None:
        """The scene rectangle that "fit" shows (None: nothing to show yet)."""
        return self.scene().sceneRect()

    def zoomed(self) -> None:
        """Called after every change of zoom (redraw what depends on it)."""

    # --- zoom / fit ------------------------------------------------------------------------
    def zoom(self) -> float:
        return self.transform().m11()

    def set_zoom(self, factor: float) -> None:
        factor = min(max(factor, self.MIN_ZOOM), self.MAX_ZOOM)
        self._fit_mode = False
        set_fit_scrollbars(self, False)
        self.setTransform(self.transform().fromScale(factor, factor))
        self.zoomed()
        self.zoomChanged.emit(factor)

    def zoom_by(self, step: float) -> None:
        self.set_zoom(self.zoom() * step)

    def fit(self) -> None:
        """Fit :meth:`fit_rect` into the view; stays fitted on resize."""
        self._fit_mode = True
        set_fit_scrollbars(self, True)
        rect = self.fit_rect()
        if rect is None:
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        self.zoomed()
        self.zoomChanged.emit(self.zoom())

    def actual_size(self) -> None:
        self.set_zoom(1.0)

    def is_fit(self) -> bool:
        return self._fit_mode

    # --- events ----------------------------------------------------------------------------
    def wheelEvent(self, event):
        delta = event.angleDelta().y()
        if delta:
            self.zoom_by(self.WHEEL_STEP ** (delta / 120.0))
        event.accept()

    def mouseDoubleClickEvent(self, event):
        self.fit()

    def resizeEvent(self, event):
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit()
