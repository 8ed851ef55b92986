"""The ``diffaccel`` command: look at the histories, move them between a folder and a store, merge shards.

    diffaccel history PATH_OR_URL [-k EXPR] [--chart FILE]   the histories as a table, and as charts
    diffaccel move SOURCE DESTINATION                          a folder's histories into a store, or back
    diffaccel compact URL                                      a store's histories, one snapshot object each
    diffaccel merge SHARD.json ... [-o all.json] [--html ...]  the shards of one matrix as one run's report

Each subcommand lives in its own module; this one only dispatches (argparse, standard library).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diffaccel", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    from . import history_command, merge, transfer

    history_command.add_arguments(
        commands.add_parser("history", help=history_command.HELP, description=history_command.HELP)
    )
    transfer.add_arguments(commands.add_parser("move", help=transfer.HELP, description=transfer.HELP))
    transfer.add_compact_arguments(
        commands.add_parser("compact", help=transfer.COMPACT_HELP, description=transfer.COMPACT_HELP)
    )
    merge.add_arguments(commands.add_parser("merge", help=merge.HELP, description=merge.HELP))
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
