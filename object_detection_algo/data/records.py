"""Finding and counting the TFRecord files of a data glob (local or gs://)."""

from typing import List

import tensorflow as tf

from object_detection_algo.errors import DataError


def match_files(pattern: str, flag_name: str) -> List[str]:
    """Files matching a glob (local or gs://), or a DataError naming the pattern."""
    try:
        files = sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        raise DataError(f'--{flag_name}={pattern}: cannot list files: {e.message}') from None
    folders = [f for f in files if tf.io.gfile.isdir(f)]
    files = [f for f in files if f not in folders]
    if not files and folders:
        raise DataError(
            f'--{flag_name}={pattern} names {"a folder" if len(folders) == 1 else "folders"} '
            f'({", ".join(folders[:3])}), not TFRecord files. Give a glob of the files, '
            f'e.g. --{flag_name}={folders[0].rstrip("/")}/*')
    if not files:
        raise DataError(
            f'--{flag_name}={pattern} matches no files. Check the path and the '
            'glob (* ? [..]); for gs:// check the bucket name and permissions.')
    return files


def count_records(files: List[str]) -> int:
    return int(tf.data.TFRecordDataset(files).reduce(tf.constant(0, tf.int64), lambda n, _: n + 1))
