"""``porter zoo``: list, verify and clean published models."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json

HELP = """\
The zoo is $PORTER_ZOO if set, else zoo/ in porter's per-user cache ($PORTER_CACHE, else
$XDG_CACHE_HOME/porter, else ~/.cache/porter), whatever the current directory. Entries are
written by `porter convert --publish`; --zoo DIR names another zoo (before or after ACTION).

examples:
  porter zoo list
  porter zoo list --zoo ~/team-zoo --json
  porter zoo verify modnet_photographic
  porter zoo gc                      # clear what killed publishes left behind"""

_ZOO_HELP = "zoo folder (default: $PORTER_ZOO, else ~/.cache/porter/zoo)"


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="list, verify or clean published models", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", metavar="DIR", help=_ZOO_HELP)
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    ls = zsub.add_parser("list", help="published entries with their digests and parity",
                         description="List published entries.\n\nexamples:\n  porter zoo list\n"
                                     "  porter zoo list --json --zoo DIR",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    vf = zsub.add_parser("verify", help="re-hash an entry's weights against its manifest",
                         description="Re-hash an entry's weights; exit 1 if they were altered."
                                     "\n\nexamples:\n  porter zoo verify modnet_photographic",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    vf.add_argument("name", metavar="NAME")
    vf.set_defaults(run=run_verify)
    gcp = zsub.add_parser("gc", help="remove debris of interrupted publishes",
                          description="Remove staged and old copies that killed publishes left "
                                      "(hidden folders; never listed as entries).\n\nexamples:\n"
                                      "  porter zoo gc",
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    gcp.set_defaults(run=run_gc)
    for action in (ls, vf, gcp):  # --zoo after the action too; SUPPRESS keeps an earlier one
        action.add_argument("--zoo", metavar="DIR", default=argparse.SUPPRESS, help=_ZOO_HELP)


def run_list(args: argparse.Namespace) -> int:
    from porter.zoo.load import zoo_root
    from porter.zoo.publish import list_entries

    entries = list_entries(args.zoo)
    if args.json:
        emit_json(entries)
        return 0
    if not entries:
        print(f"no published models in {zoo_root(args.zoo)} "
              "(use `porter convert SRC --publish`)")
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


def run_gc(args: argparse.Namespace) -> int:
    from porter.zoo.load import zoo_root
    from porter.zoo.publish import gc

    cleared = gc(args.zoo)
    print(f"{zoo_root(args.zoo)}: cleared {len(cleared)} leftover folders"
          + (f" ({', '.join(cleared)})" if cleared else ""))
    return 0
