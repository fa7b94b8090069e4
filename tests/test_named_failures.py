"""Failures that used to end in a traceback, a silent run or minutes of
retries: each is one line naming the thing, with the right exit status, in
seconds, and nothing written before is changed. (The restart checks are in
test_restarts.py; flag and TF_CONFIG messages in test_flags.py.)"""

import socket
import time

import numpy as np
import tensorflow as tf

from conftest import TINY_FLAGS, job_env, run_job
from object_detection_algo.data import synthetic


def _job(tmp_path, train, val, env=None, job_dir=None, extra=()):
    args = [f'--training_data_path={train}', f'--validation_data_path={val}',
            f'--job-dir={job_dir or tmp_path / "out"}', *TINY_FLAGS, '--max_steps=2', *extra]
    start = time.time()
    code, log = run_job(args, env or job_env(tmp_path / 'hp' / 'output.metrics'),
                        tmp_path / 'log.txt')
    return code, log, time.time() - start


def _validate(train, *args):
    import subprocess
    import sys
    from conftest import ROOT
    return subprocess.run([sys.executable, '-m', 'object_detection_algo', 'validate',
                           f'--data_path={train}', '--num_classes=3', *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_a_zero_byte_training_file_is_an_error_in_the_job_and_in_validate(shapes_data,
                                                                           tmp_path):
    empty = tmp_path / 'train-0.tfrecord'
    empty.write_bytes(b'')
    code, log, seconds = _job(tmp_path, empty, shapes_data['val'])
    print(f'0-byte file: exit {code} in {seconds:.1f} s')
    assert code == 3, log[-3000:]
    assert f'{empty}: the 1 file(s) read hold no records (0-byte or empty TFRecord files)' in log
    assert 'OutOfRangeError' not in log and 'No training was done.' in log
    checked = _validate(empty)
    assert checked.returncode == 1 and 'no_records' in checked.stdout, checked.stdout


def test_a_training_set_without_boxes_is_refused(shapes_data, tmp_path):
    rng = np.random.RandomState(5)
    path = tmp_path / 'train-0.tfrecord'
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(3):
            image = synthetic.draw_image(rng, 128)[0]
            writer.write(synthetic.make_example(synthetic.encode(image), [], [], 128, 128,
                                                source_id=str(i + 1)).SerializeToString())
    code, log, seconds = _job(tmp_path, path, shapes_data['val'])
    print(f'no boxes: exit {code} in {seconds:.1f} s')
    assert code == 3, log[-3000:]
    assert 'none of the 3 records read holds a box' in log


def test_many_boxes_and_tiny_images_are_warned_by_validate(tmp_path):
    from PIL import Image
    path = tmp_path / 'data-0.tfrecord'
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(synthetic.make_example(synthetic.encode(Image.new('RGB', (1, 1))),
                                            [(0, 0, 1, 1)], [1], 1, 1, source_id='1'
                                            ).SerializeToString())
        many = [(10 + i % 5, 10, 60, 90) for i in range(30)]
        writer.write(synthetic.make_example(synthetic.encode(Image.new('RGB', (128, 128))),
                                            many, [2] * 30, 128, 128, source_id='2'
                                            ).SerializeToString())
    checked = _validate(path, '--max_num_bboxes_in_training=20', '--image_size=128')
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "record 0 (source_id '1'): the image is 1x1 px" in checked.stdout
    assert ("record 1 (source_id '2'): 30 boxes; training keeps the first 20 "
            "(--max_num_bboxes_in_training=20)") in checked.stdout


def test_a_folder_as_data_path_says_so(shapes_data, tmp_path):
    folder = tmp_path / 'data'
    folder.mkdir()
    code, log, _ = _job(tmp_path, folder, shapes_data['val'])
    assert code == 3, log[-3000:]
    assert (f'--training_data_path={folder} names a folder ({folder}), not TFRecord files. '
            f'Give a glob of the files, e.g. --training_data_path={folder}/*') in log


def test_a_metrics_file_that_cannot_be_written_stops_the_job_at_once(shapes_data, tmp_path):
    blocker = tmp_path / 'not_a_folder'
    blocker.write_text('a file where a folder should be\n')
    metrics = blocker / 'hypertune' / 'output.metrics'
    code, log, seconds = _job(tmp_path, shapes_data['train'], shapes_data['val'],
                              env=job_env(metrics))
    print(f'metrics file: exit {code} in {seconds:.1f} s')
    assert code == 3, log[-3000:]
    assert f'error: CLOUD_ML_HP_METRIC_FILE={metrics}: cannot write the tuning metrics file' in log
    assert 'Devices:' not in log and not (tmp_path / 'out' / 'model').exists()


def test_storage_that_never_answers_fails_within_seconds(shapes_data, tmp_path):
    with socket.socket() as s:  # a port nothing listens on: every connection is refused
        s.bind(('127.0.0.1', 0))
        dead = s.getsockname()[1]
    # Both spellings: curl reads the lower-case one first, and the gs:// tests' emulator may
    # have set them in this process.
    env = job_env(tmp_path / 'hp' / 'output.metrics', HTTPS_PROXY=f'http://127.0.0.1:{dead}',
                  https_proxy=f'http://127.0.0.1:{dead}', GOOGLE_AUTH_TOKEN_FOR_TESTING='token',
                  NO_GCE_CHECK='true')
    code, log, seconds = _job(tmp_path, shapes_data['train'], shapes_data['val'], env=env,
                              job_dir='gs://unreachable/run')
    print(f'unreachable storage: exit {code} in {seconds:.1f} s')
    assert code == 3, log[-3000:]
    assert ('error: --job-dir=gs://unreachable/run: no answer from the storage for '
            'gs://unreachable/run/checkpoints within 20 s') in log
    assert 'AbortedError' not in log and 'Traceback' not in log
