"""Dataset builders (mini-MIAS, CBIS-DDSM release) and grouped splits."""
