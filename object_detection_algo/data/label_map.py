"""The label map beside a dataset: a CSV of `id,name` lines, ids 1..N.

Written by the converters and the synthetic set; read by predict and
evaluate to name classes. Local paths and gs:// alike."""

from typing import Dict, Sequence

from object_detection_algo import io_utils
from object_detection_algo.errors import DataError


class LabelMapError(DataError):
    pass


def write(path: str, names: Sequence[str]) -> None:
    """Writes names[0] as id 1, names[1] as id 2, ..."""
    io_utils.write_csv(path, [[i, name] for i, name in enumerate(names, 1)])


def read(path: str) -> Dict[int, str]:
    """{id: name}; a header line `id,name` is allowed."""
    if not io_utils.exists(path):
        raise LabelMapError(f'label map {path}: no such file.')
    names = {}
    for line, row in enumerate(io_utils.read_csv(path), 1):
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
