"""Shared fixtures: small real TFRecord datasets, one tiny whole job, the GCS
emulator. The runner for the real entrypoint is tests/job_runner.py."""

import json
import os
import sys

import pytest

from job_runner import ENTRYPOINT, ROOT, TINY_FLAGS, job_env, run_job, start_job  # noqa: F401

sys.path.insert(0, ROOT)  # the package, as the entrypoint finds it


@pytest.fixture(scope='session')
def shapes_data(tmp_path_factory):
    """32 training and 8 validation images of the bundled synthetic set."""
    from object_detection_algo.data import synthetic
    out = tmp_path_factory.mktemp('shapes')
    return synthetic.write_dataset(str(out), num_train=32, num_val=8, size=128, seed=7)


def data_flags(data):
    return [f'--training_data_path={data["train"]}', f'--validation_data_path={data["val"]}']


@pytest.fixture(scope='session')
def main_job(shapes_data, tmp_path_factory):
    """One tiny whole job, shared by the tests of its outputs and of the
    commands that use its exported model."""
    root = tmp_path_factory.mktemp('main_job')
    metrics = root / 'hypertune' / 'output.metrics'
    args = data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={root / "out"}', '--max_steps=4', '--train_steps_per_eval=2',
        '--max_num_bboxes_in_prediction=20',
        # An untrained model scores ~0.01 everywhere: keep its boxes, so the
        # exported model returns detections and metrics are not all zero.
        '--nms_score_threshold=0']
    # As AI Platform starts a job that is not a tuning trial: TF_CONFIG without task.trial.
    cluster = {'master': ['127.0.0.1:2222']}
    env = job_env(metrics, CLUSTER_SPEC=json.dumps({'cluster': cluster}),
                  TF_CONFIG=json.dumps({'cluster': cluster, 'task': {'type': 'master', 'index': 0}}))
    code, log = run_job(args, env, root / 'log.txt')
    assert code == 0, log[-3000:]
    return {'root': root, 'out': root / 'out', 'metrics': metrics, 'log': log, 'args': args,
            'env': env}


@pytest.fixture(scope='session')
def gcs(tmp_path_factory):
    """fake-gcs-server behind the TLS proxy of tests/gcs_harness.py. Jobs get
    `gcs.env`; this process's TensorFlow and google-cloud-storage use it too.
    `gcs.bucket(name)` makes a bucket, `gcs.client` reads it without faults,
    `gcs.faults` injects 503s, drops, 403s and held requests."""
    from gcs_harness import GcsHarness
    harness = GcsHarness(str(tmp_path_factory.mktemp('gcs')))
    saved = {k: os.environ.get(k) for k in harness.env}
    os.environ.update(harness.env)
    yield harness
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    harness.close()
