"""One controller per tab, without widgets: state and work as signals, tested without
TensorFlow and without a window. Both run their model work on the shared
:class:`app.service.ModelService`."""
