"""Regenerate README's gallery: run every notebook on FER2013 with the shipped model, then copy
the tagged figures to docs/gallery/ and the region-share table into README.md.

Usage::

    python scripts/make_gallery.py --data fer2013.csv.gz            # about 45 min on 2 cores
    python scripts/make_gallery.py --data fer2013.csv.gz --reuse    # only re-extract from reports/

``make gallery`` runs the first with ``../shared/data/fer2013.csv.gz`` (``FER2013=...`` to change).
"""

import argparse
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fervis import report  # noqa: E402
from fervis.constants import BUDGETS  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the FER2013 file")
    parser.add_argument("--budget", default="full", choices=tuple(BUDGETS))
    parser.add_argument("--model", default="pretrained:fer2013")
    parser.add_argument("--out", default=str(ROOT / "reports"), help="the reports folder")
    parser.add_argument("--reuse", action="store_true", help="extract from the existing report; run nothing")
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.out).resolve() / report.data_name(args.data)
    if not args.reuse:
        result = report.run(data=args.data, budget=args.budget, model=args.model, out=args.out)
        folder = result.folder
        print(f"report: {result.index}")
    block = report.gallery(folder, ROOT / "docs" / "gallery")
    report.update_readme(ROOT / "README.md", block)
    for _, _, name, *_ in report.GALLERY:
        path = ROOT / "docs" / "gallery" / name
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")
    print("README.md gallery updated")


if __name__ == "__main__":
    main()
