"""The record decoder on the record shapes real converters write."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from object_detection_algo.adapters.record_decoder import RecordDecoder
from object_detection_algo.data import records, synthetic
from object_detection_algo.errors import DataError


def _image(mode='RGB', size=(40, 60)):
    rng = np.random.RandomState(0)
    shape = (size[0], size[1], 3) if mode == 'RGB' else size
    return Image.fromarray(rng.randint(0, 255, shape).astype(np.uint8), mode)


def _decode(example):
    decoded = RecordDecoder().decode(tf.constant(example.SerializeToString()))
    return {k: v.numpy() for k, v in decoded.items()}


def _example(**kwargs):
    image = kwargs.pop('image', _image())
    fmt = kwargs.pop('fmt', 'jpeg')
    boxes = kwargs.pop('boxes', [(4, 6, 20, 30)])
    labels = kwargs.pop('labels', [2])
    return synthetic.make_example(synthetic.encode(image, fmt), boxes, labels,
                                  image.height, image.width, fmt=fmt, **kwargs)


def test_numeric_source_id_is_kept():
    assert _decode(_example(source_id='42'))['source_id'] == b'42'


def test_file_name_source_id_becomes_a_stable_number():
    """The TF Object Detection API writes file names; the COCO evaluator needs numbers."""
    a = _decode(_example(source_id='dogs/img_001.jpg', filename='img_001.jpg'))['source_id']
    again = _decode(_example(source_id='dogs/img_001.jpg'))['source_id']
    other = _decode(_example(source_id='dogs/img_002.jpg'))['source_id']
    assert a.isdigit() and a == again and a != other
    assert 0 <= int(a) < 2 ** 63


def test_missing_or_empty_source_id_comes_from_the_image_bytes():
    one = _decode(_example())['source_id']
    empty = _decode(_example(source_id=''))['source_id']
    other_image = _decode(_example(image=_image(size=(41, 60))))['source_id']
    assert one.isdigit() and one == empty and one != other_image


def test_grayscale_png_without_size_or_area():
    gray = _image('L', size=(50, 80))
    decoded = _decode(_example(image=gray, fmt='png', with_size=False,
                               boxes=[(10, 20, 30, 60)], labels=[1]))
    assert decoded['image'].shape == (50, 80, 3)
    assert (decoded['height'], decoded['width']) == (50, 80)
    assert decoded['groundtruth_area'] == pytest.approx([20 * 40])


def test_image_without_boxes_is_a_negative_example():
    decoded = _decode(_example(boxes=[], labels=[]))
    assert decoded['groundtruth_boxes'].shape == (0, 4)
    assert decoded['groundtruth_classes'].shape == (0,)


def test_empty_glob_names_the_pattern(tmp_path):
    with pytest.raises(DataError, match=r'--training_data_path=.*nothing-\*.tfrecord matches no files'):
        records.match_files(str(tmp_path / 'nothing-*.tfrecord'), 'training_data_path')


def test_glob_and_count(shapes_data):
    files = records.match_files(shapes_data['val'], 'validation_data_path')
    assert len(files) == 2
    assert records.count_records(files) == 8
