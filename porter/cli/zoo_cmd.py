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
  porter zoo gc                      # clear what killed publishes left behind
  porter zoo build model_zoo/catalog.toml --ray auto --json   # whole catalog on Ray"""

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
    bd = _add_build_parser(zsub)
    for action in (ls, vf, gcp, bd):  # --zoo after the action too; SUPPRESS keeps an earlier one
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


BUILD_HELP = """\
Fetch, convert, verify and publish every entry of CATALOG (a catalog.toml) into the zoo.
An entry already published from the same source digest by the same porter and library
versions is skipped, so an interrupted build resumes. With --ray each entry is one Ray task in
a worker process of its own (a crashing converter takes only its entry down); without it the
entries run here, one at a time. Exit 1 when any entry failed.

examples:
  porter zoo build model_zoo/catalog.toml                       # here, sequentially
  porter zoo build catalog.toml --ray auto --zoo s3://team/zoo  # on the running Ray cluster
  porter zoo build catalog.toml --only modnet_photographic --json
  porter zoo build catalog.toml --changed      # only entries whose source changed"""


def _add_build_parser(zsub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    bd = zsub.add_parser("build", help="convert, verify and publish a whole catalog (Ray)",
                         description=BUILD_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    bd.add_argument("catalog", metavar="CATALOG", help="catalog.toml to build")
    bd.add_argument("--ray", metavar="ADDRESS",
                    help="Ray cluster address, 'auto' (the running cluster) or 'local' "
                         "(start one here); omit to build in this process")
    bd.add_argument("--only", metavar="NAME", nargs="+", default=[],
                    help="build only these entries")
    bd.add_argument("--changed", action="store_true",
                    help="rebuild only entries whose source changed (ignore version changes)")
    bd.add_argument("--find-links", metavar="DIR",
                    help="take source wheels from this folder instead of the package index")
    bd.add_argument("--entries-per-worker", metavar="N", type=int, default=1,
                    help="entries one Ray worker process builds before it is replaced "
                         "(default 1: a fresh process each; 0: no limit, imports paid once)")
    bd.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    bd.set_defaults(run=run_build)
    return bd


def run_build(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from porter.cli.output import progress_printer
    from porter.zoo.build import build_catalog

    pip_args = ("--no-index", "--find-links", args.find_links) if args.find_links else ()
    # Ray's driver prints cluster events (a worker died …) on stdout; stdout is the summary's
    with contextlib.redirect_stdout(sys.stderr):
        results = build_catalog(args.catalog, zoo=args.zoo, ray=args.ray, only=args.only,
                                changed=args.changed, pip_args=pip_args,
                                entries_per_worker=args.entries_per_worker,
                                progress=progress_printer(not args.json))
    counts = {s: sum(r.status == s for r in results) for s in ("published", "skipped", "failed")}
    if args.json:
        emit_json({"catalog": args.catalog, "ray": args.ray, "counts": counts,
                   "entries": [r.to_dict() for r in results]})
    else:
        print(f"{'NAME':<28} {'STATUS':<10} {'PARITY':<10} {'AUDIT':<34} {'TIME':>7}  ERROR")
        for r in results:
            parity = f"{r.parity:.1e}" if isinstance(r.parity, float) else "-"
            print(f"{r.name:<28} {r.status:<10} {parity:<10} {r.audit or '-':<34} "
                  f"{r.time_s:6.1f}s  {r.error or ''}")
        print(", ".join(f"{n} {s}" for s, n in counts.items()))
    return 1 if counts["failed"] else 0
