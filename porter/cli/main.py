"""Entry point: parse, dispatch to a command module, turn every error into one line."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence

from porter.errors import CHECK_FAILED, PorterError

COMMANDS = ("convert", "inspect", "verify", "fetch", "zoo", "completion")

DESCRIPTION = """\
porter brings third-party vision models (ONNX, TensorFlow 1.x, Paddle) onto PyTorch and Ascend
NPUs with weights you can trust: every source tensor accounted for, parity proven against the
source's own runtime, an NPU audit, and a content-addressed output.

examples:
  porter inspect modnet.onnx
  porter convert modnet.onnx --to torch --verify npu --out out/modnet
  porter convert model.onnx --to torch-source --out out/model     # readable model.py
  porter fetch modnet_photographic && porter convert modnet_photographic --publish
  porter zoo list
  porter zoo verify modnet_photographic
  eval "$(porter completion bash)"                               # shell completion

exit codes: 0 ok, 1 a check failed, 2 bad input or environment, 3 a bug in porter.

Errors print one line (set PORTER_DEBUG=1 for the traceback)."""


def build_parser() -> argparse.ArgumentParser:
    from porter import __version__

    parser = argparse.ArgumentParser(
        prog="porter", description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"porter {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let runtimes print their own warnings (sets PORTER_VERBOSE=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    import importlib

    for name in COMMANDS:
        importlib.import_module(f"porter.cli.{name}_cmd").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code: 0 ok, 1 a check failed, 2 bad input or environment,
    3 a bug in porter."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:  # an environment variable, so child runtimes see it too
        os.environ["PORTER_VERBOSE"] = "1"
    try:
        return int(args.run(args) or 0)
    except PorterError as exc:
        return _fail(exc, 1 if isinstance(exc, CHECK_FAILED) else 2)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        return 0
    except OSError as exc:  # disk full, read-only folder, permissions: the environment, not a bug
        where = f"{exc.filename}: " if exc.filename else ""
        return _fail(RuntimeError(f"{where}{exc.strerror or exc}"), 2)
    except KeyboardInterrupt:
        print("porter: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # never a raw traceback for a user
        return _fail(exc, 3, prefix="internal error: ")


def _fail(exc: BaseException, code: int, prefix: str = "") -> int:
    if os.environ.get("PORTER_DEBUG"):
        traceback.print_exc()
    message = " ".join(str(exc).split()) or type(exc).__name__
    if prefix:
        message = f"{prefix}{type(exc).__name__}: {message} (PORTER_DEBUG=1 for details)"
    print(f"porter: error: {message}", file=sys.stderr)
    return code


def entry() -> None:
    """Console-script entry: run, flush, and leave without interpreter teardown.

    Every file porter writes is closed and renamed into place, and every child runtime is
    closed, before ``main`` returns; what remains is tearing down torch's module state, which
    costs about 0.35 s of wall time on a small machine and does nothing for the user.
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # reader went away; nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    entry()
