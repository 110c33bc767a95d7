"""history.csv: one row per epoch; read, append, truncate (resume), summarize.

Every write is atomic (`keras_mtl.io`), so a run killed at any point leaves a whole file.

Example:

```python
rows = read_history_rows("runs/a/history.csv")
summary = summarize_history("runs/a/history.csv", "motion_miou")  # {"final", "best", "epochs"}
```
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from keras_mtl.io import write_text_atomic
from keras_mtl.tasks import metric_higher_is_better

HISTORY_NAME = "history.csv"


def read_history_rows(path: str | os.PathLike) -> list[dict]:
    """Rows of a history.csv as dicts (empty list when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="") as stream:
        return list(csv.DictReader(stream))


def _write_rows(path: Path, header: Sequence[str], rows: Sequence[Mapping]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in header})
    write_text_atomic(path, buffer.getvalue())


def append_history_row(
    path: str | os.PathLike, epoch: int, logs: Mapping[str, float], header: Sequence[str]
) -> None:
    """Writes the row of `epoch` (1-based) after the rows of the epochs before it.

    Rows of `epoch` or later (left by a run killed between its history row and its checkpoint)
    are replaced, so the file always ends with this epoch.

    Args:
        path: the history.csv.
        epoch: 1-based epoch number of the row.
        logs: the epoch's logs (values convertible to float).
        header: the columns, in order (`epoch` first); other keys of `logs` are not written.
    """
    rows = [row for row in read_history_rows(path) if int(row["epoch"]) < epoch]
    rows.append({"epoch": epoch, **{k: float(v) for k, v in logs.items()}})
    _write_rows(Path(path), header, rows)


def truncate_history(path: str | os.PathLike, epochs_done: int) -> None:
    """Keeps the rows of history.csv with epoch <= `epochs_done` (resume)."""
    path = Path(path)
    if not path.exists():
        return
    with path.open(newline="") as stream:
        reader = csv.DictReader(stream)
        header = reader.fieldnames or []
        rows = [row for row in reader if int(row["epoch"]) <= epochs_done]
    _write_rows(path, header, rows)


def summarize_history(path: str | os.PathLike, pivot_metric: str) -> dict:
    """Final and best (by `val_<pivot_metric>`) validation metrics from history.csv.

    Returns:
        `{"final": {metric: value}, "best": {"epoch": n, metric: value}, "epochs": n}`
        (metric names without `val_`).
    """
    rows = read_history_rows(path)
    if not rows:
        return {"final": {}, "best": {}, "epochs": 0}

    def metrics_of(row):
        return {k[len("val_") :]: float(v) for k, v in row.items() if k.startswith("val_") and v}

    key = f"val_{pivot_metric}"
    candidates = [r for r in rows if r.get(key) not in (None, "")]
    best_row = rows[-1]
    if candidates:
        pick = max if metric_higher_is_better(pivot_metric) else min
        best_row = pick(candidates, key=lambda r: float(r[key]))
    return {
        "final": metrics_of(rows[-1]),
        "best": {"epoch": int(best_row["epoch"]), **metrics_of(best_row)},
        "epochs": int(rows[-1]["epoch"]),
    }
