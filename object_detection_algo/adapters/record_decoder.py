"""Model Garden's tf.Example decoder, made tolerant of what real converters
write (docs/contract.md, "The data"): no or non-numeric source_id, no
height/width (taken from the image), no area (computed from the boxes and the
decoded image size).

Model Garden internals touched: `TfExampleDecoder._keys_to_features` (the
source_id feature gets a default) and `_decode_areas` (overridden), both
private; `decode()`'s output keys.
"""

import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder

# Ids the COCO evaluator can hold: int64, with room to spare.
_ID_BUCKETS = 2 ** 62
_MAX_ID_DIGITS = 18


def numeric_source_id(source_id: tf.Tensor, encoded_image: tf.Tensor) -> tf.Tensor:
    """A decimal string id the COCO evaluator can turn into int64.

    Numeric ids are kept. Others (file names, as the TF Object Detection API
    writes) are hashed; a missing id is made from the image bytes.
    """
    is_number = tf.strings.regex_full_match(source_id, f'[0-9]{{1,{_MAX_ID_DIGITS}}}')
    seed = tf.where(tf.strings.length(source_id) > 0, source_id, encoded_image)
    hashed = tf.strings.as_string(tf.strings.to_hash_bucket_fast(seed, _ID_BUCKETS))
    return tf.where(is_number, source_id, hashed)


class RecordDecoder(tf_example_decoder.TfExampleDecoder):

    def __init__(self):
        super().__init__()
        self._keys_to_features['image/source_id'] = tf.io.FixedLenFeature(
            (), tf.string, default_value='')

    def _decode_areas(self, parsed_tensors):
        # The decoded image size is not known here; decode() fills empty areas.
        return parsed_tensors['image/object/area']

    def decode(self, serialized_example):
        decoded = super().decode(serialized_example)
        ids = tf.io.parse_single_example(serialized_example, {
            'image/source_id': tf.io.FixedLenFeature((), tf.string, default_value=''),
            'image/encoded': tf.io.FixedLenFeature((), tf.string)})
        decoded['source_id'] = numeric_source_id(ids['image/source_id'], ids['image/encoded'])

        shape = tf.shape(decoded['image'], out_type=tf.int64)
        decoded['height'], decoded['width'] = shape[0], shape[1]
        boxes = decoded['groundtruth_boxes']
        pixel_area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
                      * tf.cast(shape[0] * shape[1], tf.float32))
        area = decoded['groundtruth_area']
        decoded['groundtruth_area'] = tf.cond(
            tf.equal(tf.size(area), tf.size(pixel_area)), lambda: area, lambda: pixel_area)
        return decoded
