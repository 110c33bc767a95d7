"""A quiet console for the command-line tools: TensorFlow's start-up lines are hidden.

Importing TensorFlow prints lines that read like failures on a machine that is fine (`All log
messages before absl::InitializeLog() is called are written to STDERR`, `oneDNN custom
operations are on`, `Could not find cuda drivers`, and at the first op `failed call to cuInit
... (303)` without a GPU). `TF_CPP_MIN_LOG_LEVEL=3` silences TensorFlow's C++ log once it has
started, but not the lines printed while its shared libraries load, before logging is set up:
those go straight to file descriptor 2, so the import runs with that descriptor pointed at
/dev/null. Python errors of the import itself still show: the exception is raised after the
descriptor is restored. `--verbose` leaves everything as TensorFlow has it.

Example (the top of a script):

```python
import sys
from keras_mtl.console import quiet_tensorflow
if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below load TensorFlow
from keras_mtl.training import run_training  # noqa: E402
```
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

VERBOSE_FLAG = "--verbose"
LOG_LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LOG_LEVEL = "3"  # errors too: a CPU-only machine logs cuInit's failure as an error


def add_verbose_flag(parser: argparse.ArgumentParser) -> None:
    """Adds `--verbose` (TensorFlow's start-up and C++ log lines shown) to `parser`."""
    parser.add_argument(
        VERBOSE_FLAG,
        action="store_true",
        help="show TensorFlow's start-up and C++ log lines (hidden by default)",
    )


def quiet_tensorflow(argv: Sequence[str] | None = None) -> bool:
    """Imports TensorFlow with its start-up lines hidden, unless `argv` holds `--verbose`.

    Call it first in a script, before anything imports TensorFlow; later it can only set the
    log level for what TensorFlow logs from then on.

    Args:
        argv: the command line (None: `sys.argv[1:]`).

    Returns:
        True when quieted, False with `--verbose`.

    Example:

    ```python
    quiet_tensorflow(["--epochs", "3"])  # True; `import tensorflow` printed nothing
    ```
    """
    argv = sys.argv[1:] if argv is None else argv
    if VERBOSE_FLAG in argv:
        return False
    os.environ.setdefault(LOG_LEVEL_VARIABLE, QUIET_LOG_LEVEL)
    if "tensorflow" in sys.modules:
        return True
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401  - its libraries print while loading, before logging exists
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
    return True
