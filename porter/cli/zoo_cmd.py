"""``porter zoo``: push, pull, list, verify and clean published models, on any backend."""

from __future__ import annotations

import argparse

from porter.cli.output import emit_json

HELP = """\
The zoo is $PORTER_ZOO if set, else zoo/ in porter's per-user cache ($PORTER_CACHE, else
$XDG_CACHE_HOME/porter, else ~/.cache/porter), whatever the current directory. It is a folder
or a URL such as s3://bucket/prefix (credentials and endpoint from the AWS environment
variables, e.g. AWS_ENDPOINT_URL, ~/.aws, or fsspec's configuration); --zoo names another
one (before or after ACTION). Entries are versioned: NAME means the latest, NAME@3 version 3.

examples:
  porter zoo push out/modnet --name modnet_photographic
  porter zoo list
  porter zoo list --zoo s3://team-models/zoo --json
  porter zoo pull modnet_photographic@2
  porter zoo verify                  # every version of every entry
  porter zoo gc                      # blobs no version references, after a grace period
  porter zoo build model_zoo/catalog.toml --ray auto --json   # whole catalog on Ray"""

_ZOO_HELP = "zoo folder or URL (default: $PORTER_ZOO, else ~/.cache/porter/zoo)"


def _sub(zsub: argparse._SubParsersAction, name: str, help: str, description: str
         ) -> argparse.ArgumentParser:
    return zsub.add_parser(name, help=help, description=description,
                           formatter_class=argparse.RawDescriptionHelpFormatter)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("zoo", help="push, pull, list, verify or clean published models",
                       description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--zoo", metavar="DIR|URL", help=_ZOO_HELP)
    zsub = p.add_subparsers(dest="zoo_command", metavar="ACTION", required=True)
    push = _sub(zsub, "push", "publish an output folder as the next version of an entry",
                "Publish a porter output folder (what `porter convert --out` wrote) as the next "
                "version of NAME.\n\nexamples:\n  porter zoo push out/modnet\n"
                "  porter zoo push out/modnet --name modnet_photographic --zoo s3://b/zoo")
    push.add_argument("out", metavar="OUT")
    push.add_argument("--name", help="entry name (default: the manifest's name)")
    push.add_argument("--json", action="store_true")
    push.set_defaults(run=run_push)
    pull = _sub(zsub, "pull", "fetch an entry into the local cache, checking every digest",
                "Fetch NAME (latest) or NAME@VERSION into the local cache (or --to DIR), "
                "checking every file's sha256; prints the folder.\n\nexamples:\n"
                "  porter zoo pull modnet_photographic\n  porter zoo pull modnet@2 --to ./m")
    pull.add_argument("ref", metavar="NAME[@VERSION]")
    pull.add_argument("--to", metavar="DIR", help="a folder of your own instead of the cache")
    pull.set_defaults(run=run_pull)
    ls = _sub(zsub, "list", "published entries with their versions, digests and parity",
              "List published entries (their latest versions).\n\nexamples:\n"
              "  porter zoo list\n  porter zoo list --all --json --zoo DIR")
    ls.add_argument("--all", action="store_true", help="every version, not only the latest")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(run=run_list)
    vf = _sub(zsub, "verify", "re-hash entries' blobs against their manifests",
              "Re-hash every blob of NAME[@VERSION] (default: every version of every entry); "
              "exit 1 if one was altered or is missing.\n\nexamples:\n"
              "  porter zoo verify modnet_photographic\n  porter zoo verify")
    vf.add_argument("refs", metavar="NAME[@VERSION]", nargs="*")
    vf.add_argument("--json", action="store_true")
    vf.set_defaults(run=run_verify)
    gcp = _sub(zsub, "gc", "remove blobs no version references and debris of killed publishes",
               "Remove blobs that no version references and temporary files of killed "
               "publishes, once older than --grace seconds (a publish in progress uploads its "
               "blobs before its manifest).\n\nexamples:\n  porter zoo gc\n"
               "  porter zoo gc --grace 0   # no publish is running")
    gcp.add_argument("--grace", type=float, default=None, metavar="SECONDS",
                     help="keep what is younger than this (default 3600)")
    gcp.set_defaults(run=run_gc)
    bd = _add_build_parser(zsub)
    for action in (push, pull, ls, vf, gcp, bd):  # --zoo after the action too; SUPPRESS keeps one
        action.add_argument("--zoo", metavar="DIR|URL", default=argparse.SUPPRESS,
                            help=_ZOO_HELP)


def run_push(args: argparse.Namespace) -> int:
    import porter

    entry = porter.publish(args.out, args.name, zoo=args.zoo)
    if args.json:
        emit_json({"name": entry.name, "version": entry.version, "ref": entry.ref,
                   "zoo": entry.zoo, "weights_sha256": entry.weights_sha256})
    else:
        print(f"published {entry.ref} in {entry.zoo} (weights sha256 {entry.weights_sha256})")
    return 0


def run_pull(args: argparse.Namespace) -> int:
    from porter.zoo.pull import pull

    print(pull(args.ref, args.zoo, args.to))
    return 0


def run_list(args: argparse.Namespace) -> int:
    from porter.zoo.load import zoo_root
    from porter.zoo.publish import list_entries

    entries = list_entries(args.zoo, all_versions=args.all)
    if args.json:
        emit_json(entries)
        return 0
    if not entries:
        print(f"no published models in {zoo_root(args.zoo)} "
              "(use `porter convert SRC --publish` or `porter zoo push OUT`)")
    for e in entries:
        if "error" in e:
            print(f"{e['name']:<24} BROKEN: {e['error']}")
            continue
        parity = e.get("parity_max_abs")
        parity = f"max|Δ| {parity:.1e}" if isinstance(parity, float) else "unverified"
        print(f"{e['ref']:<28} {str(e.get('graph')):<28} {parity:<16} "
              f"npu:{e.get('npu') or '-':<6} sha256 {str(e.get('weights_sha256'))[:16]}…")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from porter.errors import CHECK_FAILED
    from porter.zoo.publish import verify_all, verify_entry

    if len(args.refs) == 1 and not args.json:  # one entry: a failure is the one-line error
        info = verify_entry(args.refs[0], args.zoo)
        print(f"{info['ref']}: ok (sha256 {info['sha256']})")
        return 0
    results = []
    for ref in args.refs:
        try:
            results.append(verify_entry(ref, args.zoo))
        except CHECK_FAILED as exc:
            results.append({"ref": ref, "ok": False, "error": str(exc)})
    if not args.refs:
        results = verify_all(args.zoo)
    if args.json:
        emit_json(results)
    else:
        for r in results:
            print(f"{r['ref']}: ok (sha256 {r['sha256']})" if r["ok"]
                  else f"{r['ref']}: FAILED: {r['error']}")
    return 1 if any(not r["ok"] for r in results) else 0


def run_gc(args: argparse.Namespace) -> int:
    from porter.zoo.load import zoo_root
    from porter.zoo.publish import GRACE_S, gc

    cleared = gc(args.zoo, GRACE_S if args.grace is None else args.grace)
    print(f"{zoo_root(args.zoo)}: removed {len(cleared)} unreferenced blobs or leftover files"
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
    bd.add_argument("catalog", metavar="CATALOG", nargs="?",
                    help="catalog.toml to build (after --only NAME..., its last word)")
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
                    help="entries one process builds on Ray (default 1: each in a "
                         "process of its own, forked from the worker's warm forkserver; "
                         "N > 1 or 0 (no limit): N in turn in the Ray worker itself)")
    bd.add_argument("--json", action="store_true", help="the summary as JSON on stdout")
    bd.set_defaults(run=run_build)
    return bd


def _catalog_after_only(args: argparse.Namespace) -> None:
    """``--only a b catalog.toml``: argparse gives the catalog to --only; take it back. Entry
    names are bare identifiers, so a last word that ends in .toml or names a file is CATALOG."""
    from pathlib import Path

    from porter.errors import ZooError

    if args.catalog is not None:
        return
    if not (args.only and (args.only[-1].endswith(".toml") or Path(args.only[-1]).is_file())):
        raise ZooError("zoo build needs CATALOG (the catalog.toml to build), e.g. "
                       "`porter zoo build catalog.toml --only NAME`")
    args.catalog = args.only.pop()
    if not args.only:  # `--only catalog.toml`: building everything instead would surprise
        raise ZooError(f"--only needs at least one entry NAME before {args.catalog}")


def run_build(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    from porter.cli.output import progress_printer
    from porter.zoo.build import build_catalog

    _catalog_after_only(args)
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
