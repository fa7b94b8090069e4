"""The validator: one malformed record per rule, each found in a real TFRecord
file and reported with the file, the record number and the source_id; the
statistics; the sample bound; the `validate` command's exit status."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import ROOT
from object_detection_algo.data import dataset_writer, record_checks, synthetic

SETTINGS = record_checks.CheckSettings(num_classes=3, image_size=(128, 128))


def good_example(source_id, boxes=((10, 20, 70, 90),), labels=(2,), size=(96, 128)):
    rng = np.random.RandomState(len(source_id))
    image = synthetic.draw_image(rng, size=size[1])[0].resize((size[1], size[0]))
    return dataset_writer.make_example(synthetic.encode(image), boxes, list(labels), *size,
                                       source_id=source_id, class_names=synthetic.CLASS_NAMES,
                                       filename=f'{source_id}.jpg')


def set_list(example, key, values):
    feature = example.features.feature[key]
    getattr(feature, feature.WhichOneof('kind')).value[:] = values


def _missing_key(e):
    del e.features.feature['image/object/bbox/ymax']


def _wrong_type(e):
    del e.features.feature['image/object/class/label']
    e.features.feature['image/object/class/label'].float_list.value[:] = [2.0]


def _length_mismatch(e):
    set_list(e, 'image/object/class/label', [2, 1])


def _box_outside(e):
    set_list(e, 'image/object/bbox/xmax', [1.25])


def _min_ge_max(e):
    set_list(e, 'image/object/bbox/ymin', [0.9])


def _zero_area(e):
    set_list(e, 'image/object/bbox/xmin', [0.5])
    set_list(e, 'image/object/bbox/xmax', [0.5])


def _label_out_of_range(e):
    set_list(e, 'image/object/class/label', [4])


def _size_mismatch(e):
    set_list(e, 'image/width', [100])


def _undecodable(e):
    jpeg = e.features.feature['image/encoded'].bytes_list.value[0]
    set_list(e, 'image/encoded', [jpeg[:1000]])  # a truncated JPEG


def _no_boxes(e):
    for key in (*record_checks.BOX_KEYS, record_checks.LABEL_KEY, 'image/object/class/text'):
        set_list(e, key, [])


def _too_many_boxes(e):
    for key in record_checks.BOX_KEYS + (record_checks.LABEL_KEY,):
        feature = e.features.feature[key]
        values = getattr(feature, feature.WhichOneof('kind')).value
        values[:] = list(values) * 101
    del e.features.feature['image/object/class/text']


def _tiny_image(e):
    from PIL import Image
    set_list(e, 'image/encoded', [synthetic.encode(Image.new('RGB', (1, 1)))])
    set_list(e, 'image/height', [1])
    set_list(e, 'image/width', [1])


# rule -> (how to break the record at index 1, text the message must hold)
RECORD_RULES = {
    'missing_key': (_missing_key, 'required key image/object/bbox/ymax is missing'),
    'wrong_type': (_wrong_type, 'image/object/class/label holds float_list, expected int64_list'),
    'undecodable_image': (_undecodable, 'image/encoded (1000 bytes) does not decode: jpeg::'
                                          'Uncompress failed'),
    'length_mismatch': (_length_mismatch, 'lists of different lengths: ymin 1, xmin 1, ymax 1, '
                                          'xmax 1, label 2'),
    'box_outside': (_box_outside, 'box 0 [ymin 0.104167, xmin 0.15625, ymax 0.729167, '
                                  'xmax 1.25]: outside [0, 1]'),
    'box_min_ge_max': (_min_ge_max, 'box 0 [ymin 0.9, xmin 0.15625, ymax 0.729167, xmax '
                                    '0.703125]: min > max'),
    'zero_area_box': (_zero_area, 'box 0 [ymin 0.104167, xmin 0.5, ymax 0.729167, xmax 0.5]: '
                                  'zero area'),
    'label_out_of_range': (_label_out_of_range, 'box 0: label 4 is outside 1..3'),
    'size_mismatch': (_size_mismatch, 'image/width=100 but the image is 128x96'),
    'no_boxes': (_no_boxes, 'no boxes'),
    'too_many_boxes': (_too_many_boxes, '101 boxes; training keeps the first 100 '
                                        '(--max_num_bboxes_in_training=100)'),
    'tiny_image': (_tiny_image, 'the image is 1x1 px (width x height)'),
}


def write_records(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for e in examples:
            writer.write(e if isinstance(e, bytes) else e.SerializeToString())
    return str(path)


def issues_of(report, code):
    return [i for i in report.issues if i.code == code]


def test_good_records_pass(tmp_path):
    path = write_records(tmp_path / 'good.tfrecord', [good_example(str(i)) for i in range(3)])
    report = record_checks.validate([path], SETTINGS)
    assert report.ok and report.issues == [] and report.records == 3 and report.complete


@pytest.mark.parametrize('code', sorted(RECORD_RULES))
def test_record_rule(code, tmp_path):
    breaker, expected = RECORD_RULES[code]
    bad = good_example('1002')
    breaker(bad)
    path = write_records(tmp_path / 'data.tfrecord', [good_example('1001'), bad,
                                                      good_example('1003')])
    report = record_checks.validate([path], SETTINGS)
    [issue] = report.issues
    assert issue.code == code and issue.severity == record_checks.RULES[code][0]
    assert issue.line().startswith(f"{path} record 1 (source_id '1002', 1002.jpg): {expected}"), \
        issue.line()
    assert report.ok == (issue.severity != record_checks.ERROR)


def test_is_crowd_needs_one_flag_per_box(tmp_path):
    """Model Garden gathers boxes by the is_crowd flags: a list of another length
    drops boxes silently or fails mid-training."""
    bad, fine = good_example('1'), good_example('2')
    bad.features.feature['image/object/is_crowd'].int64_list.value[:] = [0, 1]
    fine.features.feature['image/object/is_crowd'].int64_list.value[:] = [1]
    path = write_records(tmp_path / 'data.tfrecord', [bad, fine])
    [issue] = record_checks.validate([path], SETTINGS).issues
    assert issue.line() == (f"{path} record 0 (source_id '1', 1.jpg): lists of different "
                            'lengths: ymin 1, xmin 1, ymax 1, xmax 1, label 1, is_crowd 2')


def test_not_an_example(tmp_path):
    path = write_records(tmp_path / 'data.tfrecord', [good_example('1'), b'\xff\x00 not a proto'])
    [issue] = record_checks.validate([path], SETTINGS).issues
    assert issue.code == 'not_an_example'
    assert issue.line().startswith(f'{path} record 1: not a tf.train.Example')


def test_unreadable_file_names_the_last_good_record(tmp_path):
    path = write_records(tmp_path / 'data.tfrecord', [good_example(str(i)) for i in range(3)])
    data = open(path, 'rb').read()
    with open(path, 'wb') as f:
        f.write(data[:-40])  # truncated in the middle of record 2
    report = record_checks.validate([path], SETTINGS)
    [issue] = report.issues
    assert issue.code == 'unreadable_file' and report.records == 2
    assert issue.line().startswith(f'{path}: cannot read past record 1 (2 read)')


def test_duplicate_source_id_names_both_records(tmp_path):
    first = write_records(tmp_path / 'a.tfrecord', [good_example('7'), good_example('8')])
    second = write_records(tmp_path / 'b.tfrecord', [good_example('9'), good_example('7')])
    [issue] = record_checks.validate([first, second], SETTINGS).issues
    assert issue.code == 'duplicate_source_id'
    assert issue.line() == (f"{second} record 1 (source_id '7', 7.jpg): source_id also used by "
                            f"{first} record 0 (source_id '7', 7.jpg)")


def test_zero_based_labels_get_their_own_message(tmp_path):
    """Labels 0..N-1: the classic off-by-one of other tools' converters."""
    examples = [good_example(str(i), boxes=[(10, 20, 70, 90)] * 2, labels=[i % 3, (i + 1) % 3])
                for i in range(4)]
    path = write_records(tmp_path / 'data.tfrecord', examples)
    report = record_checks.validate([path], SETTINGS)
    [zero_based] = issues_of(report, 'zero_based_labels')
    assert zero_based.line().startswith(
        f"{path} record 0 (source_id '0', 0.jpg): labels look 0-based: they run 0..2 with "
        '--num_classes=3, but labels are 1..num_classes (0 is the background). Add 1')
    assert len(issues_of(report, 'label_out_of_range')) == 3  # each record with a label 0
    assert 'box 0: label 0 is outside 1..3 (0 is the background class)' in report.issues[0].line()
    # With labels up to N, a label 0 is only out of range, not a 0-based set.
    path = write_records(tmp_path / 'other.tfrecord',
                         [good_example('1', labels=[0]), good_example('2', labels=[3])])
    assert not issues_of(record_checks.validate([path], SETTINGS), 'zero_based_labels')


def test_files_without_records_are_an_error_of_the_set(tmp_path):
    empty = tmp_path / 'train-0.tfrecord'
    empty.write_bytes(b'')
    report = record_checks.validate([str(empty)], SETTINGS)
    [issue] = report.issues
    assert issue.code == 'no_records' and not report.ok and report.set_errors() == [issue]
    assert issue.line() == (f'{empty}: the 1 file(s) read hold no records (0-byte or empty '
                            'TFRecord files): nothing to train or evaluate on. Check the glob '
                            'and how the files were written.')


def test_a_set_without_any_box_is_an_error_but_a_few_negatives_are_fine(tmp_path):
    negatives = [good_example(str(i), boxes=[], labels=[]) for i in range(3)]
    path = write_records(tmp_path / 'neg.tfrecord', negatives)
    report = record_checks.validate([path], SETTINGS)
    assert [i.code for i in report.set_errors()] == ['no_boxes_in_set'] and not report.ok
    assert 'none of the 3 records read holds a box' in report.set_errors()[0].message
    mixed = write_records(tmp_path / 'mixed.tfrecord', negatives + [good_example('9')])
    assert record_checks.validate([mixed], SETTINGS).ok


def test_every_rule_has_a_test():
    tested = set(RECORD_RULES) | {'not_an_example', 'unreadable_file', 'duplicate_source_id',
                                  'zero_based_labels', 'no_records', 'no_boxes_in_set',
                                  'low_anchor_coverage'}  # in test_anchor_coverage.py
    assert tested == set(record_checks.RULES)


def test_docs_rule_table_is_generated_from_the_rules():
    with open(os.path.join(ROOT, 'docs', 'data.md')) as f:
        page = f.read()
    assert record_checks.rules_table() in page, (
        'docs/data.md rule table is stale: paste the output of `python -c "from '
        'object_detection_algo.data import record_checks; print(record_checks.rules_table())"`')


def test_histogram_and_box_sizes(tmp_path):
    # 96x128 images at image_size 128,128: scale 1; boxes 60x70 and 6x6 px.
    examples = [good_example('1', boxes=[(10, 20, 70, 90), (10, 20, 16, 26)], labels=[2, 2]),
                good_example('2', boxes=[(10, 20, 70, 90)], labels=[1])]
    path = write_records(tmp_path / 'data.tfrecord', examples)
    report = record_checks.validate([path], SETTINGS)
    assert dict(report.histogram) == {1: 1, 2: 2}
    assert report.class_text == {1: 'circle', 2: 'square'}
    stats = report.box_stats()
    assert stats['count'] == 3
    assert stats['min'] == pytest.approx(6.0, abs=1e-3)
    assert stats['max'] == pytest.approx(np.sqrt(60 * 70), abs=1e-3)
    # At 640,640 the 96x128 image is scaled by 5: 30 px.
    big = record_checks.validate([path], record_checks.CheckSettings(3, (640, 640))).box_stats()
    assert big['min'] == pytest.approx(30.0, abs=1e-3)
    summary = report.summary()
    assert 'Classes (label text: boxes): 1 circle: 1, 2 square: 2' in summary
    assert 'Box size at image_size 128,128 (sqrt of area, px): min 6.0, median 64.8, max 64.8.' \
        in summary
    # The 6x6 box is a quarter of the smallest anchor's side: no anchor covers it.
    assert 'Anchor coverage at image_size 128,128: 2 of 3 boxes (66.7%) have an anchor with ' \
           'IoU >= 0.5' in summary
    assert report.one_line().endswith('no errors, 1 warning; classes 1 circle: 1, 2 square: 2; '
                                      'boxes 6-65 px (median 65); anchor coverage 66.7%.')


def test_sample_is_bounded_and_spread_over_files(tmp_path):
    files = [write_records(tmp_path / f'part-{i}.tfrecord',
                           [good_example(f'{i}{j:02d}') for j in range(5)]) for i in range(4)]
    report = record_checks.validate(files, SETTINGS, max_records=8)
    assert report.records == 8 and not report.complete
    assert report.sample_note == 'up to 2 records from each of 4 of 4 files'
    assert 'a sample: up to 2 records from each of 4 of 4 files' in report.summary()
    # More files than the bound: one record from each of evenly spaced files.
    report = record_checks.validate(files, SETTINGS, max_records=2)
    assert report.files == [files[0], files[2]] and report.records == 2
    # A bound above the set reads everything and says so.
    report = record_checks.validate(files, SETTINGS, max_records=100)
    assert report.records == 20 and report.complete


def run_validate(*args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    return subprocess.run([sys.executable, '-m', 'object_detection_algo', 'validate', *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_validate_command_exit_status_and_json(tmp_path):
    good = write_records(tmp_path / 'good-0.tfrecord', [good_example('1'), good_example('2')])
    bad_example = good_example('3')
    _zero_area(bad_example)
    write_records(tmp_path / 'bad-0.tfrecord', [bad_example, good_example('4', boxes=[], labels=[])])

    ok = run_validate(f'--data_path={good}', '--num_classes=3', '--image_size=128,128')
    assert ok.returncode == 0, ok.stderr
    assert 'Result: OK' in ok.stdout

    report_path = tmp_path / 'report.json'
    failed = run_validate(f'--data_path={tmp_path}/*.tfrecord', '--num_classes=3',
                          f'--report={report_path}')
    assert failed.returncode == 1, failed.stderr
    assert f"{tmp_path}/bad-0.tfrecord record 0 (source_id '3', 3.jpg): box 0" in failed.stdout
    assert 'Result: 1 error(s)' in failed.stdout
    report = json.loads(report_path.read_text())
    assert report['counts'] == {'error': 1, 'warning': 0, 'info': 1}
    assert report['counts_by_rule'] == {'no_boxes': 1, 'zero_area_box': 1}
    assert report['records_checked'] == 4 and report['all_records_checked']

    nothing = run_validate(f'--data_path={tmp_path}/none-*', '--num_classes=3')
    assert nothing.returncode == 2 and 'matches no files' in nothing.stderr


@pytest.mark.parametrize('flag', ['--num_classes=0', '--max_records=0'])
def test_validate_command_rejects_bad_numbers(flag, tmp_path, capsys):
    from object_detection_algo import __main__ as cli_main
    args = ['validate', f'--data_path={tmp_path}/*', '--num_classes=3', flag]
    assert cli_main.main(args) == 2
    assert f'error: {flag}: must be >= 1.' in capsys.readouterr().err
