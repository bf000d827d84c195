"""The Qt viewer (`mammo-viewer`). Never imports TensorFlow: it asks mammo_core for work from
QThreadPool workers. Research use only - not a medical device."""
