"""Copy result files into README.md and BENCHMARKS.md, so that the tables there are the files, never retyped.

A block in a document

    <!-- include results/summary.md -->
    ...
    <!-- end include -->

gets the current text of that file between its two markers. ``--check`` changes nothing and exits 1 (naming the
blocks) when a block differs from its file.

    python scripts/sync_docs.py            # after a benchmark wrote new results
    python scripts/sync_docs.py --check
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ("README.md", "BENCHMARKS.md")
BLOCK = re.compile(r"(<!-- include (\S+) -->\n)(.*?)(<!-- end include -->)", re.S)


def synced(text: str, root: Path = ROOT) -> tuple:
    """(the text with every include block refreshed, [paths of blocks that differed])."""
    stale = []

    def refresh(m):
        body = (root / m.group(2)).read_text().rstrip("\n") + "\n"
        if body != m.group(3):
            stale.append(m.group(2))
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(refresh, text), stale


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="only report blocks that differ from their files")
    args = ap.parse_args(argv)
    status = 0
    for name in DOCS:
        path = ROOT / name
        new, stale = synced(path.read_text())
        for s in stale:
            print(f"{name}: the block of {s} {'differs from' if args.check else 'updated from'} the file")
        if stale and args.check:
            status = 1
        elif stale:
            path.write_text(new)
    return status


if __name__ == "__main__":
    sys.exit(main())
