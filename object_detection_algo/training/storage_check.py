"""Checks of the job's storage paths before anything is built.

On gs:// a misspelt bucket or an output the job may not write would
otherwise show only after the model is built, or at the first checkpoint
minutes later. These checks take a few requests each.
"""

import os
import posixpath
import time
from typing import Optional

import tensorflow as tf

from object_detection_algo.errors import StorageError
from object_detection_algo.training.outputs import OutputDirs
from object_detection_algo.training.settings import Settings

WRITE_ADVICE = ('Give the account the job runs as permission to create and delete '
                'objects there (on GCS e.g. roles/storage.objectAdmin on the bucket).')


def bucket_of(path: str) -> Optional[str]:
    """'gs://bucket' of a gs:// path, None for a local one."""
    if not path.startswith('gs://'):
        return None
    return 'gs://' + path[len('gs://'):].split('/', 1)[0]


def check_bucket(path: str, what: str) -> None:
    """A StorageError if the gs:// bucket of `path` does not exist.

    A 403 on the bucket itself is let through: reading objects
    (roles/storage.objectViewer) does not need permission to see the bucket.
    """
    bucket = bucket_of(path)
    if bucket is None:
        return
    try:
        exists = tf.io.gfile.exists(bucket)
    except tf.errors.PermissionDeniedError:
        return
    if not exists:
        raise StorageError(f'{what}: the bucket {bucket} does not exist. Check its name '
                        'and the project it belongs to.')


def check_writable(folder: str, what: str) -> None:
    """Writes and deletes a small object in `folder`, or a StorageError naming it."""
    probe = posixpath.join(folder, f'.write_probe_{os.getpid()}_{int(time.time())}')
    try:
        tf.io.gfile.makedirs(folder)
        with tf.io.gfile.GFile(probe, 'w') as f:
            f.write('probe\n')
        tf.io.gfile.remove(probe)
    except tf.errors.PermissionDeniedError as e:
        raise StorageError(f'{what}: permission denied writing to {folder} '
                        f'({one_line(e.message)}). {WRITE_ADVICE}') from None
    except tf.errors.OpError as e:
        raise StorageError(f'{what}: cannot write to {folder}: {one_line(e.message)}') from None


def one_line(message: str) -> str:
    """TensorFlow's storage errors put the path on a second line."""
    return ' '.join(part.strip() for part in message.split('\n') if part.strip())


def check_paths(settings: Settings, dirs: OutputDirs) -> None:
    """Input buckets exist; every output folder takes a write. Globs are
    matched next by data.records.match_files, which names an empty one."""
    for flag in ('training_data_path', 'validation_data_path'):
        path = getattr(settings, flag)
        check_bucket(path, f'--{flag}={path}')
    root = settings.job_dir
    what = f'--job-dir={root}' if root else 'the output folder (AIP_* variables)'
    folders = dict.fromkeys([dirs.checkpoints, dirs.tensorboard, posixpath.dirname(dirs.model)])
    for folder in folders:
        check_bucket(folder, what)
        check_writable(folder, what)
