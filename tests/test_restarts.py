"""A restart must be the same job: other model or evaluation flags are refused
before anything is built (exit 2), other data before training (exit 3) unless
--allow_data_change, and then evaluations on the new validation data are only
compared with each other. Flags that do not shape the model (steps, learning
rate, batch) change freely; an unfinished checkpoint save is cleaned up."""

import json
import os
import time

import numpy as np
import tensorflow as tf

from conftest import TINY_FLAGS, job_env, run_job
from object_detection_algo.data import synthetic


def _first_job(tmp_path):
    """Data of its own (so the test may change it) and a 2-step job on it."""
    data = synthetic.write_dataset(str(tmp_path / 'data'), num_train=16, num_val=4, size=128,
                                   seed=3)
    out = tmp_path / 'out'
    args = [f'--training_data_path={data["train"]}', f'--validation_data_path={data["val"]}',
            f'--job-dir={out}', *TINY_FLAGS, '--max_steps=2', '--train_steps_per_eval=2',
            '--nms_score_threshold=0']
    code, log = run_job(args, job_env(tmp_path / 'hp' / 'output.metrics'), tmp_path / 'log1.txt')
    assert code == 0, log[-3000:]
    return data, out, args


def _stamps(folder):
    return {str(p): p.stat().st_mtime_ns for p in folder.rglob('*') if p.is_file()}


def _with(args, **changes):
    """args with --name=value replaced or added."""
    kept = [a for a in args if a.split('=', 1)[0].lstrip('-') not in changes]
    return kept + [f'--{k}={v}' for k, v in changes.items()]


def test_other_model_flags_are_refused_before_anything_is_built(tmp_path):
    data, out, args = _first_job(tmp_path)
    identity = json.loads((out / 'checkpoints' / 'job_identity.json').read_text())
    assert identity['shape']['num_classes'] == 3 and identity['data_version'] == 1
    before = _stamps(out)

    start = time.time()
    code, log = run_job(_with(args, num_classes=5, resnet_depth=34, max_steps=4),
                        job_env(tmp_path / 'hp' / 'output.metrics'), tmp_path / 'log2.txt')
    seconds = time.time() - start
    print(f'refused in {seconds:.1f} s')
    assert code == 2, log[-3000:]
    assert (f'error: --job-dir={out} holds the checkpoints of a job started with other model '
            'or evaluation settings') in log
    assert '--num_classes: 3 at the first start, 5 now' in log
    assert '--resnet_depth: 18 at the first start, 34 now' in log
    assert 'give a new --job-dir' in log
    assert 'Devices:' not in log and 'Traceback' not in log  # nothing was built
    assert _stamps(out) == before


def test_other_data_is_refused_then_allowed_as_a_new_data_version(tmp_path):
    data, out, args = _first_job(tmp_path)
    # New validation images in the same file name; a training file touched.
    val_file = tf.io.gfile.glob(data['val'])[0]
    rng = np.random.RandomState(99)
    with tf.io.TFRecordWriter(val_file) as writer:
        for source_id in (9001, 9002):
            image, boxes, labels = synthetic.draw_image(rng, 128)
            writer.write(synthetic.make_example(synthetic.encode(image), boxes, labels, 128, 128,
                                                source_id=str(source_id)).SerializeToString())
    train_file = tf.io.gfile.glob(data['train'])[0]
    os.utime(train_file, ns=(time.time_ns(), time.time_ns() + 10 ** 9))
    # A save killed before it finished leaves its _temp folder behind.
    orphan = out / 'checkpoints' / 'ckpt-3_temp'
    orphan.mkdir()
    (orphan / 'part-00000-of-00001.data-00000-of-00001').write_bytes(b'half a checkpoint')
    before = _stamps(out)
    hp = tmp_path / 'hp' / 'output.metrics'

    more = _with(args, max_steps=4, initial_learning_rate=0.02, train_batch_size=4)
    code, log = run_job(more, job_env(hp), tmp_path / 'log2.txt')
    assert code == 3, log[-3000:]
    assert f'error: The data differs from the first start of the job in --job-dir={out}:' in log
    assert f'--training_data_path={data["train"]}: 1 file(s) changed (size or modification ' \
           f'time): {train_file}' in log
    assert f'--validation_data_path={data["val"]}: 1 file(s) changed' in log
    assert 'pass --allow_data_change' in log and 'step 3/4' not in log
    assert _stamps(out) == before  # the refusal removed or wrote nothing

    code, log = run_job(more + ['--allow_data_change'], job_env(hp), tmp_path / 'log3.txt')
    assert code == 0, log[-3000:]
    assert 'Evaluations from now on are data version 2' in log
    assert 'Resuming from the checkpoint at step 2' in log
    assert f'Removed {orphan}, left by a checkpoint save that did not finish.' in log
    assert not orphan.exists()
    evaluations = json.loads((out / 'checkpoints' / 'evaluations.json').read_text())
    # The checkpoint of step 2 is evaluated again on the new data, and becomes the best
    # there whatever its AP: it is compared only with evaluations on the same data.
    assert [(e['step'], e['data_version']) for e in evaluations['evaluations']] == [
        (2, 1), (2, 2), (4, 2)]
    assert evaluations['evaluations'][1]['exported']
    best = json.loads((out / 'model' / 'metrics.json').read_text())
    assert best['data_version'] == 2 and best['step'] in (2, 4)
    assert best['identity']['shape']['resnet_depth'] == 18
    assert best['identity']['data']['validation_data_path']['files'] == 2
    assert best['flags']['max_steps'] == 4 and best['flags']['train_batch_size'] == 4
    identity = json.loads((out / 'checkpoints' / 'job_identity.json').read_text())
    assert identity['data_version'] == 2

    # A rerun now at max_steps on the same data: the final evaluation and model exist.
    code, log = run_job(more, job_env(hp), tmp_path / 'log4.txt')
    assert code == 0 and 'Nothing to do.' in log, log[-3000:]
