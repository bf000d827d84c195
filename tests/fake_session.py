"""A stand-in for ``mammo_core.session.Session`` with what ``app.service.ModelService`` needs of
one (the cards and a load), for GUI tests that compute nothing with models."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Info:
    name: str
    classes: tuple[str, ...] = ("baseline", "mass", "calcification")


class FakeSession:
    """What the service needs of a Session: the cards and a load."""

    def __init__(self, models_dir):
        self.models_dir = models_dir
        self.loaded: list[str] = []

    def available(self):
        return [Info("m1")]

    def load(self, progress=None):
        self.loaded = ["m1"]
        return []
