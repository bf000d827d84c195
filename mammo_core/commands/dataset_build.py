"""(placeholder until its issue lands)"""
from __future__ import annotations


def register(subparsers) -> None:  # noqa: D401 - filled in by its issue
    return None
