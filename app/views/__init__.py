"""The viewer's widgets: the zoomable image views and the tab panels."""
