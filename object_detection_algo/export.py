"""The SavedModel of CONTRACT section 5, and its safe replacement in R/model."""

import json
import posixpath
from typing import Any, Dict, Optional

import tensorflow as tf
from absl import logging
from official.vision.serving import detection

SIGNATURE_INPUTS = {'encoded_image': tf.string, 'key': tf.string}
METRICS_FILE = 'metrics.json'


class ServingModule(detection.DetectionModule):
    """Model Garden's detection module with the original algorithm's signature:
    raw image bytes and keys in; boxes normalized to the original image and
    float classes and counts out. Each image is decoded and resized on its own,
    so one batch may mix sizes and formats."""

    def _build_inputs(self, encoded_image):
        image = tf.io.decode_image(encoded_image, channels=3, expand_animations=False)
        image.set_shape([None, None, 3])
        return super()._build_inputs(image)

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.string, name='encoded_image'),
        tf.TensorSpec([None], tf.string, name='key')])
    def serve_encoded(self, encoded_image, key):
        out = self.serve(encoded_image)
        return {
            'detection_boxes': tf.cast(out['detection_boxes'], tf.float32),
            'detection_classes': tf.cast(out['detection_classes'], tf.float32),
            'detection_scores': tf.cast(out['detection_scores'], tf.float32),
            'num_detections': tf.cast(out['num_detections'], tf.float32),
            'key': tf.identity(key),
        }

    def get_inference_signatures(self, function_keys=None):
        return {'serving_default': self.serve_encoded.get_concrete_function()}


def export_saved_model(params, checkpoint_path: str, export_dir: str) -> None:
    """Builds a float32 serving model, loads the checkpoint's weights, saves."""
    params = params.replace(task={'export_config': {
        'output_normalized_coordinates': True,
        'cast_num_detections_to_float': True,
        'cast_detection_classes_to_float': True}})
    policy = tf.keras.mixed_precision.global_policy()
    tf.keras.mixed_precision.set_global_policy('float32')  # serve on CPU and GPU
    try:
        module = ServingModule(params=params, batch_size=None,
                               input_image_size=list(params.task.model.input_size[:2]))
        tf.train.Checkpoint(model=module.model).read(checkpoint_path).expect_partial()
        tf.saved_model.save(module, export_dir, signatures=module.get_inference_signatures())
    finally:
        tf.keras.mixed_precision.set_global_policy(policy)


def _to_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    return value


def write_json(path: str, content: Dict[str, Any]) -> None:
    with tf.io.gfile.GFile(path, 'w') as f:
        f.write(json.dumps(_to_json(content), indent=2, sort_keys=True) + '\n')


def read_json(path: str) -> Optional[Dict[str, Any]]:
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as f:
        return json.loads(f.read())


def is_complete(model_dir: str) -> bool:
    return (tf.io.gfile.exists(posixpath.join(model_dir, 'saved_model.pb'))
            and tf.io.gfile.exists(posixpath.join(model_dir, METRICS_FILE)))


class BestModel:
    """Keeps R/model a complete SavedModel at all times.

    A new best is written whole into a staging folder beside the checkpoints,
    then swapped in; the previous best is kept aside until the swap is done,
    and `recover()` puts it back if a job died in between.
    """

    def __init__(self, model_dir: str, work_dir: str):
        self.model_dir = model_dir
        self.staging = posixpath.join(work_dir, 'best_model_staging')
        self.previous = posixpath.join(work_dir, 'best_model_previous')

    def recover(self) -> None:
        if tf.io.gfile.exists(self.staging):
            tf.io.gfile.rmtree(self.staging)  # an export that never finished
        if tf.io.gfile.exists(self.previous):
            if is_complete(self.model_dir):
                tf.io.gfile.rmtree(self.previous)
            else:
                logging.warning('Restoring the previous best model into %s '
                                '(the last replacement was interrupted).', self.model_dir)
                if tf.io.gfile.exists(self.model_dir):
                    tf.io.gfile.rmtree(self.model_dir)
                tf.io.gfile.rename(self.previous, self.model_dir)

    def metrics(self) -> Optional[Dict[str, Any]]:
        if not is_complete(self.model_dir):
            return None
        return read_json(posixpath.join(self.model_dir, METRICS_FILE))

    def replace(self, params, checkpoint_path: str, metrics: Dict[str, Any]) -> None:
        self.recover()
        export_saved_model(params, checkpoint_path, self.staging)
        write_json(posixpath.join(self.staging, METRICS_FILE), metrics)
        tf.io.gfile.makedirs(posixpath.dirname(self.model_dir))
        if tf.io.gfile.exists(self.model_dir):
            tf.io.gfile.rename(self.model_dir, self.previous)
        tf.io.gfile.rename(self.staging, self.model_dir)
        if tf.io.gfile.exists(self.previous):
            tf.io.gfile.rmtree(self.previous)
