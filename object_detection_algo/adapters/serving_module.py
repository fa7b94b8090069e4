"""Model Garden's detection export module with the original algorithm's
serving signature (docs/contract.md, "The exported model"): raw image bytes
and keys in; boxes normalized to the original image and float classes and
counts out. Each image is decoded and resized on its own, so one batch may mix
sizes and formats.

Model Garden internals touched: `DetectionModule._build_inputs` (overridden to
decode first) and `serve()`'s output keys. `save` writes the module without
tf_keras' traces of every layer's call (tf_keras' `keras_option_scope`, what
`model.save(save_traces=False)` uses): the serving signature is all the
contract needs, and the traces took most of each export's time.
"""

import tensorflow as tf
from official.vision.serving import detection
from tf_keras.src.saving.legacy.saved_model import utils as keras_saved_model


class ServingModule(detection.DetectionModule):

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

    def save(self, export_dir: str) -> None:
        """The SavedModel with the serving signature (traced once per module)."""
        with keras_saved_model.keras_option_scope(save_traces=False):
            tf.saved_model.save(self, export_dir, signatures=self.get_inference_signatures())
