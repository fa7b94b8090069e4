"""--init_checkpoint and --init_checkpoint_modules: the weights a new job starts
from. Checkpoints are real: a stand-in for the published ImageNet ResNet made by
Model Garden's own classifier trainer (tests/imagenet_stand_in.py), and the
checkpoint folder of a real earlier job (conftest's main_job). `auto` is shown
through the image's copy and through gs:// (the GCS emulator at the published
bucket path); refusals come from the real entrypoint before any data is read."""

import json
import logging
import os
import time

import numpy as np
import pytest
import tensorflow as tf

import imagenet_stand_in
from conftest import TINY_FLAGS, data_flags, job_env, run_job
from object_detection_algo.errors import StorageError, UsageError
from object_detection_algo.training import flag_table, init_weights

# A learning rate small enough that one step leaves the loaded weights as they were
# (to 1e-4), while weights the job made itself differ from the checkpoint's by far more.
STILL = '--initial_learning_rate=0.000001'
LOADED = 1e-4


@pytest.fixture(scope='module')
def imagenet(tmp_path_factory):
    """{depth: checkpoint prefix} of stand-ins for the published ImageNet ResNets."""
    root = tmp_path_factory.mktemp('imagenet')
    return {depth: imagenet_stand_in.train(str(root / f'resnet{depth}'), depth)
            for depth in (50, 34)}


def settings_for(*args):
    """Resolved settings of the tests' tiny model, with args (--name=value) on top."""
    raw = {'training_data_path': '/d/train*', 'validation_data_path': '/d/val*',
           'job-dir': '/tmp/out', 'max_steps': '2'}
    for arg in TINY_FLAGS + list(args):
        name, value = arg[2:].split('=', 1)
        raw[name] = value
    return flag_table.resolve(raw)


def weights_of(prefix, module):
    """{name: value} of a module's trained weights (no moving statistics, no slots)."""
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()
            if name.startswith(module + '/') and '.OPTIMIZER_SLOT' not in name
            and name.split('/')[-3] in ('kernel', 'bias', 'gamma', 'beta')}


def distance(prefix_a, prefix_b, module):
    """The largest difference between the module's weights in two checkpoints."""
    a, b = weights_of(prefix_a, module), weights_of(prefix_b, module)
    assert a and set(a) == set(b), module
    return max(float(np.abs(a[name] - b[name]).max()) for name in a if a[name].shape == b[name].shape)


def logged_at(line):
    """Seconds of the day from an absl log line ('I1206 02:35:54.038809 ...')."""
    hours, minutes, seconds = line.split()[1].split(':')
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def metrics_of(job_dir):
    with open(os.path.join(job_dir, 'model', 'metrics.json')) as f:
        return json.load(f)


# --- the decision, in process ------------------------------------------------------

def test_auto_reads_the_image_copy_first(imagenet, tmp_path):
    copy = imagenet_stand_in.as_published(imagenet[50], str(tmp_path / 'resnet50_imagenet'))
    env = {init_weights.PRETRAINED_DIR_VARIABLE: str(tmp_path)}
    weights = init_weights.choose(settings_for('--resnet_depth=50'), env)
    assert weights.checkpoint == copy and weights.modules == 'backbone'
    assert weights.source == 'imagenet'
    assert weights.description == f'ImageNet ResNet-50 (backbone) from {copy}'


@pytest.mark.parametrize('depth, why', [
    (18, 'no published ImageNet checkpoint for ResNet-18'),
    (101, 'swish'),
])
def test_auto_trains_from_scratch_where_no_checkpoint_fits(depth, why, caplog):
    caplog.set_level(logging.INFO)
    weights = init_weights.choose(settings_for(f'--resnet_depth={depth}'), {})
    assert weights.checkpoint is None and weights.source == 'none'
    assert why in weights.description and weights.description.endswith('training from scratch')
    assert f'Initial weights: {weights.description}.' in caplog.text


def test_an_earlier_job_with_the_same_classes_gives_all(main_job):
    folder = str(main_job['out'] / 'checkpoints')
    weights = init_weights.choose(settings_for(f'--init_checkpoint={folder}'), {})
    assert weights.modules == 'all' and weights.source == 'job'
    assert weights.checkpoint == tf.train.latest_checkpoint(folder)


def test_a_folder_without_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(StorageError, match='the folder holds no checkpoint'):
        init_weights.choose(settings_for(f'--init_checkpoint={tmp_path}'), {})
    with pytest.raises(StorageError, match=r'no checkpoint there \(.*missing\.index does not'):
        init_weights.choose(settings_for(f'--init_checkpoint={tmp_path / "missing"}'), {})


def test_an_exported_model_is_refused_with_the_folder_to_use(main_job):
    model = main_job['out'] / 'model'
    with pytest.raises(UsageError, match='is an exported SavedModel, not a checkpoint'):
        init_weights.choose(settings_for(f'--init_checkpoint={model}'), {})


def test_modules_the_checkpoint_lacks_are_refused(imagenet):
    args = (f'--init_checkpoint={imagenet[50]}', '--resnet_depth=50',
            '--init_checkpoint_modules=backbone,decoder')
    with pytest.raises(UsageError, match='has no decoder .it holds backbone.'):
        init_weights.choose(settings_for(*args), {})


# --- the job ---------------------------------------------------------------------

def test_a_resnet34_checkpoint_for_a_resnet18_model_is_refused_in_seconds(
        imagenet, shapes_data, tmp_path):
    start = time.time()
    code, log = run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={tmp_path / "out"}', '--max_steps=2',
        f'--init_checkpoint={imagenet[34]}'], job_env(tmp_path / 'hp'), tmp_path / 'log.txt')
    print(f'refused in {time.time() - start:.1f} s')
    assert code == 2, log[-3000:]
    assert (f'error: --init_checkpoint={imagenet[34]}: the checkpoint {imagenet[34]} does not '
            'fit this model') in log
    assert 'backbone/layer_with_weights-4/_conv1/kernel: [3, 3, 64, 128] in this model, ' \
           '[3, 3, 64, 64] in the checkpoint' in log
    assert '--resnet_depth=18' in log
    assert 'Data check' not in log and 'Traceback' not in log  # before the data is read


def test_all_with_other_classes_is_refused_naming_both_counts(main_job, shapes_data, tmp_path):
    folder = main_job['out'] / 'checkpoints'
    code, log = run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={tmp_path / "out"}', '--max_steps=2', '--num_classes=2',
        f'--init_checkpoint={folder}', '--init_checkpoint_modules=all'],
        job_env(tmp_path / 'hp'), tmp_path / 'log.txt')
    assert code == 2, log[-3000:]
    assert 'was trained with 3 classes, this job has --num_classes=2' in log
    assert '--init_checkpoint_modules=backbone,decoder' in log
    assert not os.path.exists(tmp_path / 'out' / 'checkpoints' / 'checkpoint')


def test_fine_tuning_from_an_earlier_job_with_other_classes(main_job, shapes_data, tmp_path):
    """An earlier job's R/checkpoints as it is: backbone and decoder are loaded,
    the head (other classes) starts anew."""
    folder = main_job['out'] / 'checkpoints'
    source = tf.train.latest_checkpoint(str(folder))
    out = tmp_path / 'out'
    code, log = run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={out}', '--max_steps=1', '--num_classes=4', STILL,
        f'--init_checkpoint={folder}'], job_env(tmp_path / 'hp'), tmp_path / 'log.txt')
    assert code == 0, log[-3000:]
    assert (f"Initial weights: an earlier job's checkpoint (backbone, decoder) from {source}."
            in log)
    started = tf.train.latest_checkpoint(str(out / 'checkpoints'))
    assert distance(started, source, 'backbone') < LOADED
    assert distance(started, source, 'decoder') < LOADED
    assert distance(started, source, 'head') > 100 * LOADED
    recorded = metrics_of(out)['initial_weights']
    assert recorded['source'] == 'job' and recorded['modules'] == 'backbone,decoder'
    assert recorded['checkpoint'] == source


# --- auto through gs:// ----------------------------------------------------------

PUBLISHED_BUCKET, PUBLISHED_OBJECT = init_weights.PUBLISHED[50][len('gs://'):].split('/', 1)


@pytest.fixture
def published(gcs, imagenet, tmp_path):
    """The stand-in ResNet-50 at the published gs:// path; removed afterwards."""
    local = imagenet_stand_in.as_published(imagenet[50], str(tmp_path / 'published'))
    gcs.bucket(PUBLISHED_BUCKET)
    gcs.upload_dir(os.path.dirname(local), PUBLISHED_BUCKET, os.path.dirname(PUBLISHED_OBJECT))
    yield local
    for name in gcs.objects(PUBLISHED_BUCKET):
        gcs.client.bucket(PUBLISHED_BUCKET).blob(name).delete()


def resnet50_job(shapes_data, tmp_path, gcs, log_name, *extra):
    env = job_env(tmp_path / 'hp' / 'output.metrics', **gcs.env,
                  **{init_weights.PRETRAINED_DIR_VARIABLE: str(tmp_path / 'no_copy')})
    return run_job(data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={tmp_path / "out"}', '--resnet_depth=50', STILL, *extra],
        env, tmp_path / log_name)


def test_auto_loads_the_published_resnet50_from_gs_and_a_restart_loads_nothing(
        gcs, published, shapes_data, tmp_path):
    code, log = resnet50_job(shapes_data, tmp_path, gcs, 'log1.txt', '--max_steps=1', '-v', '1')
    assert code == 0, log[-3000:]
    assert f'Initial weights: ImageNet ResNet-50 (backbone) from {init_weights.PUBLISHED[50]}.' \
        in log
    assert 'Finished loading pretrained checkpoint' in log  # Model Garden's line, with -v 1
    checkpoints = str(tmp_path / 'out' / 'checkpoints')
    assert distance(tf.train.latest_checkpoint(checkpoints), published, 'backbone') < LOADED
    assert metrics_of(tmp_path / 'out')['initial_weights']['source'] == 'imagenet'

    # The published copy is gone: a restart must not need it.
    for name in gcs.objects(PUBLISHED_BUCKET):
        gcs.client.bucket(PUBLISHED_BUCKET).blob(name).delete()
    # -v 1: Model Garden's own 'Finished loading pretrained checkpoint' line would show.
    code, log = resnet50_job(shapes_data, tmp_path, gcs, 'log2.txt', '--max_steps=2', '-v', '1')
    assert code == 0, log[-3000:]
    assert 'Resuming from the checkpoint at step 1' in log
    assert 'Initial weights' not in log and 'Finished loading pretrained' not in log
    assert metrics_of(tmp_path / 'out')['initial_weights']['source'] == 'imagenet'


def test_auto_trains_from_scratch_when_gs_gives_no_answer(gcs, published, shapes_data,
                                                          tmp_path):
    gcs.faults.hold(f'{PUBLISHED_OBJECT}.index')
    start = time.time()
    code, log = resnet50_job(shapes_data, tmp_path, gcs, 'log.txt', '--max_steps=1')
    gcs.faults.release()
    assert code == 0, log[-3000:]
    line = next(line for line in log.splitlines() if 'Initial weights:' in line)
    devices = next(line for line in log.splitlines() if 'Devices:' in line)
    decided = logged_at(line) - logged_at(devices)
    print(line, f'(decided {decided:.1f} s after the Devices line; job: '
          f'{time.time() - start:.0f} s)')
    # The probe's own deadline, not TensorFlow's minutes of retries.
    assert decided < init_weights.AUTO_PROBE_SECONDS + 15
    assert line.startswith('W')  # a warning
    assert ('Initial weights: none (no copy of the ImageNet ResNet-50 could be read: '
            f'{tmp_path / "no_copy"}/resnet50_imagenet/ckpt-28080: not in this image; '
            f'{init_weights.PUBLISHED[50]}: no answer from the storage') in line
    assert line.endswith('training from scratch.')
    assert metrics_of(tmp_path / 'out')['initial_weights']['source'] == 'none'
