"""Every module of mammo_core can be read in one sitting (issue 21: no file over 700 lines)."""
from __future__ import annotations

from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "mammo_core"
MAX_LINES = 700


def test_no_mammo_core_file_over_700_lines():
    long = {str(p.relative_to(CORE)): n for p in sorted(CORE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"
