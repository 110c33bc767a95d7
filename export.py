"""Export a trained model: `python export.py --checkpoint runs/x/model_best.keras --out DIR`.

The work is `keras_mtl.export`; see `python export.py --help` and docs/deployment.md.
"""

import sys

from keras_mtl.console import quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below load TensorFlow

from keras_mtl.errors import run_cli  # noqa: E402
from keras_mtl.export import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
