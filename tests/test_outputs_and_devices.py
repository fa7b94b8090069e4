"""Where outputs go for each caller, and which devices are chosen (pure logic)."""

import json

import pytest

from object_detection_algo.errors import UsageError
from object_detection_algo.training import devices, outputs


@pytest.mark.parametrize('job_dir, env, checkpoints, model, tensorboard, trial', [
    ('gs://b/run', {}, 'gs://b/run/checkpoints', 'gs://b/run/model',
     'gs://b/run/checkpoints', None),
    ('gs://b/run/', {'TF_CONFIG': json.dumps({'task': {'type': 'master', 'trial': '3'}})},
     'gs://b/run/checkpoints/trial_3', 'gs://b/run/model/trial_3',
     'gs://b/run/checkpoints/trial_3', '3'),
    ('/out', {'CLOUD_ML_TRIAL_ID': '7'}, '/out/checkpoints/trial_7', '/out/model/trial_7',
     '/out/checkpoints/trial_7', '7'),
    ('/out', {'TF_CONFIG': json.dumps({'task': {'type': 'master'}})}, '/out/checkpoints',
     '/out/model', '/out/checkpoints', None),
    (None, {'AIP_MODEL_DIR': 'gs://b/o/4/model/', 'AIP_CHECKPOINT_DIR': 'gs://b/o/4/checkpoints/',
            'AIP_TENSORBOARD_LOG_DIR': 'gs://b/o/4/logs/', 'CLOUD_ML_TRIAL_ID': '4'},
     'gs://b/o/4/checkpoints', 'gs://b/o/4/model', 'gs://b/o/4/logs', '4'),
    (None, {'AIP_MODEL_DIR': 'gs://b/o/model/'}, 'gs://b/o/checkpoints', 'gs://b/o/model',
     'gs://b/o/checkpoints', None),
])
def test_output_dirs(job_dir, env, checkpoints, model, tensorboard, trial):
    dirs = outputs.resolve(job_dir, env)
    assert (dirs.checkpoints, dirs.model, dirs.tensorboard, dirs.trial) == (
        checkpoints, model, tensorboard, trial)


def test_tf_config_trial_wins_over_vertex_variable():
    env = {'TF_CONFIG': json.dumps({'task': {'trial': 2}}), 'CLOUD_ML_TRIAL_ID': '9'}
    assert outputs.trial_id(env) == '2'


def test_hypertune_file_from_the_environment_or_hypertunes_default():
    assert outputs.resolve('/out', {}).metrics_file == '/tmp/hypertune/output.metrics'
    assert outputs.resolve('/out', {'CLOUD_ML_HP_METRIC_FILE': 'm/x.metrics'}).metrics_file == (
        'm/x.metrics')


def test_no_output_root():
    with pytest.raises(UsageError, match='--job-dir is required'):
        outputs.resolve(None, {})


@pytest.mark.parametrize('env, gpus, kind, address', [
    ({}, 0, 'cpu', None),
    ({}, 1, 'gpu', None),
    ({}, 4, 'gpu', None),
    ({'TPU_NAME': 'my-tpu'}, 0, 'tpu', 'my-tpu'),
    ({'KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS': 'grpc://10.0.0.2:8470'}, 1, 'tpu', 'grpc://10.0.0.2:8470'),
    ({'TF_CONFIG': json.dumps({'cluster': {'master': ['m:2222'], 'tpu_worker': ['10.1.1.1:8470']}})},
     1, 'tpu', 'grpc://10.1.1.1:8470'),
    ({'TF_CONFIG': json.dumps({'cluster': {'master': ['m:2222']}})}, 0, 'cpu', None),
    ({'TF_CONFIG': 'not json'}, 0, 'cpu', None),
])
def test_device_choice(env, gpus, kind, address):
    choice = devices.choose(env, gpus)
    assert (choice.kind, choice.tpu_address) == (kind, address)
    assert choice.reason
