"""The real entrypoint, end to end, on real TFRecords through real TensorFlow:
outputs, hypertune file, exported signature, caller layouts, resume."""

import glob
import json
import re
import signal
import time
import types

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, data_flags, job_env, run_job, start_job
from object_detection_algo.data import synthetic
from object_detection_algo.training import best_model, experiment, flag_table, reporting


def hypertune_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_checkpoints_and_evaluations(main_job):
    ckpt = main_job['out'] / 'checkpoints'
    assert tf.train.latest_checkpoint(str(ckpt)).endswith('ckpt-4')
    with open(ckpt / 'evaluations.json') as f:
        evaluations = json.load(f)['evaluations']
    assert [e['step'] for e in evaluations] == [2, 4]


def test_one_hypertune_line_per_evaluation(main_job):
    lines = hypertune_lines(main_job['metrics'])
    assert [line['global_step'] for line in lines] == ['2', '4']
    with open(main_job['out'] / 'checkpoints' / 'evaluations.json') as f:
        evaluations = json.load(f)['evaluations']
    for line, evaluation in zip(lines, evaluations):
        assert float(line['AP']) == pytest.approx(evaluation['metrics']['AP'])
        assert line['trial'] == '0'


def test_metrics_json_beside_the_model(main_job):
    with open(main_job['out'] / 'model' / 'metrics.json') as f:
        best = json.load(f)
    assert set(best['metrics']) == {'AP', 'AP50', 'AP75', 'APs', 'APm', 'APl', 'ARmax1',
                                    'ARmax10', 'ARmax100', 'ARs', 'ARm', 'ARl'}
    assert best['step'] in (2, 4)
    assert best['flags']['num_classes'] == 3 and best['flags']['max_steps'] == 4
    assert all(0.0 <= v <= 1.0 or v == -1.0 for v in best['metrics'].values())


def test_model_card_beside_the_best_model(main_job):
    """metrics.json: per class AP and the F1-best threshold, names, data, weights."""
    with open(main_job['out'] / 'model' / 'metrics.json') as f:
        card = json.load(f)
    assert card['label_map'] == {'1': 'circle', '2': 'square', '3': 'triangle'}
    assert [row['name'] for row in card['per_class']] == ['circle', 'square', 'triangle']
    for row in card['per_class']:
        assert set(row) == {'id', 'name', 'AP', 'AP50', 'AP75', 'f1', 'score_threshold',
                            'precision', 'recall', 'num_boxes'}
        assert 0 <= row['AP'] <= row['AP50'] <= 1 and 0 <= row['score_threshold'] <= 1
        assert row['num_boxes'] > 0
    assert card['data']['training_data_path']['records'] == 32
    assert card['data']['validation_data_path']['records_evaluated'] == 8
    assert card['initial_weights']['source'] == 'none'
    assert card['flags']['num_classes'] == 3 and card['seconds_since_start'] > 0
    with open(main_job['out'] / 'checkpoints' / 'evaluations.json') as f:
        evaluation = json.load(f)['evaluations'][-1]
    assert set(evaluation['per_class']) == {'1', '2', '3'}
    # The job ends with a per-class table of its best model.
    table = [line for line in main_job['log'].splitlines() if 'Best model, per class:' in line]
    assert len(table) == 4 and 'triangle' in table[-1]


def test_exported_signature_serves_mixed_sizes(main_job):
    model = tf.saved_model.load(str(main_job['out'] / 'model'))
    serve = model.signatures['serving_default']
    rng = np.random.RandomState(3)
    jpeg = synthetic.encode(synthetic.draw_image(rng, size=128)[0], 'jpeg')
    png = synthetic.encode(synthetic.draw_image(rng, size=96)[0].resize((160, 96)), 'png')
    out = serve(encoded_image=tf.constant([jpeg, png]), key=tf.constant(['a', 'b']))
    assert set(out) == {'detection_boxes', 'detection_classes', 'detection_scores',
                        'num_detections', 'key'}
    assert out['detection_boxes'].shape == (2, 20, 4)
    assert out['detection_classes'].shape == out['detection_scores'].shape == (2, 20)
    assert out['num_detections'].shape == (2,)
    for name in ('detection_boxes', 'detection_classes', 'detection_scores', 'num_detections'):
        assert out[name].dtype == tf.float32, name
    assert list(out['key'].numpy()) == [b'a', b'b']
    boxes = out['detection_boxes'].numpy()
    assert boxes.min() >= 0.0 and boxes.max() <= 1.0
    for i, n in enumerate(out['num_detections'].numpy().astype(int)):
        assert 0 <= n <= 20
        classes = out['detection_classes'].numpy()[i, :n]
        assert np.all((classes >= 1) & (classes <= 3))
        assert np.all(boxes[i, :n, 0] <= boxes[i, :n, 2])


def test_an_exporter_reused_for_a_new_best_exports_the_new_weights(main_job, tmp_path):
    """The job builds the serving module once; the export of a later checkpoint by
    that module serves what a fresh export of the same checkpoint serves."""
    raw = {a[2:].split('=', 1)[0]: a.split('=', 1)[1] for a in main_job['args'] if '=' in a}
    params = experiment.build(flag_table.resolve(raw), ['a'], ['b'], validation_steps=-1)
    checkpoints = main_job['out'] / 'checkpoints'
    reused = best_model.Exporter(params)
    reused.export(str(checkpoints / 'ckpt-2'), str(tmp_path / 'first'))
    reused.export(str(checkpoints / 'ckpt-4'), str(tmp_path / 'second'))
    best_model.Exporter(params).export(str(checkpoints / 'ckpt-4'), str(tmp_path / 'fresh'))
    image = synthetic.encode(synthetic.draw_image(np.random.RandomState(4), size=128)[0])
    outputs = {}
    for name in ('first', 'second', 'fresh'):
        serve = tf.saved_model.load(str(tmp_path / name)).signatures['serving_default']
        outputs[name] = serve(encoded_image=tf.constant([image]), key=tf.constant(['k']))
    scores = {name: out['detection_scores'].numpy() for name, out in outputs.items()}
    np.testing.assert_array_equal(scores['second'], scores['fresh'])
    assert not np.array_equal(scores['first'], scores['second'])


def test_tensorboard_summaries(main_job):
    tags = set()
    for path in glob.glob(str(main_job['out'] / 'checkpoints' / '*' / 'events.out.tfevents.*')):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(v.tag for v in event.summary.value)
    assert {'total_loss', 'cls_loss', 'box_loss', 'learning_rate', 'AP', 'AP50', 'ARmax100'} <= tags
    assert {'AP ByCategory/3', 'AP50 ByCategory/1', 'F1 ScoreThreshold ByCategory/2'} <= tags
    assert any(tag.startswith('image/validation_outputs/') for tag in tags)  # drawn detections


def test_progress_and_evaluation_lines(main_job):
    log = main_job['log']
    assert 'Devices: CPU' in log
    assert 'step 2/4 | loss' in log and 'images/s | ETA' in log
    assert 'eval at step 2/4 | AP ' in log and 'eval at step 4/4 | AP ' in log
    assert 'new best, exported to' in log


def test_data_check_lines(main_job):
    """One line per set, then one per kind of warning: the tests' job flags
    (anchors from 32 px) leave the shapes' 21-22 px boxes without an anchor at
    IoU >= 0.5, and the warning says what would cover them, measured."""
    lines = [line for line in main_job['log'].splitlines() if 'Data check' in line]
    # The job's first two arguments are its data flags.
    train, val = (f'Data check of {flag}' for flag in main_job['args'][:2])
    assert [line[0] for line in lines] == ['I', 'W', 'I', 'W', 'I'], lines
    assert f'{train}: 32 records in 2 file(s) (all read, ' in lines[0]
    assert lines[0].endswith('s): no errors, 1 warning; classes 1 circle: 24, 2 square: 26, '
                             '3 triangle: 24; boxes 22-63 px (median 39); anchor coverage 94.6%.')
    assert lines[1].split('] ', 1)[1] == (
        f'{train}: low_anchor_coverage: 1 circle: 22 of 24 boxes (91.7%), 2 square: 24 of 26 '
        'boxes (92.3%) have an anchor with IoU >= 0.5 at image_size 128,128: under 95% (all '
        'classes: 94.6%; not covered: 4 too small). Measured single-flag changes: '
        '--anchor_size=2: 100%, --image_size=160,160: 100%.')
    assert f'{val}: 8 records in 2 file(s) (all read, ' in lines[2]
    assert 'Data check passed; report: ' in lines[4] and 'preflight_report.json' in lines[4]


def test_rerun_after_max_steps_does_nothing(main_job):
    """A finished job started again exits 0 and says so, without new reports."""
    code, log = run_job(main_job['args'], main_job['env'], main_job['root'] / 'rerun.txt')
    assert code == 0, log[-2000:]
    assert 'Training already reached max_steps=4' in log
    assert len(hypertune_lines(main_job['metrics'])) == 2
    # No warning per optimizer slot that a restore without a step leaves unmatched.
    assert 'Value in checkpoint could not be found' not in log
    assert len(log.splitlines()) < 25, log


@pytest.fixture(scope='module')
def od_api_data(tmp_path_factory):
    """Records as the TF Object Detection API and other tools write them: file-name
    source_ids, class text, format, PNG and grayscale, no size, images without boxes."""
    out = tmp_path_factory.mktemp('odapi')
    rng = np.random.RandomState(11)
    paths = {}
    for split, count in (('train', 8), ('val', 4)):
        path = str(out / f'{split}.record')
        with tf.io.TFRecordWriter(path) as writer:
            for i in range(count):
                image, boxes, labels = synthetic.draw_image(rng, size=128)
                fmt = 'png' if i % 2 else 'jpeg'
                if i % 3 == 1:
                    image = image.convert('L')
                if i == 2:
                    boxes, labels = [], []  # a negative example
                example = synthetic.make_example(
                    synthetic.encode(image, fmt), boxes, labels, 128, 128, fmt=fmt,
                    source_id=f'{split}/img_{i:03d}.{fmt}', filename=f'img_{i:03d}.{fmt}',
                    with_size=i % 2 == 0)
                writer.write(example.SerializeToString())
        paths[split] = path
    return paths


def test_ai_platform_tuning_trial_with_od_api_records(od_api_data, tmp_path):
    tf_config = {'cluster': {'master': ['127.0.0.1:2222']},
                 'task': {'type': 'master', 'index': 0, 'trial': '3'}, 'job': {}}
    env = job_env(tmp_path / 'hp' / 'output.metrics', TF_CONFIG=json.dumps(tf_config),
                  CLUSTER_SPEC=json.dumps({'cluster': tf_config['cluster']}))
    args = data_flags(od_api_data) + TINY_FLAGS + [
        f'--job-dir={tmp_path / "out"}', '--max_steps=2', '--train_steps_per_eval=2',
        '--num_eval_images=100']
    code, log = run_job(args, env, tmp_path / 'log.txt')
    assert code == 0, log[-3000:]
    assert '--num_eval_images=100 is not below the 4 images of the validation set' in log
    assert (tmp_path / 'out' / 'model' / 'trial_3' / 'saved_model.pb').exists()
    assert tf.train.latest_checkpoint(str(tmp_path / 'out' / 'checkpoints' / 'trial_3'))
    assert not (tmp_path / 'out' / 'model' / 'saved_model.pb').exists()
    [line] = hypertune_lines(tmp_path / 'hp' / 'output.metrics')
    assert line['trial'] == '3' and line['global_step'] == '2'


def test_vertex_variables_without_job_dir(shapes_data, tmp_path):
    base = tmp_path / 'vertex' / '5'
    env = job_env(tmp_path / 'hp' / 'output.metrics', CLOUD_ML_TRIAL_ID='5',
                  CLOUD_ML_JOB_ID='123', AIP_MODEL_DIR=f'{base}/model/',
                  AIP_CHECKPOINT_DIR=f'{base}/checkpoints/',
                  AIP_TENSORBOARD_LOG_DIR=f'{base}/logs/')
    args = data_flags(shapes_data) + TINY_FLAGS + ['--max_steps=1', '--train_steps_per_eval=1',
                                                   '--num_eval_images=4']
    code, log = run_job(args, env, tmp_path / 'log.txt')
    assert code == 0, log[-3000:]
    assert (base / 'model' / 'saved_model.pb').exists()
    assert tf.train.latest_checkpoint(str(base / 'checkpoints'))
    assert glob.glob(str(base / 'logs' / 'train' / 'events.out.tfevents.*'))
    assert glob.glob(str(base / 'logs' / 'validation' / 'events.out.tfevents.*'))
    assert 'Evaluating on 4 of 8 validation images' in log
    [line] = hypertune_lines(tmp_path / 'hp' / 'output.metrics')
    assert line['trial'] == '5'


def latest_step(checkpoint_dir):
    path = tf.train.latest_checkpoint(str(checkpoint_dir))
    return int(path.rsplit('-', 1)[1]) if path else 0


def test_resume_after_kill_does_not_redo_steps(shapes_data, tmp_path):
    """Started as `docker run IMAGE --flags` would: flags only, local paths."""
    out = tmp_path / 'out'
    metrics = tmp_path / 'hp' / 'output.metrics'
    args = data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={out}', '--max_steps=8', '--train_steps_per_eval=4',
        '--checkpoint_every_steps=1']
    proc = start_job(args, job_env(metrics), tmp_path / 'first.txt')
    deadline = time.time() + 600
    # Wait on the checkpoint state file, not on ckpt-5.index: TensorFlow writes the index
    # before it records the checkpoint as the latest, and a kill in between resumes from 4.
    while latest_step(out / 'checkpoints') < 5:
        assert proc.poll() is None, open(tmp_path / 'first.txt').read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / 'model' / 'saved_model.pb').exists()  # the step-4 best survived
    killed_at = latest_step(out / 'checkpoints')
    assert 5 <= killed_at < 8

    code, log = run_job(args, job_env(metrics), tmp_path / 'second.txt')
    assert code == 0, log[-3000:]
    assert f'Resuming from the checkpoint at step {killed_at}' in log
    assert 'eval at step 4/8' not in log  # already done by the first run
    assert 'step 8/8 | loss' in log
    assert [line['global_step'] for line in hypertune_lines(metrics)] == ['4', '8']
    with open(out / 'checkpoints' / 'evaluations.json') as f:
        assert [e['step'] for e in json.load(f)['evaluations']] == [4, 8]


def test_sigterm_saves_a_checkpoint_and_stops(shapes_data, tmp_path):
    """Preemption: SIGTERM leads to a checkpoint at the end of the current loop."""
    out = tmp_path / 'out'
    args = data_flags(shapes_data) + TINY_FLAGS + [
        f'--job-dir={out}', '--max_steps=200', '--train_steps_per_eval=200',
        '--checkpoint_every_steps=1000']
    proc = start_job(args, job_env(tmp_path / 'hp' / 'm'), tmp_path / 'log.txt')
    deadline = time.time() + 600
    while 'step 2/200 | loss' not in open(tmp_path / 'log.txt').read():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 143
    log = open(tmp_path / 'log.txt').read()
    saved = int(tf.train.latest_checkpoint(str(out / 'checkpoints')).rsplit('-', 1)[1])
    assert 2 <= saved < 200
    assert f'Stopped by SIGTERM at step {saved}' in log
    assert not (out / 'model').exists()  # no evaluation happened, nothing half-exported


def test_a_loop_too_long_for_a_preemption_notice_is_warned_once(caplog, monkeypatch):
    """SIGTERM is acted on between loops: a loop longer than the threshold gets
    one warning; the first loop (tracing) and one-step loops do not count. The
    log's clock is a counter the test moves, so a busy machine cannot change it."""
    clock = [1000.0]
    monkeypatch.setattr(reporting, 'time', types.SimpleNamespace(time=lambda: clock[0]))
    step = tf.Variable(0, dtype=tf.int64)
    progress = reporting.ProgressLog(step, max_steps=100, batch_size=2, long_loop_seconds=10)

    def loop(steps, seconds):
        clock[0] += seconds
        step.assign_add(steps)
        progress({'total_loss': 1.0, 'learning_rate': 0.1})

    def warnings():
        return [r.getMessage() for r in caplog.records if r.levelname == 'WARNING']

    loop(10, 40)  # the first loop: tracing
    loop(10, 5)
    loop(1, 40)  # one step per loop: nothing to lower
    assert warnings() == []
    loop(10, 20)
    loop(10, 20)
    [warning] = warnings()
    assert re.fullmatch(r'A loop of 10 steps took 20 s\. On SIGTERM .* Lower --log_every_steps '
                        r'\(about 5 here\) if yours may be preempted\.', warning), warning
