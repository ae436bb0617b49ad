"""``porter fetch``: download a catalog model's source and check its digest."""

from __future__ import annotations

import argparse

from porter.cli.output import progress_printer


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch", help="download a known model's source into the cache, digest-checked",
        description="Download the source file of a model listed in model_zoo/catalog.toml into "
                    "the cache ($PORTER_CACHE or ~/.cache/porter) and check its sha256. Then "
                    "`porter convert NAME` uses it.")
    p.add_argument("name", metavar="NAME", nargs="?", help="catalog name (omit to list them)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from porter.zoo.catalog import cached_path, fetch, load_catalog

    if not args.name:
        for name, entry in load_catalog().items():
            state = "fetched" if cached_path(name) else "not fetched"
            print(f"{name:<24} {state:<12} {entry.get('description', '')}")
        return 0
    path = fetch(args.name, progress=progress_printer(True))
    print(path)
    return 0
