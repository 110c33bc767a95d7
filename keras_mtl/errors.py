"""User-facing errors: the exception, the CLI wrapper that prints it, and a parser that raises it.

Errors found inside a TensorFlow input pipeline (a PNG that does not decode, 19-class labels
in a 5-class file) cannot be raised as `UserError`s there: the pipeline wraps their one-line
report in `BAD_INPUT_OPEN` / `BAD_INPUT_CLOSE`, TensorFlow carries it inside its own error
(e.g. an `InvalidArgumentError` out of `fit`), and `bad_input_report` reads it back, so that
`run_cli` prints that line instead of a traceback. TensorFlow-free.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from typing import NoReturn

# Delimiters of a bad-input report inside a TensorFlow error message (never in file names).
BAD_INPUT_OPEN = "<<keras-mtl bad input: "
BAD_INPUT_CLOSE = " :keras-mtl bad input>>"
_BAD_INPUT = re.compile(re.escape(BAD_INPUT_OPEN) + "(.*?)" + re.escape(BAD_INPUT_CLOSE), re.S)


class UserError(Exception):
    """An error caused by the user's input (a flag, a file, a folder).

    The message must name the culprit (flag, file or folder) and say what to do.
    Command-line entry points print it as one line and exit with status 2.
    """


def bad_input_text(report: str) -> str:
    """`report` (one line) wrapped so that `bad_input_report` finds it in any error message.

    Example:

    ```python
    tf.debugging.Assert(ok, [bad_input_text("leftImg8bit/train/a/x.png: corrupt PNG")])
    ```
    """
    return f"{BAD_INPUT_OPEN}{report}{BAD_INPUT_CLOSE}"


def bad_input_report(error: BaseException) -> str | None:
    """The bad-input report an error carries (see `bad_input_text`), or None.

    Args:
        error: any exception, typically a `tf.errors.OpError` raised by a dataset.

    Example:

    ```python
    try:
        next(iter(dataset))
    except tf.errors.InvalidArgumentError as error:
        print(bad_input_report(error))  # "--data_path data: leftImg8bit/...png: corrupt PNG ..."
    ```
    """
    match = _BAD_INPUT.search(str(error))
    return match.group(1).strip() if match else None


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

    An error that carries a bad-input report (`bad_input_report`, e.g. a corrupt PNG met by
    the input pipeline of evaluate.py or export.py's calibration) is printed the same way.

    Args:
        main: the entry point; takes argv (None = sys.argv[1:]) and returns an exit status.
        argv: arguments to pass through.

    Example:

    ```python
    if __name__ == "__main__":
        run_cli(main, sys.argv[1:])
    ```
    """
    try:
        status = main(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as error:
        report = bad_input_report(error)
        if report is None:
            raise
        print(f"error: {report}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status or 0)
