"""Checks of the job's storage paths before anything is built.

On gs:// a misspelt bucket or an output the job may not write would
otherwise show only after the model is built, or at the first checkpoint
minutes later. These checks take a few requests each. Storage that does not
answer at all (no route, DNS, a dead proxy) would keep TensorFlow's retries
going for minutes: each gs:// check has a deadline of its own. The tuning
metrics file is checked too, since hypertune first writes it after the first
evaluation.
"""

import os
import posixpath
import threading
import time
from typing import Callable, Optional

import tensorflow as tf

from object_detection_algo.errors import StorageError
from object_detection_algo.training.outputs import OutputDirs
from object_detection_algo.training.settings import Settings

# Seconds a gs:// check may take. A working connection answers within one; TensorFlow
# retries an unanswered request for minutes (1 s, 2 s, 4 s, ... up to 10 times).
PROBE_DEADLINE_SECONDS = 20

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


def within_deadline(check: Callable[[], None], path: str, what: str,
                    seconds: float = PROBE_DEADLINE_SECONDS) -> None:
    """Runs a gs:// check; a StorageError if the storage gives no answer in time.
    The check's thread is left behind (TensorFlow's calls cannot be cancelled);
    the job stops right after."""
    if not path.startswith('gs://'):
        return check()
    outcome = {}

    def run():
        try:
            check()
        except BaseException as e:  # handed to the caller's thread
            outcome['error'] = e
    thread = threading.Thread(target=run, daemon=True, name='storage-probe')
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise StorageError(
            f'{what}: no answer from the storage for {path} within {seconds:.0f} s (TensorFlow '
            'is still retrying). Check the network, DNS and any proxy (HTTPS_PROXY) between '
            'the job and Cloud Storage.')
    if 'error' in outcome:
        raise outcome['error']


def check_metrics_file(path: str) -> None:
    """The folder of the hypertune file exists or can be made, and the file takes a write."""
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(path, 'a'):
            pass
    except OSError as e:
        raise StorageError(
            f'CLOUD_ML_HP_METRIC_FILE={path}: cannot write the tuning metrics file there '
            f'({e.strerror or e}). Point the variable to a file in a writable folder, or '
            'unset it.') from None


def check_paths(settings: Settings, dirs: OutputDirs) -> None:
    """Input buckets exist; every output folder takes a write. Globs are
    matched next by data.records.match_files, which names an empty one."""
    for flag in ('training_data_path', 'validation_data_path'):
        path = getattr(settings, flag)
        within_deadline(lambda: check_bucket(path, f'--{flag}={path}'), path, f'--{flag}={path}')
    root = settings.job_dir
    what = f'--job-dir={root}' if root else 'the output folder (AIP_* variables)'
    folders = dict.fromkeys([dirs.checkpoints, dirs.tensorboard, posixpath.dirname(dirs.model)])
    for folder in folders:
        within_deadline(lambda: (check_bucket(folder, what), check_writable(folder, what)),
                        folder, what)
    check_metrics_file(dirs.metrics_file)
