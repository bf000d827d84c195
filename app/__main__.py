"""``python -m app``: the same as ``mammo-viewer``."""
from app.main import main

raise SystemExit(main())
