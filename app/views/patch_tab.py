"""The Patch tab: the large patch view with its controls (Grad-CAM overlay, side by side,
model, method, target, opacity, window/level, invert, fit) and the heatmap's status and colour
bar. It draws the current patch and asks its :class:`~app.controllers.patches.PatchController`
for heatmaps; the window tells it which patch is current (:meth:`PatchTab.set_entry`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PyQt6.QtCore import Qt, pyqtSignal
from PyQt6.QtGui import QPixmap
from PyQt6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QHBoxLayout,
    QLabel,
    QSlider,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app import imaging
from app.controllers.patches import PatchController
from app.patch_browser import PatchEntry
from app.text import class_label
from app.views.image_view import ImageView
from mammo_core.explain import tissue_mask
from mammo_core.predictions import ENSEMBLE, HeatKey

METHODS = (("Grad-CAM", "gradcam"), ("Grad-CAM++", "gradcam++"))
UNIT_CACHE_SIZE = 512


def fill_heat_models(combo: QComboBox, loaded: Sequence[str], preferred: str) -> None:
    """The heatmap's model choice: the ensemble first, then each member."""
    combo.blockSignals(True)
    combo.clear()
    for name in ([ENSEMBLE] if ENSEMBLE in loaded else []) + [n for n in loaded if n != ENSEMBLE]:
        combo.addItem("Ensemble" if name == ENSEMBLE else name, name)
    combo.setCurrentIndex(max(combo.findData(preferred), 0))
    combo.blockSignals(False)


def fill_targets(combo: QComboBox, classes: Sequence[str]) -> None:
    """The heatmap's target choice: the predicted class, then each class (the choice kept)."""
    previous = combo.currentData()
    combo.blockSignals(True)
    combo.clear()
    combo.addItem("Predicted class", None)
    for c in classes:
        combo.addItem(class_label(c), c)
    combo.setCurrentIndex(max(combo.findData(previous) if previous else 0, 0))
    combo.blockSignals(False)


class PatchTab(QWidget):
    """Controls + :class:`~app.views.image_view.ImageView` + heatmap status and colour bar."""

    heatmapShown = pyqtSignal(str)  # key of the patch whose heatmap is on screen
    comboChosen = pyqtSignal()  # a choice was made in a combo box (focus back to the list)

    def __init__(self, controller: PatchController, parent: QWidget | None = None):
        super().__init__(parent)
        self.controller = controller
        self.preferred_model = ENSEMBLE
        self._unit_cache: dict[str, np.ndarray] = {}
        self._window = imaging.Window()
        self._current: PatchEntry | None = None
        self._shown_heat_key: HeatKey | None = None
        self._build()
        self._wire()

    def _build(self) -> None:
        cv = QVBoxLayout(self)
        cv.setContentsMargins(4, 8, 4, 8)
        cv.setSpacing(4)
        row1 = QHBoxLayout()
        self.overlay_check = QCheckBox("Grad-CAM (G)")
        self.overlay_check.setToolTip("Show where the model looked (Grad-CAM heatmap)")
        self.side_check = QCheckBox("Side by side (S)")
        self.side_check.setToolTip("Original and overlay next to each other")
        self.heat_model = QComboBox()
        self.heat_model.setToolTip("Heatmap of the ensemble or of one member model")
        self.heat_model.setMinimumContentsLength(8)
        self.heat_model.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method_combo = QComboBox()
        for label, value in METHODS:
            self.method_combo.addItem(label, value)
        self.target_combo = QComboBox()
        self.target_combo.setToolTip("Class the heatmap explains")
        self.target_combo.setMinimumContentsLength(10)
        self.target_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setToolTip("Overlay opacity")
        row1.addWidget(self.overlay_check)
        row1.addWidget(self.side_check)
        row1.addSpacing(8)
        row1.addWidget(QLabel("Opacity"))
        row1.addWidget(self.opacity, 1)
        cv.addLayout(row1)
        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Model"))
        row1.addWidget(self.heat_model, 1)
        row1.addWidget(self.method_combo)
        row1.addWidget(QLabel("Target"))
        row1.addWidget(self.target_combo, 1)
        cv.addLayout(row1)

        row2 = QHBoxLayout()
        self.level_slider = QSlider(Qt.Orientation.Horizontal)
        self.level_slider.setRange(0, 1000)
        self.level_slider.setToolTip("Level: centre of the displayed intensity range")
        self.width_slider = QSlider(Qt.Orientation.Horizontal)
        self.width_slider.setRange(1, 1000)
        self.width_slider.setToolTip("Window: width of the displayed intensity range (contrast)")
        self.auto_check = QCheckBox("Auto")
        self.auto_check.setToolTip("Auto contrast: window each patch to its own 0.5–99.5 % "
                                   "intensity range (A)")
        self.invert_check = QCheckBox("Invert (I)")
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit (F)")
        self.actual_button = QToolButton()
        self.actual_button.setText("1:1")
        self.actual_button.setToolTip("Actual pixels (one image pixel per screen pixel)")
        self.zoom_label = QLabel("")
        self.zoom_label.setObjectName("dim")
        self.zoom_label.setMinimumWidth(44)
        row2.addWidget(QLabel("Window"))
        row2.addWidget(self.width_slider, 1)
        row2.addWidget(QLabel("Level"))
        row2.addWidget(self.level_slider, 1)
        row2.addWidget(self.auto_check)
        row2.addWidget(self.invert_check)
        row2.addWidget(self.fit_button)
        row2.addWidget(self.actual_button)
        row2.addWidget(self.zoom_label)
        cv.addLayout(row2)
        for sl in (self.opacity, self.width_slider, self.level_slider):
            sl.setMinimumWidth(40)

        self.view = ImageView()
        self.view.setFocusPolicy(Qt.FocusPolicy.NoFocus)  # arrows stay with the browser
        cv.addWidget(self.view, 1)
        self.heat_status = QLabel("")
        self.heat_status.setObjectName("dim")
        self.heat_status.setTextFormat(Qt.TextFormat.PlainText)
        self.heat_status.setWordWrap(True)  # long texts must not widen the centre column
        self.heat_status.setMinimumWidth(50)
        cv.addWidget(self.heat_status)
        # the colour bar of the heatmap: 0 .. 1 per patch, shown with the overlay
        self.colour_bar = QWidget()
        bar_row = QHBoxLayout(self.colour_bar)
        bar_row.setContentsMargins(0, 0, 0, 0)
        low = QLabel("0 (none)")
        low.setObjectName("dim")
        self.colour_bar_image = QLabel()
        self.colour_bar_image.setFixedHeight(12)
        self.colour_bar_image.setScaledContents(True)
        self.colour_bar_image.setMinimumWidth(40)
        self.colour_bar_image.setPixmap(QPixmap.fromImage(imaging.to_qimage(imaging.colour_bar())))
        high = QLabel("1 (most, per patch)")
        high.setObjectName("dim")
        bar_row.addWidget(low)
        bar_row.addWidget(self.colour_bar_image, 1)
        bar_row.addWidget(high)
        self.colour_bar.setToolTip("Heatmap scale: each map is scaled so its strongest point is "
                                   "1; background below the tissue threshold is not coloured")
        self.colour_bar.hide()
        cv.addWidget(self.colour_bar)

    def _wire(self) -> None:
        self.overlay_check.toggled.connect(self.render)
        self.side_check.toggled.connect(self.render)
        self.heat_model.currentIndexChanged.connect(self._on_heat_model_changed)
        self.method_combo.currentIndexChanged.connect(self.render)
        self.target_combo.currentIndexChanged.connect(self.render)
        self.opacity.valueChanged.connect(self.render)
        self.level_slider.valueChanged.connect(self._on_window_slider)
        self.width_slider.valueChanged.connect(self._on_window_slider)
        self.auto_check.toggled.connect(self._on_auto_toggled)
        self.invert_check.toggled.connect(self._on_invert_toggled)
        self.fit_button.clicked.connect(self.view.fit)
        self.actual_button.clicked.connect(self.view.actual_size)
        self.view.zoomChanged.connect(lambda z: self.zoom_label.setText(f"{100 * z:.0f}%"))
        for combo in (self.heat_model, self.method_combo, self.target_combo):
            combo.activated.connect(self.comboChosen)
        self.controller.heatmapReady.connect(self._on_heatmap)
        self.controller.heatmapFailed.connect(lambda _key, msg: self.heat_status.setText(msg))

    # ------------------------------------------------------------------ the patch shown
    def set_entry(self, entry: PatchEntry | None) -> None:
        """Show ``entry`` (auto window when Auto is on)."""
        self._current = entry
        if entry is not None and self.auto_check.isChecked():
            self._set_window(imaging.auto_window(self._unit(entry)), keep_invert=True)
        self.render()

    def clear(self, message: str) -> None:
        self._current = None
        self._unit_cache.clear()
        self.view.set_message(message)

    def forget_units(self) -> None:
        self._unit_cache.clear()

    def _unit(self, entry: PatchEntry) -> np.ndarray:
        u = self._unit_cache.get(entry.key)
        if u is None:
            u = imaging.to_unit(entry.patch)  # the patch's own bit depth, as the models
            if len(self._unit_cache) > UNIT_CACHE_SIZE:
                self._unit_cache.clear()
            self._unit_cache[entry.key] = u
        return u

    # ------------------------------------------------------------------ heatmap choices
    def fill_heat_models(self, loaded: Sequence[str]) -> None:
        fill_heat_models(self.heat_model, loaded, self.preferred_model)
        self._fill_targets()

    def _fill_targets(self) -> None:
        model = self.heat_model.currentData()
        fill_targets(self.target_combo, self.controller.classes_of(model) if model else ())

    def _on_heat_model_changed(self, *_) -> None:
        self._fill_targets()
        self.render()

    def heat_request(self) -> HeatKey | None:
        """The heatmap the controls ask for (sha256, model, method, target), or None."""
        entry = self._current
        if entry is None or not self.overlay_check.isChecked():
            return None
        return self.controller.heat_key(entry.patch, self.heat_model.currentData(),
                                        self.method_combo.currentData(),
                                        self.target_combo.currentData())

    def _on_heatmap(self, key: HeatKey) -> None:
        if self.heat_request() == key:
            self.render()

    def shown_heat_key(self) -> HeatKey | None:
        return self._shown_heat_key

    def toggle_overlay(self) -> None:
        self.overlay_check.setChecked(not self.overlay_check.isChecked())

    # ------------------------------------------------------------------ window / level
    def _set_window(self, window: imaging.Window, keep_invert: bool = False) -> None:
        invert = self.invert_check.isChecked() if keep_invert else window.invert
        self._window = imaging.Window(window.center, window.width, invert)
        for sl, val in ((self.level_slider, window.center), (self.width_slider, window.width)):
            sl.blockSignals(True)
            sl.setValue(round(val * 1000))
            sl.blockSignals(False)

    def _on_window_slider(self, *_) -> None:
        self.auto_check.blockSignals(True)
        self.auto_check.setChecked(False)
        self.auto_check.blockSignals(False)
        self._window = imaging.Window(self.level_slider.value() / 1000.0,
                                      max(self.width_slider.value(), 1) / 1000.0,
                                      self.invert_check.isChecked())
        self.render()

    def _on_auto_toggled(self, on: bool) -> None:
        if on and self._current is not None:
            self._set_window(imaging.auto_window(self._unit(self._current)), keep_invert=True)
        elif on:
            return
        self.render()

    def _on_invert_toggled(self, on: bool) -> None:
        self._window = imaging.Window(self._window.center, self._window.width, on)
        self.render()

    # ------------------------------------------------------------------ rendering
    def render(self, *_) -> None:
        """Redraw the current patch with the window, invert, overlay and layout chosen."""
        entry = self._current
        if entry is None:
            return
        grey = imaging.apply_window(self._unit(entry), self._window)
        images = [("Original", imaging.to_qimage(grey))]
        self._shown_heat_key = None
        wanted = None
        if not self.overlay_check.isChecked():
            self.heat_status.setText("Grad-CAM overlay off (press G to show it)")
        elif not self.controller.models_ready:
            self.heat_status.setText("Grad-CAM: waiting for the models")
        else:
            key = self.heat_request()
            cached = self.controller.heatmap(key) if key is not None else None
            if key is None:
                self.heat_status.setText("Grad-CAM: waiting for the prediction…")
            elif cached is not None:
                # the background (below the tissue threshold) is not part of the map
                mask = tissue_mask(self._unit(entry))
                over = imaging.blend(grey, cached[1], self.opacity.value() / 100.0, mask)
                caption = (f"Grad-CAM{'++' if key.method == 'gradcam++' else ''} · "
                           f"{self.heat_model.currentText()} · {class_label(key.target)}")
                over_img = imaging.to_qimage(over)
                images = ([images[0], (caption, over_img)] if self.side_check.isChecked()
                          else [(caption, over_img)])
                self._shown_heat_key = key
                self.heat_status.setText(
                    f"Heatmap: {self.method_combo.currentText()} of "
                    f"{self.heat_model.currentText()} for “{class_label(key.target)}” — red = "
                    "regions that raised this class's score most (scaled per patch; "
                    "background not coloured)")
            else:
                self.heat_status.setText("Grad-CAM: computing…")
                wanted = key
        self.colour_bar.setVisible(self._shown_heat_key is not None)
        self.controller.want_heatmap(entry.patch, wanted)  # anything else queued is dropped
        self.view.set_images(images)
        if self._shown_heat_key is not None:
            self.heatmapShown.emit(entry.key)
