"""The anchor coverage: each box's best IoU with any anchor, checked against
Model Garden's own anchors and against values worked out by hand; the kinds of
uncovered boxes; measured suggestions; the warning on a set whose boxes the
anchors miss, and none on the demo's own data."""

import logging
import time

import numpy as np
import pytest
import tensorflow as tf
from absl import logging as absl_logging

from object_detection_algo import demo
from object_detection_algo.data import anchor_coverage as ac
from object_detection_algo.data import dataset_writer, record_checks, synthetic
from object_detection_algo.training import cli, data_check
from test_record_checks import write_records


def anchors(image_size=(128, 128), min_level=3, max_level=3, anchor_size=4.0,
            aspect_ratios=(1.0,), num_scales=1, match_threshold=0.5):
    return ac.AnchorSettings(tuple(image_size), min_level, max_level, anchor_size,
                             tuple(aspect_ratios), num_scales, match_threshold)


def model_garden_best_ious(boxes, settings):
    """Every anchor Model Garden makes, and each box's best IoU with them, by its own IoU."""
    from official.vision.ops import anchor, iou_similarity
    made = anchor.Anchor(settings.min_level, settings.max_level, settings.num_scales,
                         list(settings.aspect_ratios), settings.anchor_size,
                         list(settings.input_size)).multilevel_boxes
    every = tf.concat([tf.reshape(level, [-1, 4]) for level in made.values()], axis=0)
    ious = iou_similarity.iou(tf.constant(boxes, tf.float32), every)
    return tf.reduce_max(ious, axis=1).numpy(), int(every.shape[0])


@pytest.mark.parametrize('settings', [
    anchors((128, 192), 3, 5, 3.0, (0.5, 1.0, 2.0), 3),  # the demo's levels, a wide input
    anchors((100, 100), 3, 7, 4.0, (1.0, 2.0, 0.5), 3),  # the job's defaults, padded to 128
    anchors((256, 256), 4, 6, 2.0, (1.0, 3.0), 2),
])
def test_best_iou_is_the_best_over_every_model_garden_anchor(settings):
    rng = np.random.RandomState(0)
    h, w = settings.input_size
    centre = rng.uniform(0, 1, (400, 2)) * (h, w)
    size = np.exp(rng.uniform(np.log(4), np.log(2 * max(h, w)), (400, 2)))
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1)
    boxes = np.clip(boxes, 0, [h, w, h, w])  # as the parser clips them to the image
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    expected, num_anchors = model_garden_best_ious(boxes, settings)
    levels = range(settings.min_level, settings.max_level + 1)
    per_place = settings.num_scales * len(settings.aspect_ratios)
    assert num_anchors == per_place * sum((h >> level) * (w >> level) for level in levels)
    np.testing.assert_allclose(ac.best_ious(boxes, settings), expected, atol=1e-5)


def test_the_check_measures_the_anchors_the_training_parser_builds():
    """data_check's settings against the arguments the job's input pipeline
    gives Model Garden's Parser (adapters/retinanet_task.py)."""
    from object_detection_algo.adapters import retinanet_task
    from object_detection_algo.training import experiment, flag_table
    settings = flag_table.resolve({
        'training_data_path': 'unused', 'validation_data_path': 'unused', 'job-dir': '/tmp/x',
        'num_classes': '3', 'max_steps': '900', 'image_size': '300,200', 'fpn_min_level': '4',
        'fpn_max_level': '6', 'anchor_size': '3', 'bbox_aspect_ratios': '1,3'})
    params = experiment.build(settings, ['t'], ['v'], validation_steps=1)
    parser = retinanet_task.parser_arguments(params.task, params.task.train_data)
    measured = data_check.check_settings(settings).anchors()
    assert list(measured.input_size) == list(parser['output_size']) == [320, 256]
    assert (measured.min_level, measured.max_level, measured.num_scales, measured.anchor_size,
            list(measured.aspect_ratios), measured.match_threshold) == (
        parser['min_level'], parser['max_level'], parser['num_scales'], parser['anchor_size'],
        list(parser['aspect_ratios']), parser['match_threshold'])


def test_best_iou_and_kind_worked_out_by_hand():
    """One level, one 32x32 anchor shape on an 8 px grid: centres at 4, 12, 20, ..."""
    settings = anchors()
    boxes = {  # [ymin, xmin, ymax, xmax] px -> (best IoU, kind)
        'on an anchor': ([4, 4, 36, 36], 1.0, ''),
        'a 24 px box 4 px off the grid in x and y': ([12, 12, 36, 36], 576 / 1024, ''),
        'a 16 px box: a quarter of the anchor': ([12, 12, 28, 28], 256 / 1024, 'too_small'),
        'the whole input': ([0, 0, 128, 128], 1024 / 128 ** 2, 'too_large'),
        # 64x8, area 512 = 0.5 x 32^2 (not too small); width/height 8, over 2.25x off 1.
        'a 64x8 bar': ([16, 4, 24, 68], 256 / (512 + 1024 - 256), 'too_elongated'),
    }
    pixels = np.array([b for b, _, _ in boxes.values()], np.float64)
    best = ac.best_ious(pixels, settings)
    np.testing.assert_allclose(best, [iou for _, iou, _ in boxes.values()], atol=1e-9)
    kinds = ac.uncovered_kinds(pixels, best, settings)
    assert dict(zip(boxes, kinds)) == {k: kind for k, (_, _, kind) in boxes.items()}

    # 16 px anchors on the same 8 px grid: a 16 px box half a cell off in x and y
    # overlaps 12x12: 144 / (256 + 256 - 144). Its size and shape are in reach:
    # it falls between anchors.
    small = anchors(anchor_size=2.0)
    box = np.array([[8, 8, 24, 24]], np.float64)
    [iou] = ac.best_ious(box, small)
    assert iou == pytest.approx(144 / 368)
    assert list(ac.uncovered_kinds(box, np.array([iou]), small)) == ['between_anchors']


def test_elongation_limit_is_where_the_best_iou_reaches_the_threshold():
    """A box q times wider (relative) than an anchor of its area, centred on it,
    has IoU 1 / (2 sqrt(q) - 1): at the limit it is exactly the threshold."""
    for threshold in (0.4, 0.5, 0.6):
        q = ac.elongation_limit(threshold)
        box, anchor = (q ** 0.5, 1 / q ** 0.5), (1.0, 1.0)
        inter = min(box[0], anchor[0]) * min(box[1], anchor[1])
        assert inter / (1 + 1 - inter) == pytest.approx(threshold)


def test_boxes_are_placed_as_the_parser_resizes_the_image():
    """A 480x640 image into 640,640: scale 1 (the width binds); into 256,256:
    0.4, the height 192."""
    boxes = ac.Boxes.of([[0.5, 0.25, 1.0, 0.5]], [[480, 640]], [1])
    np.testing.assert_allclose(boxes.at_input((640, 640)), [[240, 160, 480, 320]])
    np.testing.assert_allclose(boxes.at_input((256, 256)), [[96, 64, 192, 128]])


def test_thousands_of_boxes_take_well_under_a_second():
    rng = np.random.RandomState(1)
    corner = rng.uniform(0, 0.7, (5000, 2))
    normalized = np.concatenate([corner, corner + rng.uniform(0.02, 0.3, (5000, 2))], axis=1)
    boxes = ac.Boxes.of(normalized, np.tile([480, 640], (5000, 1)), rng.randint(1, 4, 5000))
    settings = anchors((640, 640), 3, 7, 4.0, (1.0, 2.0, 0.5), 3)
    start = time.process_time()
    ac.best_ious(boxes.at_input(settings.input_size), settings)
    assert time.process_time() - start < 0.5


# --- on records, through the validator --------------------------------------------

TINY = dict(num_classes=3, image_size=(128, 128), max_level=5)  # the tests' job flags


def square_records(path, sides, ratio=1.0, per_image=3):
    """128x128 shapes images holding boxes of the given sides (sqrt of area, px)
    and width/height `ratio`, spread over the image."""
    rng = np.random.RandomState(len(sides))
    examples = []
    for n, start in enumerate(range(0, len(sides), per_image)):
        image = synthetic.encode(synthetic.draw_image(rng, size=128)[0])
        boxes = []
        for k, side in enumerate(sides[start:start + per_image]):
            w, h = side * ratio ** 0.5, side / ratio ** 0.5
            y, x = 5 + 40 * k + rng.uniform(0, 3), 64 - w / 2 + rng.uniform(-10, 10)
            boxes.append((y, x, y + h, x + w))
        examples.append(dataset_writer.make_example(
            image, boxes, [1 + k % 3 for k in range(len(boxes))], 128, 128,
            source_id=str(n + 1), class_names=synthetic.CLASS_NAMES, filename=f'{n + 1}.jpg'))
    return write_records(path, examples)


def coverage_of(path, **settings):
    report = record_checks.validate([path], record_checks.CheckSettings(**{**TINY, **settings}))
    return report, [i for i in report.issues if i.code == 'low_anchor_coverage']


def test_tiny_boxes_warn_with_a_measured_anchor_size_that_covers_them(tmp_path):
    path = square_records(tmp_path / 'tiny.tfrecord', list(np.linspace(10, 14, 30)))
    report, [warning] = coverage_of(path)  # anchors from 32 px: all too small
    assert report.ok and report.count(record_checks.WARNING) == 1
    assert report.coverage.share == 0 and report.coverage.by_kind() == {'too_small': 30}
    assert warning.message.startswith(
        '1 circle: 0 of 10 boxes (0.0%), 2 square: 0 of 10 boxes (0.0%), 3 triangle: 0 of 10 '
        'boxes (0.0%) have an anchor with IoU >= 0.5 at image_size 128,128: under 95% (all '
        'classes: 0.0%; not covered: 30 too small). Measured single-flag changes: ')
    by_flag = {s.flag: s for s in report.coverage.suggestions}
    assert set(by_flag) >= {'anchor_size', 'image_size'}
    suggested = by_flag['anchor_size']
    assert float(suggested.value) < 4 and suggested.share > 0.5
    assert f'--anchor_size={suggested.value}: {ac.percent(suggested.share)}' in warning.message
    # Taking it covers what it said.
    again, _ = coverage_of(path, anchor_size=float(suggested.value))
    assert again.coverage.share == pytest.approx(suggested.share)
    summary = report.summary()
    assert 'Anchor coverage at image_size 128,128: 0 of 30 boxes (0.0%) have an anchor with ' \
           'IoU >= 0.5; anchors 32-203 px (anchor_size 4 x 2^3..2^5, 3 scales), aspect ratios ' \
           '1, 2, 0.5.' in summary
    assert "  Not covered: 30 too small (area under 0.5 x the smallest anchor's, 32x32 px):" \
           in summary
    assert f"    too small: {path} record 0 (source_id '1', 1.jpg): box 0 (1 circle), 10x10 px, " \
           'best IoU 0.' in summary


def test_elongated_boxes_get_an_aspect_ratio_suggestion(tmp_path):
    path = square_records(tmp_path / 'bars.tfrecord', [28] * 12, ratio=4.0)  # 56x14 px
    report, [warning] = coverage_of(path, anchor_size=3.0, aspect_ratios=(1.0,))
    assert report.coverage.by_kind() == {'too_elongated': 12}
    best = report.coverage.suggestions[0]
    assert best.flag == 'bbox_aspect_ratios' and best.share == 1
    assert best.value in ('1,2', '1,3', '1,4')  # 2 is within 2.25x of the boxes' 4
    assert f'Measured single-flag changes: --bbox_aspect_ratios={best.value}: 100%' \
        in warning.message
    ratios = tuple(float(r) for r in best.value.split(','))
    again, warnings = coverage_of(path, anchor_size=3.0, aspect_ratios=ratios)
    assert again.coverage.share == 1 and warnings == []


def test_the_json_report_carries_the_coverage_and_the_uncovered_boxes(tmp_path):
    path = square_records(tmp_path / 'mixed.tfrecord', [12, 40, 40, 40, 40, 40])
    report, [_] = coverage_of(path)
    cov = report.as_dict()['anchor_coverage']
    assert (cov['boxes'], cov['covered'], cov['share']) == (6, 5, round(5 / 6, 4))
    assert cov['image_size'] == [128, 128] and cov['match_threshold'] == 0.5
    assert cov['uncovered_by_kind'] == {'too_small': 1}
    [box] = cov['uncovered']
    assert {k: box[k] for k in ('file', 'index', 'source_id', 'filename', 'box', 'label',
                                'kind', 'width', 'height')} == {
        'file': path, 'index': 0, 'source_id': '1', 'filename': '1.jpg', 'box': 0, 'label': 1,
        'kind': 'too_small', 'width': 12.0, 'height': 12.0}
    assert cov['by_class']['1'] == {'text': 'circle', 'boxes': 2, 'covered': 1, 'share': 0.5}
    assert cov['suggestions'] and all(s['share'] > 5 / 6 for s in cov['suggestions'])


def test_crowd_boxes_are_left_out_as_training_leaves_them(tmp_path):
    path = square_records(tmp_path / 'crowd.tfrecord', [12, 40, 40])
    example = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(path))).numpy())
    example.features.feature['image/object/is_crowd'].int64_list.value[:] = [1, 0, 0]
    path = write_records(tmp_path / 'crowd2.tfrecord', [example])
    report, warnings = coverage_of(path)
    assert report.coverage.total == 2 and report.coverage.share == 1 and warnings == []


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory):
    """The demo's own dataset, as `python -m object_detection_algo synthetic` writes it."""
    return synthetic.write_dataset(str(tmp_path_factory.mktemp('demo_data')))


def demo_settings(data):
    """The job's settings for the demo, through the job's own flag parsing."""
    from absl import flags
    cli.define_flags()
    flags.FLAGS.unparse_flags()
    cli.parse(['entrypoint.py', f'--training_data_path={data["train"]}',
               f'--validation_data_path={data["val"]}', '--job-dir=/tmp/unused',
               *(f'--{k}={v}' for k, v in demo.DEMO_FLAGS.items())])
    return cli.resolved()[0]


class Collected(logging.Handler):
    """The (level, message) of each record logged, as the job's log shows them."""

    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        self.lines.append((record.levelname, record.getMessage()))


def test_the_demo_data_passes_with_one_line_per_split(demo_data, tmp_path):
    settings = demo_settings(demo_data)
    check = data_check.check_settings(settings)
    assert (check.anchor_size, check.aspect_ratios, check.max_level) == (3.0, (1.0,), 5)
    logger, verbosity = absl_logging.get_absl_logger(), absl_logging.get_verbosity()
    collected = Collected()
    logger.addHandler(collected)
    absl_logging.set_verbosity(absl_logging.INFO)  # as the job logs
    try:
        data_check.run(settings, data_check.match(settings), str(tmp_path / 'checkpoints'))
    finally:
        logger.removeHandler(collected)
        absl_logging.set_verbosity(verbosity)
    lines = collected.lines
    check_lines = [(level, m) for level, m in lines if m.startswith('Data check')]
    assert [level for level, _ in check_lines] == ['INFO'] * 3
    train, val, passed = (m for _, m in check_lines)
    assert train.startswith(f'Data check of --training_data_path={demo_data["train"]}: 512 '
                            'records in 2 file(s) (all read, ')
    assert train.endswith(' s): no errors, no warnings; classes 1 circle: 434, 2 square: 442, '
                          '3 triangle: 422; boxes 21-63 px (median 40); anchor coverage 100%.')
    assert val.startswith(f'Data check of --validation_data_path={demo_data["val"]}: 128 records')
    assert val.endswith('no errors, no warnings; classes 1 circle: 92, 2 square: 118, '
                        '3 triangle: 110; boxes 21-63 px (median 40); anchor coverage 100%.')
    assert passed == f'Data check passed; report: {tmp_path}/checkpoints/preflight_report.json'
