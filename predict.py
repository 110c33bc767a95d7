"""Predictions on your own footage: `python predict.py --checkpoint runs/x/model_best.keras
--video in.mp4 --out out.mp4` (or `--images DIR`, `--model exported/saved_model` or a `.tflite`,
`--out_dir DIR` for PNGs).

See `python predict.py --help` and `keras_mtl/prediction.py`.
"""

import sys

from keras_mtl.console import quiet_tensorflow

if __name__ == "__main__":
    quiet_tensorflow(sys.argv[1:])  # first: the imports below may load TensorFlow

from keras_mtl.errors import run_cli  # noqa: E402
from keras_mtl.prediction import main  # noqa: E402

if __name__ == "__main__":
    run_cli(main, sys.argv[1:])
