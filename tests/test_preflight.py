"""The training job's data check: a bad record stops the job before training
(exit status 3) with a summary naming it, the JSON report lands in the
checkpoint folder, and nothing else in the job dir is touched. A bad record
the check's sample missed stops the job when the input pipeline meets it,
named, with the steps done saved."""

import json

import numpy as np
import pytest
import tensorflow as tf

from conftest import TINY_FLAGS, job_env, run_job
from object_detection_algo.data import synthetic


def test_bad_record_stops_the_job_and_leaves_the_job_dir_alone(shapes_data, tmp_path):
    # A third training file whose record 1 has a label 0 and a box past the right edge.
    rng = np.random.RandomState(1)
    bad_file = tmp_path / 'train-bad.tfrecord'
    with tf.io.TFRecordWriter(str(bad_file)) as writer:
        for i, (labels, xmax) in enumerate([([1], 40), ([0], 140)]):
            image = synthetic.draw_image(rng, size=128)[0]
            example = synthetic.make_example(synthetic.encode(image), [(10, 10, 60, xmax)],
                                             labels, 128, 128, source_id=str(9000 + i),
                                             filename=f'bad_{i}.jpg')
            writer.write(example.SerializeToString())
    data = tmp_path / "data"  # one glob for the two good files and the bad one
    data.mkdir()
    for path in tf.io.gfile.glob(shapes_data['train']) + [str(bad_file)]:
        (data / path.rsplit('/', 1)[1]).symlink_to(path)

    # A job dir from an earlier run: its checkpoints and best model must survive as they are.
    out = tmp_path / 'out'
    earlier = {out / 'checkpoints' / 'checkpoint': b'model_checkpoint_path: "ckpt-4"\n',
               out / 'checkpoints' / 'ckpt-4.index': b'index bytes',
               out / 'checkpoints' / 'evaluations.json': b'{"evaluations": []}\n',
               out / 'model' / 'saved_model.pb': b'saved model bytes',
               out / 'model' / 'metrics.json': b'{"step": 4}\n'}
    for path, content in earlier.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    stamps = {path: path.stat().st_mtime_ns for path in earlier}

    args = [f'--training_data_path={data}/train-*', f'--validation_data_path={shapes_data["val"]}',
            f'--job-dir={out}', *TINY_FLAGS, '--max_steps=2', '--preflight_max_records=6']
    code, log = run_job(args, job_env(tmp_path / 'hp' / 'output.metrics'), tmp_path / 'log.txt')
    assert code == 3, log[-3000:]
    where = f"{data}/train-bad.tfrecord record 1 (source_id '9001', bad_1.jpg)"
    assert f'error: --training_data_path={data}/train-*: 2 error(s) in the data check' in log
    assert f'{where}: box 0: label 0 is outside 1..3 (0 is the background class)' in log
    assert f'{where}: box 0 [ymin 0.078125, xmin 0.078125, ymax 0.46875, xmax 1.09375]: ' \
           'outside [0, 1]' in log
    assert 'labels look 0-based' not in log  # labels 0..3: not a 0-based set
    # One line for the set, one per kind of error with its examples; 6 records at
    # most from 3 files: the first 2 of each, and the line says so.
    assert (f'Data check of --training_data_path={data}/train-*: 6 records in 3 file(s) (a '
            'sample: up to 2 records from each of 3 of 3 files, ') in log
    assert 's): 2 errors, 1 warning; classes 0: 1, 1 circle: 4, 2 square: 2, 3 triangle: 1; ' \
           'boxes 22-57 px (median 39); anchor coverage 85.7%.' in log
    assert (f'Data check of --training_data_path={data}/train-*: 1 box_outside (a box '
            f'coordinate outside [0, 1]): {where}: box 0 [ymin') in log
    assert f'{data}/train-*: 2 error(s) in the data check: box_outside 1, ' \
           'label_out_of_range 1 (examples in the lines above).' in log
    assert 'No training was done.' in log and '| loss ' not in log

    for path, content in earlier.items():
        assert path.read_bytes() == content and path.stat().st_mtime_ns == stamps[path], path
    new = {p for p in out.rglob('*') if p.is_file()} - set(earlier)
    assert new == {out / 'checkpoints' / 'preflight_report.json'}
    report = json.loads(new.pop().read_text())
    train = report['training_data_path']
    assert not train['ok'] and not train['all_records_checked']
    # The tests' anchors (from 32 px) miss one 22 px square of the sample.
    assert train['counts_by_rule'] == {'box_outside': 1, 'label_out_of_range': 1,
                                       'low_anchor_coverage': 1}
    assert report['validation_data_path']['ok']


def write_records(path, rng, bad, count=3):
    """`count` shapes records; those whose index is in `bad` have image bytes
    that are not an image."""
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(count):
            image, boxes, labels = synthetic.draw_image(rng, size=128)
            encoded = b'not an image' if i in bad else synthetic.encode(image)
            writer.write(synthetic.make_example(encoded, boxes, labels, 128, 128,
                                                source_id=str(7000 + i),
                                                filename=f'late_{i}.jpg').SerializeToString())


@pytest.mark.parametrize('split', ['train', 'val'])
def test_bad_record_past_the_sample_is_named_and_nothing_is_lost(split, shapes_data, tmp_path):
    """The check reads 2 records per file; records 2-11 of an extra file are bad.
    The input pipeline fails on one mid-job: the job saves what it has, reads every
    record to name the bad ones, and stops with exit status 3. Training shuffles
    with a 1000-record buffer over repeated epochs, so a single bad record among 35
    is missed by 80 draws about one run in ten; 10 among 44 are not."""
    data = {'train': tmp_path / 'train', 'val': tmp_path / 'val'}
    for name, folder in data.items():
        folder.mkdir()
        for path in tf.io.gfile.glob(shapes_data[name]):
            (folder / path.rsplit('/', 1)[1]).symlink_to(path)
    bad_file = data[split] / f'{split}-late.tfrecord'
    write_records(bad_file, np.random.RandomState(3), bad=range(2, 12), count=12)
    out = tmp_path / 'out'
    flag = 'training_data_path' if split == 'train' else 'validation_data_path'
    args = [f'--training_data_path={data["train"]}/*', f'--validation_data_path={data["val"]}/*',
            f'--job-dir={out}', *TINY_FLAGS, '--preflight_max_records=6',
            '--checkpoint_every_steps=1000',
            *(['--max_steps=40', '--train_steps_per_eval=40'] if split == 'train' else
              ['--max_steps=2', '--train_steps_per_eval=2'])]
    env = job_env(tmp_path / 'hp' / 'output.metrics')
    code, log = run_job(args, env, tmp_path / 'log.txt')
    assert code == 3, log[-3000:]
    assert 'Data check passed' in log  # the sample missed it
    [line] = [x for x in log.splitlines() if x.startswith('error: ')]
    assert line == (f'error: --{flag}={data[split]}/*: the input pipeline failed on a record '
                    'the check before training let through (Unknown image file format. One of '
                    'JPEG, PNG, GIF, BMP, WebP required.). Every record checked now: 10 error(s):')
    assert f"{bad_file} record 2 (source_id '7002', late_2.jpg): image/encoded (12 bytes) " \
           'does not decode' in log
    total = 32 + 12 if split == 'train' else 8 + 12
    assert f'Checked {total} records in 3 file(s) (all records)' in log
    report = json.loads((out / 'checkpoints' / 'data_failure_report.json').read_text())
    assert report[flag]['counts_by_rule']['undecodable_image'] == 10
    step = int(tf.train.latest_checkpoint(str(out / 'checkpoints')).rsplit('-', 1)[1])
    assert not (out / 'model').exists()
    if split == 'train':
        assert 0 <= step < 40
        assert f'Training stopped at step {step}; its checkpoint is saved' in log
    else:
        assert step == 2
        assert 'The evaluation at step 2 did not finish; the checkpoint of step 2 is saved' in log

    bad_file.unlink()  # fixed: the restart goes on from the saved step
    args = [a for a in args if not a.startswith(('--max_steps', '--train_steps_per_eval'))]
    code, log = run_job(args + [f'--max_steps={step + 1}', f'--train_steps_per_eval={step + 1}'],
                        env, tmp_path / 'log2.txt')
    assert code == 0, log[-3000:]
    if step:
        assert f'Resuming from the checkpoint at step {step}' in log
    assert (out / 'model' / 'saved_model.pb').exists()


def test_skip_bad_records_trains_and_evaluates_without_them(shapes_data, tmp_path):
    """--skip_bad_records: every record is checked, the bad ones are counted,
    listed and left out. An undecodable image left in would stop the job, so
    an epoch of training and a whole evaluation passing shows they were skipped."""
    rng = np.random.RandomState(4)
    data = {'train': tmp_path / 'train', 'val': tmp_path / 'val'}
    for name, folder in data.items():
        folder.mkdir()
        for path in tf.io.gfile.glob(shapes_data[name]):
            (folder / path.rsplit('/', 1)[1]).symlink_to(path)
        write_records(folder / f'{name}-late.tfrecord', rng, bad={2})
    with tf.io.TFRecordWriter(str(data['train'] / 'train-box.tfrecord')) as writer:
        image = synthetic.draw_image(rng, size=128)[0]
        writer.write(synthetic.make_example(synthetic.encode(image), [(10, 10, 60, 140)], [1],
                                            128, 128, source_id='8000').SerializeToString())
    out = tmp_path / 'out'
    # 36 training records, 2 skipped: 17 steps of 2 are an epoch; 20 go past it.
    args = [f'--training_data_path={data["train"]}/*', f'--validation_data_path={data["val"]}/*',
            f'--job-dir={out}', *TINY_FLAGS, '--max_steps=20', '--train_steps_per_eval=20',
            '--skip_bad_records=true', '--preflight_max_records=2', '--num_eval_images=0']
    code, log = run_job(args, job_env(tmp_path / 'hp' / 'output.metrics'), tmp_path / 'log.txt')
    assert code == 0, log[-3000:]
    assert ('--skip_bad_records: training and evaluating without 2 of the 36 records of '
            f'--training_data_path={data["train"]}/*') in log
    assert ('--skip_bad_records: training and evaluating without 1 of the 11 records of '
            f'--validation_data_path={data["val"]}/*') in log
    assert f"{data['train']}/train-late.tfrecord record 2 (source_id '7002', late_2.jpg): " \
           'image/encoded (12 bytes) does not decode' in log
    assert f"{data['train']}/train-box.tfrecord record 0 (source_id '8000'): box 0" in log
    assert 'Evaluating on all 10 validation images.' in log
    assert 'eval at step 20/20' in log and (out / 'model' / 'saved_model.pb').exists()
    report = json.loads((out / 'checkpoints' / 'preflight_report.json').read_text())
    assert report['training_data_path']['records_skipped'] == 2
    assert report['training_data_path']['all_records_checked']  # the sample bound is ignored
    assert report['validation_data_path']['records_skipped'] == 1


def test_skip_bad_records_still_stops_on_a_problem_of_the_whole_set(shapes_data, tmp_path):
    """Labels 0..2 with --num_classes=3: every record is off by one; skipping
    single records cannot help."""
    rng = np.random.RandomState(6)
    path = tmp_path / 'train-zero.tfrecord'
    with tf.io.TFRecordWriter(str(path)) as writer:
        for i in range(4):
            image, boxes, labels = synthetic.draw_image(rng, size=128)
            writer.write(synthetic.make_example(
                synthetic.encode(image), boxes, [label - 1 for label in labels], 128, 128,
                source_id=str(i)).SerializeToString())
    args = [f'--training_data_path={path}', f'--validation_data_path={shapes_data["val"]}',
            f'--job-dir={tmp_path / "out"}', *TINY_FLAGS, '--max_steps=2',
            '--skip_bad_records=true']
    code, log = run_job(args, job_env(tmp_path / 'hp' / 'output.metrics'), tmp_path / 'log.txt')
    assert code == 3, log[-3000:]
    assert 'labels look 0-based' in log
    assert ('--skip_bad_records skips single records; zero_based_labels concern(s) a whole '
            'file or set and still stop the job.') in log
    assert 'No training was done.' in log and '| loss ' not in log
