"""Export a trained model: `python export.py --checkpoint runs/x/model_best.keras --out DIR`.

See `python export.py --help` and docs/deployment.md.
"""

from keras_mtl.errors import run_cli
from keras_mtl.export import main

if __name__ == "__main__":
    run_cli(main)
