"""The label map beside a dataset: a CSV of `id,name` lines, ids 1..N.

Written by the converters and the synthetic set; read by predict and
evaluate to name classes. Local paths and gs:// alike (tf.io.gfile)."""

import csv
import io
from typing import Dict, Sequence


class LabelMapError(ValueError):
    pass


def write(path: str, names: Sequence[str]) -> None:
    """Writes names[0] as id 1, names[1] as id 2, ..."""
    import tensorflow as tf
    out = io.StringIO()
    writer = csv.writer(out, lineterminator='\n')
    for i, name in enumerate(names, 1):
        writer.writerow([i, name])
    with tf.io.gfile.GFile(path, 'w') as f:
        f.write(out.getvalue())


def read(path: str) -> Dict[int, str]:
    """{id: name}; a header line `id,name` is allowed."""
    import tensorflow as tf
    if not tf.io.gfile.exists(path):
        raise LabelMapError(f'label map {path}: no such file.')
    with tf.io.gfile.GFile(path) as f:
        rows = list(csv.reader(f))
    names = {}
    for line, row in enumerate(rows, 1):
        if not row or (line == 1 and row[0].strip().lower() == 'id'):
            continue
        if len(row) != 2 or not row[0].strip().isdigit():
            raise LabelMapError(f'label map {path}, line {line}: expected "id,name", '
                                f'got {",".join(row)!r}.')
        class_id = int(row[0])
        if class_id < 1 or class_id in names:
            raise LabelMapError(f'label map {path}, line {line}: id {class_id} is '
                                f'{"repeated" if class_id in names else "below 1"}; '
                                'ids run 1..num_classes, once each.')
        names[class_id] = row[1].strip()
    return names
