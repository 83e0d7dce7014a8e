"""The ``dac`` command. Thin: parses arguments and calls the package.

Each area adds its own subcommand from a small module (``dac.<area>.commands``) exposing
``add_parser(subparsers)``; a subcommand's handler returns an exit code. Expected failures
(bad arguments, missing models, impossible inputs) are one ``dac: error: ...`` line and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

#: Modules that contribute subcommands, in help order.
COMMAND_MODULES = (
    "dac.commands",
    "dac.demo",
    "dac.eval.commands",
    "dac.eval.judge_commands",
    "dac.catalog.commands",
    "dac.train.commands",
    "dac.serve.commands",
)


class CLIError(Exception):
    """An expected failure: printed as one line, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dac", description="Dynamic Attention Control: the model declares where it "
        "attends; decoding reads only that.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # that area is not part of this installation
            raise
        mod.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("dac: interrupted", file=sys.stderr)
        return 130
    except (CLIError, ValueError, FileNotFoundError, RuntimeError) as e:
        return _fail(e)
    except MemoryError:
        return _fail(MemoryError("out of memory: try a shorter context, a smaller batch, or "
                                 "another device"))
    except ImportError as e:  # an optional dependency this command needs
        name = getattr(e, "name", None) or str(e)
        return _fail(ImportError(f"missing optional dependency {name!r}: install the extra "
                                 "that provides it (e.g. pip install 'dac[vllm]' or "
                                 "'dac[serve]')"))


def _fail(e: BaseException) -> int:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    print(f"dac: error: {msg}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
