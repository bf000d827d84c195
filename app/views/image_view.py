"""The large patch view: zoom (wheel), pan (drag), fit, and an optional side-by-side pair.

A ``QGraphicsView`` on a dark background showing one image, or two images side by side
(original | overlay) in the same scene so zoom and pan stay in step. Small captions above the
images keep their size whatever the zoom.
"""
from __future__ import annotations

from PyQt6.QtCore import QRectF, Qt
from PyQt6.QtGui import QBrush, QColor, QFont, QImage, QPixmap
from PyQt6.QtWidgets import QGraphicsPixmapItem, QGraphicsSimpleTextItem, QGraphicsView

from app.views.zoom_view import ZoomView

BACKGROUND = QColor(18, 18, 20)
CAPTION = QColor(200, 200, 205)
GAP = 6  # scene pixels between the two images of the pair


class ImageView(ZoomView):
    """Shows ``set_images([(caption, QImage), ...])``; wheel zooms, drag pans, ``fit()``."""

    MIN_ZOOM, MAX_ZOOM = 0.1, 40.0

    def __init__(self, parent=None):
        super().__init__(BACKGROUND, smooth=False, parent=parent)  # show real pixels
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self._items: list[QGraphicsPixmapItem] = []
        self._captions: list[QGraphicsSimpleTextItem] = []
        self._placeholder = self.scene().addSimpleText("")
        self._placeholder.setBrush(QBrush(CAPTION))
        f = QFont()
        f.setPointSize(11)
        self._placeholder.setFont(f)
        self._placeholder.setFlag(self._placeholder.GraphicsItemFlag.ItemIgnoresTransformations)

    # --- content -----------------------------------------------------------------------
    def set_message(self, text: str) -> None:
        """Show a centred message instead of images (e.g. "Open patches to begin")."""
        self.clear_images()
        self._placeholder.setText(text)
        self._placeholder.setVisible(bool(text))
        self.scene().setSceneRect(QRectF(-200, -50, 400, 100))
        br = self._placeholder.boundingRect()
        self._placeholder.setPos(-br.width() / 2, -br.height() / 2)
        self.resetTransform()

    def clear_images(self) -> None:
        for it in self._items + self._captions:
            self.scene().removeItem(it)
        self._items, self._captions = [], []

    def set_images(self, images: list[tuple[str, QImage]]) -> None:
        """Replace the shown images; keeps the current zoom/pan unless in fit mode or the
        layout (one vs. two images) changed."""
        self._placeholder.setVisible(False)
        layout_changed = len(images) != len(self._items)
        if layout_changed:
            self.clear_images()
            x = 0.0
            for caption, img in images:
                item = self.scene().addPixmap(QPixmap.fromImage(img))
                item.setTransformationMode(Qt.TransformationMode.FastTransformation)
                item.setPos(x, 0)
                self._items.append(item)
                cap = self.scene().addSimpleText(caption)
                cap.setBrush(QBrush(CAPTION))
                cap.setFlag(cap.GraphicsItemFlag.ItemIgnoresTransformations)
                cap.setPos(x, -2)
                self._captions.append(cap)
                x += img.width() + GAP
        else:
            for item, cap, (caption, img) in zip(self._items, self._captions, images):
                item.setPixmap(QPixmap.fromImage(img))
                cap.setText(caption)
        self._update_caption_positions()
        bounds = QRectF()
        for item in self._items:
            bounds = bounds.united(item.sceneBoundingRect())
        margin = 8.0
        self.scene().setSceneRect(bounds.adjusted(-margin, -24, margin, margin))
        if self._fit_mode or layout_changed:
            self.fit()

    def _update_caption_positions(self) -> None:
        # captions sit just above each image, in screen-size font (ignore transformations)
        for item, cap in zip(self._items, self._captions):
            scale = self.transform().m11() or 1.0
            h = cap.boundingRect().height() / scale
            cap.setPos(item.pos().x(), item.pos().y() - h - 2 / scale)

    def images(self) -> list[QImage]:
        return [it.pixmap().toImage() for it in self._items]

    # --- zoom ------------------------------------------------------------------------------
    def fit_rect(self) -> QRectF | None:
        return self.scene().sceneRect() if self._items else None

    def zoomed(self) -> None:
        self._update_caption_positions()
