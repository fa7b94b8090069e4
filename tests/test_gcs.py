"""gs:// end to end: the real entrypoint and TensorFlow's own gs:// filesystem
against fake-gcs-server behind a TLS proxy (tests/gcs_harness.py): outputs in
the bucket, resume from it after a kill, pre-flight errors, 503s and dropped
connections, a 403 that starts mid-job, and a kill in the middle of the
best-model replacement."""

import http.client
import json
import os
import subprocess
import sys
import threading
import time

import google.api_core.exceptions
import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT, TINY_FLAGS, data_flags, job_env, run_job, start_job
from object_detection_algo import io_utils
from object_detection_algo.data import synthetic
from object_detection_algo.training import best_model

RETRY_LINE = 'will be automatically retried'  # TensorFlow's retrying_utils


@pytest.fixture(autouse=True)
def no_faults_left(gcs):
    yield
    gcs.faults.reset()


@pytest.fixture(scope='module')
def gcs_data(gcs, shapes_data):
    """The shapes dataset of conftest in gs://data/shapes/."""
    gcs.bucket('data')
    gcs.upload_dir(os.path.dirname(shapes_data['train']), 'data', 'shapes')
    return {'train': 'gs://data/shapes/train-*', 'val': 'gs://data/shapes/val-*'}


def gcs_env(gcs, root, **extra):
    # Log level 0: TensorFlow logs its retries at INFO (the entrypoint turns on
    # TF_CPP_VMODULE=retrying_utils=1).
    return job_env(root / 'hp' / 'output.metrics', TF_CPP_MIN_LOG_LEVEL='0',
                   **gcs.env, **extra)


def read_json(gcs, bucket, name):
    return json.loads(gcs.client.bucket(bucket).blob(name).download_as_bytes())


def files(gcs, bucket, prefix):
    """{name relative to prefix: md5} of the objects under it, folder markers left out."""
    return {name[len(prefix):]: md5 for name, md5 in gcs.objects(bucket, prefix).items()
            if not name.endswith('/')}


def checkpoint_state(gcs, bucket, name):
    """The checkpoint state file's text ('' before the first one), as a restart reads it."""
    try:
        return gcs.client.bucket(bucket).blob(name).download_as_text()
    except google.api_core.exceptions.NotFound:
        return ''


def wait_for(condition, proc, log_path, timeout=600):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, open(log_path).read()[-3000:]
        assert time.time() < deadline, 'timed out'
        time.sleep(0.05)


def serve_one(model_dir, max_boxes):
    model = tf.saved_model.load(model_dir)
    image = synthetic.draw_image(np.random.RandomState(5), size=128)[0]
    out = model.signatures['serving_default'](
        encoded_image=tf.constant([synthetic.encode(image, 'jpeg')]), key=tf.constant(['k']))
    assert out['detection_boxes'].shape == (1, max_boxes, 4)
    assert list(out['key'].numpy()) == [b'k']


@pytest.fixture(scope='module')
def gs_job(gcs, gcs_data, tmp_path_factory):
    """One tiny job with its data and --job-dir on gs:// (the flags of test_job's main job)."""
    root = tmp_path_factory.mktemp('gs_job')
    gcs.bucket('job')
    args = data_flags(gcs_data) + TINY_FLAGS + [
        '--job-dir=gs://job/run', '--max_steps=4', '--train_steps_per_eval=2',
        '--max_num_bboxes_in_prediction=20']
    first_request = len(gcs.faults.requests)
    start = time.time()
    code, log = run_job(args, gcs_env(gcs, root), root / 'log.txt')
    seconds = time.time() - start
    assert code == 0, log[-3000:]
    print(f'\ngs:// tiny job: {seconds:.1f} s')
    return {'root': root, 'log': log, 'seconds': seconds,
            'requests': gcs.faults.requests[first_request:]}


def test_outputs_land_in_the_bucket(gs_job, gcs):
    names = set(gcs.objects('job', 'run/'))
    for name in ('checkpoints/checkpoint', 'checkpoints/ckpt-4.index', 'checkpoints/ckpt-2.index',
                 'checkpoints/evaluations.json', 'model/saved_model.pb', 'model/metrics.json',
                 'model/variables/variables.index'):
        assert f'run/{name}' in names, name
    assert any(n.startswith('run/checkpoints/train/events.out.tfevents.') for n in names)
    assert any(n.startswith('run/checkpoints/validation/events.out.tfevents.') for n in names)
    assert not [n for n in names if 'best_model_staging' in n or '.write_probe' in n]
    evaluations = read_json(gcs, 'job', 'run/checkpoints/evaluations.json')['evaluations']
    assert [e['step'] for e in evaluations] == [2, 4]
    best = read_json(gcs, 'job', 'run/model/metrics.json')
    assert best['metrics']['AP'] == max(e['metrics']['AP'] for e in evaluations)
    assert best['flags']['job-dir'] == 'gs://job/run'
    assert tf.train.latest_checkpoint('gs://job/run/checkpoints') == 'gs://job/run/checkpoints/ckpt-4'
    lines = [json.loads(x) for x in open(gs_job['root'] / 'hp' / 'output.metrics')]
    assert [x['global_step'] for x in lines] == ['2', '4']


def test_tensorflow_went_through_the_proxy_only(gs_job, gcs):
    """Reads went to storage.googleapis.com, the JSON API and uploads to
    www.googleapis.com, all over the proxy's TLS; nothing was refused."""
    hosts = {r.host for r in gs_job['requests']}
    assert {'storage.googleapis.com', 'www.googleapis.com'} <= hosts
    assert not [r for r in gs_job['requests'] if r.outcome == 'refused']
    assert RETRY_LINE not in gs_job['log']  # no faults, no retries


def test_model_serves_from_gs(gs_job):
    serve_one('gs://job/run/model', 20)


def test_predict_and_evaluate_read_the_model_from_gs(gs_job, gcs, gcs_data, tmp_path):
    env = gcs_env(gcs, tmp_path)
    image = synthetic.draw_image(np.random.RandomState(9), size=128)[0]
    gcs.client.bucket('data').blob('new/image.jpg').upload_from_string(synthetic.encode(image))
    common = [sys.executable, '-m', 'object_detection_algo']
    predicted = subprocess.run(
        common + ['predict', '--model_dir', 'gs://job/run/model', '--label_map',
                  'gs://data/shapes/label_map.csv', '--output', 'gs://job/predictions.jsonl',
                  '--draw_dir', 'gs://job/drawn', 'gs://data/new/image.jpg'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    [answer] = [json.loads(line) for line in gcs.client.bucket('job').blob(
        'predictions.jsonl').download_as_text().splitlines()]
    assert answer['key'] == 'gs://data/new/image.jpg'
    assert len(answer['detection_boxes']) == 20
    assert 'drawn/image.png' in set(gcs.objects('job', 'drawn/'))

    evaluated = subprocess.run(
        common + ['evaluate', '--model_dir', 'gs://job/run/model', '--data_path', gcs_data['val'],
                  '--output_dir', 'gs://job/evaluation'],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    report = read_json(gcs, 'job', 'evaluation/metrics.json')
    best = read_json(gcs, 'job', 'run/model/metrics.json')
    assert report['num_images'] == 8
    assert report['metrics']['AP'] == pytest.approx(best['metrics']['AP'], abs=0.005)
    assert {'evaluation/pr_curves.json', 'evaluation/pr_curves.png'} <= set(
        gcs.objects('job', 'evaluation/'))


def test_proxy_refuses_other_destinations(gcs):
    host, port = gcs.proxy_url.rsplit('/', 1)[1].split(':')
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request('CONNECT', 'oauth2.googleapis.com:443')
    assert conn.getresponse().status == 403
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request('GET', 'http://metadata.google.internal/computeMetadata/v1/')
    assert conn.getresponse().status == 403
    assert 'REFUSED CONNECT oauth2.googleapis.com:443' in open(gcs.proxy_log).read()


@pytest.mark.parametrize('case', ['missing input bucket', 'empty glob', 'missing output bucket',
                                  'unwritable output'])
def test_preflight_names_the_path_before_training(case, gcs, gcs_data, tmp_path):
    data = dict(gcs_data)
    gcs.bucket('preflight')
    job_dir = 'gs://preflight/run'
    if case == 'missing input bucket':
        data['train'] = 'gs://no-such-bucket/train-*'
        expected = ('--training_data_path=gs://no-such-bucket/train-*: the bucket '
                    'gs://no-such-bucket does not exist')
    elif case == 'empty glob':
        data['val'] = 'gs://data/shapes/nothing-*'
        expected = '--validation_data_path=gs://data/shapes/nothing-* matches no files'
    elif case == 'missing output bucket':
        job_dir = 'gs://no-such-output/run'
        expected = '--job-dir=gs://no-such-output/run: the bucket gs://no-such-output does not exist'
    else:
        gcs.bucket('locked')
        gcs.faults.denied_prefixes = ['locked/']
        job_dir = 'gs://locked/run'
        expected = ('--job-dir=gs://locked/run: permission denied writing to '
                    'gs://locked/run/checkpoints')
    start = time.time()
    code, log = run_job(data_flags(data) + TINY_FLAGS + [f'--job-dir={job_dir}', '--max_steps=2'],
                        gcs_env(gcs, tmp_path), tmp_path / 'log.txt', timeout=300)
    seconds = time.time() - start
    assert code == 3, log[-3000:]
    assert f'error: {expected}' in log, log[-3000:]
    assert 'step 1/2' not in log
    assert not [n for n in gcs.objects('preflight', 'run/') if 'ckpt' in n]
    if case != 'empty glob':  # stopped before the job was built
        assert 'Devices:' not in log
    # How soon is measured, not asserted (it includes importing TensorFlow).
    print(f'\n{case}: error after {seconds:.1f} s (TensorFlow import included)')


def test_kill_then_resume_from_the_bucket_under_faults(gcs, gcs_data, tmp_path):
    """Killed at step 2 or 3, resumed from gs:// while 3% of the requests fail
    with 503 or a dropped connection; TensorFlow's retries carry the job."""
    gcs.bucket('resume')
    args = data_flags(gcs_data) + TINY_FLAGS + [
        '--job-dir=gs://resume/run', '--max_steps=4', '--train_steps_per_eval=4',
        '--checkpoint_every_steps=1', '--num_eval_images=4']
    env = gcs_env(gcs, tmp_path)
    proc = start_job(args, env, tmp_path / 'first.txt')
    wait_for(lambda: 'ckpt-2"' in checkpoint_state(gcs, 'resume', 'run/checkpoints/checkpoint'),
             proc, tmp_path / 'first.txt')
    proc.kill()
    proc.wait()
    killed_at = int(tf.train.latest_checkpoint('gs://resume/run/checkpoints').rsplit('-', 1)[1])
    assert 2 <= killed_at < 4

    first_request = len(gcs.faults.requests)
    # About 1500 requests (restoring reads the checkpoint index in small ranges).
    gcs.faults.error_rate, gcs.faults.drop_rate = 0.02, 0.01
    # TF waits 1 s before its first retry, doubling; start at 0.1 s to keep the test short.
    code, log = run_job(args, dict(env, GCS_RETRY_CONFIG_INIT_DELAY_TIME_US='100000'),
                        tmp_path / 'second.txt')
    gcs.faults.reset()
    requests = gcs.faults.requests[first_request:]
    injected = [r for r in requests if r.outcome in ('503', 'dropped')]
    print(f'\nresumed run: {len(requests)} requests, {len(injected)} failed on purpose, '
          f'{log.count(RETRY_LINE)} retry lines in the log')
    assert code == 0, log[-3000:]
    assert f'Resuming from the checkpoint at step {killed_at}' in log
    assert len(injected) >= 5
    assert log.count(RETRY_LINE) >= len(injected) // 2, log[-3000:]
    assert 'HTTP response code 503' in log and 'caused by: UNAVAILABLE' in log
    assert tf.train.latest_checkpoint('gs://resume/run/checkpoints').endswith('ckpt-4')
    evaluations = read_json(gcs, 'resume', 'run/checkpoints/evaluations.json')['evaluations']
    assert [e['step'] for e in evaluations] == [4]
    assert read_json(gcs, 'resume', 'run/model/metrics.json')['step'] == 4
    serve_one('gs://resume/run/model', 100)


def test_output_bucket_turning_403_stops_the_job_without_a_model(gcs, gcs_data, tmp_path):
    """Write permission revoked after the first checkpoint: the job stops with
    a message naming the bucket path, and leaves no model."""
    gcs.bucket('revoked')
    args = data_flags(gcs_data) + TINY_FLAGS + [
        '--job-dir=gs://revoked/run', '--max_steps=4', '--train_steps_per_eval=2',
        '--checkpoint_every_steps=1', '--num_eval_images=4']
    proc = start_job(args, gcs_env(gcs, tmp_path), tmp_path / 'log.txt')
    wait_for(lambda: 'run/checkpoints/ckpt-1.index' in gcs.objects('revoked', 'run/'),
             proc, tmp_path / 'log.txt')
    gcs.faults.denied_prefixes = ['revoked/']
    code = proc.wait(timeout=600)
    gcs.faults.reset()
    log = open(tmp_path / 'log.txt').read()
    assert code == 3, log[-3000:]
    [line] = [x for x in log.splitlines() if x.startswith('error: ')]
    assert 'permission denied by the storage, stopping at step' in line
    assert 'gs://revoked/run/' in line and 'HTTP response code 403' in line
    assert not [n for n in gcs.objects('revoked', 'run/') if n.startswith('run/model')]
    assert RETRY_LINE not in log  # a 403 is final: no retries


class Reader:
    """Lists gs://swap/run/model/ over and over, as a serving system polling
    for a new model would, keeping each listing that holds saved_model.pb."""

    def __init__(self, gcs):
        self.seen, self._stop = [], threading.Event()
        self._thread = threading.Thread(target=self._poll, args=(gcs,), daemon=True)
        self._thread.start()

    def _poll(self, gcs):
        while not self._stop.is_set():
            listing = files(gcs, 'swap', 'run/model/')
            if 'saved_model.pb' in listing:
                self.seen.append(listing)
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.seen


def test_kill_in_the_middle_of_the_best_model_replacement(gs_job, gcs, gcs_data, tmp_path):
    """R/model holds an older best. The job's new best is held at its first
    variables upload into R/model and the job is killed there: readers find no
    model, never a mixed one; the restarted job completes the replacement."""
    gcs.bucket('swap')
    bucket = gcs.client.bucket('swap')
    for name in files(gcs, 'job', 'run/model/'):
        if name != 'metrics.json':
            gcs.client.bucket('job').copy_blob(
                gcs.client.bucket('job').blob(f'run/model/{name}'), bucket, f'run/model/{name}')
    older = read_json(gcs, 'job', 'run/model/metrics.json')
    older['metrics']['AP'] = -1.0  # an older best that any evaluation beats
    bucket.blob('run/model/metrics.json').upload_from_string(json.dumps(older))
    old_model = files(gcs, 'swap', 'run/model/')
    reader = Reader(gcs)

    args = data_flags(gcs_data) + TINY_FLAGS + [
        '--job-dir=gs://swap/run', '--max_steps=2', '--train_steps_per_eval=2',
        '--num_eval_images=4']
    env = gcs_env(gcs, tmp_path)
    gcs.faults.hold(r'uploadType=resumable&name=run/model/variables/')
    proc = start_job(args, env, tmp_path / 'first.txt')
    wait_for(gcs.faults.held.is_set, proc, tmp_path / 'first.txt')
    in_the_middle = files(gcs, 'swap', 'run/model/')
    with pytest.raises(OSError, match='SavedModel file does not exist'):
        tf.saved_model.load('gs://swap/run/model')
    proc.kill()
    proc.wait()
    gcs.faults.release()
    assert 'saved_model.pb' not in in_the_middle
    assert not any(name.startswith('variables/') for name in in_the_middle)
    new_model = files(gcs, 'swap', 'run/checkpoints/best_model_staging/')
    assert {'saved_model.pb', 'metrics.json', 'variables/variables.index'} <= set(new_model)

    code, log = run_job(args, env, tmp_path / 'second.txt')
    assert code == 0, log[-3000:]
    assert 'Completing the interrupted replacement of the best model in gs://swap/run/model' in log
    assert files(gcs, 'swap', 'run/model/') == new_model
    assert not gcs.objects('swap', 'run/checkpoints/best_model_staging/')
    assert read_json(gcs, 'swap', 'run/model/metrics.json')['step'] == 2
    serve_one('gs://swap/run/model', 100)
    time.sleep(0.2)
    seen = reader.stop()
    assert seen and seen[0] == old_model and seen[-1] == new_model
    assert all(listing in (old_model, new_model) for listing in seen)


def write_model_files(folder, tag, metrics):
    """Files shaped like a SavedModel export (content is what is checked here)."""
    for name in ('saved_model.pb', 'fingerprint.pb', 'variables/variables.index',
                 'variables/variables.data-00000-of-00001'):
        tf.io.gfile.makedirs(os.path.dirname(f'{folder}/{name}'))
        with tf.io.gfile.GFile(f'{folder}/{name}', 'w') as f:
            f.write(f'{tag} {name}')
    if metrics is not None:
        io_utils.write_json(f'{folder}/metrics.json', metrics)


def model_contents(folder):
    return {os.path.relpath(os.path.join(parent, name), folder):
            tf.io.gfile.GFile(os.path.join(parent, name)).read()
            for parent, _, names in tf.io.gfile.walk(folder) for name in names}


@pytest.mark.parametrize('where', ['local', 'gs'])
def test_recover_finishes_a_complete_staging_and_drops_an_unfinished_one(where, gcs, tmp_path):
    """BestModel.recover() after the three moments a job can die at."""
    if where == 'gs':
        gcs.bucket('recover')
        root = f'gs://recover/{tmp_path.name}'
    else:
        root = str(tmp_path)
    model, staging = f'{root}/model', f'{root}/checkpoints/best_model_staging'
    best = best_model.BestModel(model, f'{root}/checkpoints')

    # Died mid-swap: R/model half emptied, staging complete -> finished from staging.
    write_model_files(model, 'old', {'step': 1})
    write_model_files(staging, 'new', {'step': 2})
    new = model_contents(staging)
    tf.io.gfile.remove(f'{model}/saved_model.pb')
    tf.io.gfile.remove(f'{model}/variables/variables.index')
    best.recover()
    assert model_contents(model) == new and best.metrics() == {'step': 2}
    assert not tf.io.gfile.exists(staging)

    # Died while exporting (no metrics.json in staging): R/model untouched, staging dropped.
    write_model_files(staging, 'newer', None)
    best.recover()
    assert model_contents(model) == new and not tf.io.gfile.exists(staging)

    # Died after the last copy, before staging was deleted: nothing to redo.
    write_model_files(staging, 'new', {'step': 2})
    best.recover()
    assert model_contents(model) == new and not tf.io.gfile.exists(staging)
