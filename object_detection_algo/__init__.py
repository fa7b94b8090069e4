"""RetinaNet object detection training from TFRecords, compatible with the
AI Platform built-in image object detection algorithm.

Importing the package must stay cheap: TensorFlow is imported only by the
modules that train, export or read data, never by flag handling.
"""

import os

# Model Garden uses tf_keras (Keras 2); make tf.keras the same library so the
# mixed-precision policy and optimizers we touch are the ones it uses.
os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')
