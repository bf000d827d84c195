#!/usr/bin/env python
"""Write the viewer's sample patches (assets/samples/) from a built set's held-out split.

    python training_scripts/make_samples.py --data data/mias --out assets/samples [--n 20]
"""
from __future__ import annotations

import argparse
import logging
import sys

from mammo_core import logsetup
from mammo_core.datasets.samples import write_samples
from mammo_core.errors import MammoError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder in the CBIS-DDSM layout (built by mammo dataset build-mias)")
    ap.add_argument("--out", required=True, help="folder to write the PNGs, labels.csv and NOTICE into")
    ap.add_argument("--n", type=int, default=20, help="number of patches (default 20)")
    ap.add_argument("--split", default="public_test", help="split to take them from (default public_test)")
    args = ap.parse_args(argv)
    logsetup.configure("make_samples")
    try:
        files = write_samples(args.data, args.out, n=args.n, split=args.split)
    except MammoError as err:
        logging.getLogger("make_samples").error("error: %s", err)
        return 1
    print(f"wrote {len(files)} patches to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
