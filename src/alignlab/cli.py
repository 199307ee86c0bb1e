"""`alignlab` command line: one subcommand group per subsystem.

Each group lives in ``alignlab/<group>/cli.py`` and exposes ``register(subparsers)``; it must import
only argparse-level things at module import time so that ``alignlab --help`` stays fast. Heavy imports
(torch, transformers) happen inside the command functions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from alignlab import __version__
from alignlab.errors import AlignlabError

# (group name, module holding its register function). Order = order in --help.
GROUPS: tuple[tuple[str, str], ...] = (
    ("models", "alignlab.models.cli"),
    ("data", "alignlab.data.cli"),
    ("refusal", "alignlab.refusal.cli"),
    ("organism", "alignlab.organisms.cli"),
    ("sae", "alignlab.sae.cli"),
    ("superposition", "alignlab.superposition.cli"),
    ("forecast", "alignlab.forecast.cli"),
    ("exfil", "alignlab.exfil.cli"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="alignlab",
        description="Alignment research you can run: refusal directions, SAEs, superposition, forecasts, "
        "upload limits.",
    )
    parser.add_argument("--version", action="version", version=f"alignlab {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="group", metavar="GROUP")
    for _name, module_name in GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # the group is not built yet in this checkout
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # A group without a command prints its own help.
        target = getattr(args, "group_parser", None) or parser
        target.print_help()
        return 0 if args.group is None else 2
    debug = args.debug or os.environ.get("ALIGNLAB_DEBUG") == "1"
    try:
        result = args.func(args)
    except AlignlabError as exc:
        if debug:
            raise
        print(f"alignlab: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:
        # Last line of defence for file-system errors that escaped a command's own checks (a path under a
        # regular file, a read-only directory, a full disk): one line naming the path, not a traceback.
        if debug or exc.filename is None:
            raise
        print(f"alignlab: error: {exc.strerror or type(exc).__name__}: {exc.filename} "
              "(check the path and its permissions; --debug shows the traceback)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignlab: interrupted (completed stages are kept; run again to resume)", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
