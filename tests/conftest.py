"""Shared fixtures: small real TFRecord datasets and a runner for the real
entrypoint in a subprocess, as a caller would start it."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRYPOINT = os.path.join(ROOT, 'entrypoint.py')
sys.path.insert(0, ROOT)

# Tiny model settings for CPU tests: ResNet-18 at 128 px, small head.
TINY_FLAGS = [
    '--num_classes=3', '--resnet_depth=18', '--image_size=128,128',
    '--fpn_max_level=5', '--train_batch_size=2', '--warmup_steps=0',
    '--head_num_filters=32', '--head_num_convs=1', '--initial_learning_rate=0.01',
    '--log_every_steps=1',
]
_CALLER_VARIABLES = ('TF_CONFIG', 'CLUSTER_SPEC', 'CLOUD_ML_TRIAL_ID', 'CLOUD_ML_JOB_ID',
                     'AIP_MODEL_DIR', 'AIP_CHECKPOINT_DIR', 'AIP_TENSORBOARD_LOG_DIR',
                     'CLOUD_ML_HP_METRIC_FILE', 'TPU_NAME')


def job_env(metrics_file, **extra):
    env = {k: v for k, v in os.environ.items() if k not in _CALLER_VARIABLES}
    env['CLOUD_ML_HP_METRIC_FILE'] = str(metrics_file)
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_job(args, env, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen([sys.executable, ENTRYPOINT, *args], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def run_job(args, env, log_path, timeout=900):
    proc = start_job(args, env, log_path)
    code = proc.wait(timeout=timeout)
    with open(log_path) as f:
        return code, f.read()


@pytest.fixture(scope='session')
def shapes_data(tmp_path_factory):
    """32 training and 8 validation images of the bundled synthetic set."""
    from object_detection_algo import synthetic
    out = tmp_path_factory.mktemp('shapes')
    return synthetic.write_dataset(str(out), num_train=32, num_val=8, size=128, seed=7)


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
