"""Reading and writing small files (JSON, CSV, text) on local disk and gs://
alike, through TensorFlow's file system. Nothing here imports Model Garden or
the serving code; TensorFlow itself is imported on first use."""

import csv
import io
import json
from typing import Any, Dict, List, Optional, Sequence


def _gfile():
    import tensorflow as tf
    return tf.io.gfile


def _plain(value: Any) -> Any:
    """Tuples (as flag values hold) to lists, for stable JSON."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def exists(path: str) -> bool:
    return _gfile().exists(path)


def write_text(path: str, text: str) -> None:
    with _gfile().GFile(path, 'w') as f:
        f.write(text)


def read_text(path: str) -> str:
    with _gfile().GFile(path) as f:
        return f.read()


def write_json(path: str, content: Dict[str, Any]) -> None:
    write_text(path, json.dumps(_plain(content), indent=2, sort_keys=True) + '\n')


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """The parsed file, or None when it does not exist."""
    if not exists(path):
        return None
    return json.loads(read_text(path))


def write_csv(path: str, rows: Sequence[Sequence[Any]]) -> None:
    out = io.StringIO()
    csv.writer(out, lineterminator='\n').writerows(rows)
    write_text(path, out.getvalue())


def read_csv(path: str) -> List[List[str]]:
    return list(csv.reader(io.StringIO(read_text(path))))


def makedirs(path: str) -> None:
    _gfile().makedirs(path)
