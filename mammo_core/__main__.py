import sys

from mammo_core.cli import main

sys.exit(main())
