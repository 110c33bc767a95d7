"""User-facing errors: the exception, the CLI wrapper that prints it, and a parser that raises it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn


class UserError(Exception):
    """An error caused by the user's input (a flag, a file, a folder).

    The message must name the culprit (flag, file or folder) and say what to do.
    Command-line entry points print it as one line and exit with status 2.
    """


class FlagParser(argparse.ArgumentParser):
    """An `argparse.ArgumentParser` whose errors are `UserError`s: one line, exit status 2
    through `run_cli`, instead of argparse's usage block.

    Example:

    ```python
    parser = FlagParser(prog="train.py")
    parser.add_argument("--epochs", type=int)
    parser.parse_args(["--epochs", "x"])  # UserError: argument --epochs: invalid int value ...
    ```
    """

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{message} (see python {self.prog} --help)")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Runs a command-line `main`, turning `UserError` into one clean line and exit status 2.

    Args:
        main: the entry point; takes argv (None = sys.argv[1:]) and returns an exit status.
        argv: arguments to pass through.
    """
    try:
        status = main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(status or 0)
