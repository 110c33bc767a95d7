"""Predictions on your own footage: `python predict.py --checkpoint runs/x/model_best.keras
--video in.mp4 --out out.mp4` (or `--images DIR`, `--model exported/saved_model` or a `.tflite`,
`--out_dir DIR` for PNGs).

See `python predict.py --help` and `keras_mtl/prediction.py`.
"""

from keras_mtl.errors import run_cli
from keras_mtl.prediction import main

if __name__ == "__main__":
    run_cli(main)
