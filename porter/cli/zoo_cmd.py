"""``porter zoo``: list and verify published models."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list or verify published models",
                       description="The local zoo is $PORTER_ZOO or model_zoo/. Entries are "
                                   "written by `porter convert --publish`.")
    p.add_argument("--zoo", metavar="DIR", help="zoo folder (default: $PORTER_ZOO or model_zoo/)")
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    ls = zsub.add_parser("list", help="published entries with their digests and parity")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    vf = zsub.add_parser("verify", help="re-hash an entry's weights against its manifest")
    vf.add_argument("name", metavar="NAME")
    vf.set_defaults(run=run_verify)


def run_list(args: argparse.Namespace) -> int:
    from porter.zoo.publish import list_entries

    entries = list_entries(args.zoo)
    if args.json:
        emit_json(entries)
        return 0
    if not entries:
        print("no published models (use `porter convert SRC --publish`)")
    for e in entries:
        if "error" in e:
            print(f"{e['name']:<24} BROKEN: {e['error']}")
            continue
        parity = e.get("parity_max_abs")
        parity = f"max|Δ| {parity:.1e}" if isinstance(parity, float) else "unverified"
        print(f"{e['name']:<24} {e['graph']:<28} {parity:<16} npu:{e.get('npu') or '-':<6} "
              f"sha256 {str(e['weights_sha256'])[:16]}…")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from porter.zoo.publish import verify_entry

    info = verify_entry(args.name, args.zoo)
    print(f"{info['name']}: ok (sha256 {info['sha256']})")
    return 0
