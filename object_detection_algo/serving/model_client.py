"""Calling an exported model (docs/contract.md, "The exported model") from Python: load it with a
clear error when it is not ours, run batches, isolate the images that fail."""

import posixpath
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from object_detection_algo.errors import DataError, UsageError

INPUTS = ('encoded_image', 'key')
OUTPUTS = ('detection_boxes', 'detection_classes', 'detection_scores', 'num_detections', 'key')


class ModelError(UsageError):
    """The model dir does not hold a model with the signature of docs/contract.md."""


class InstanceError(DataError):
    """One instance could not be answered; the message says why."""


def load(model_dir: str):
    """The `serving_default` function of the SavedModel in model_dir."""
    if not tf.io.gfile.exists(posixpath.join(model_dir, 'saved_model.pb')):
        raise ModelError(f'{model_dir} holds no saved_model.pb: pass the folder the training '
                         'job wrote (R/model, or R/model/trial_T under tuning).')
    try:
        model = tf.saved_model.load(model_dir)
    except (tf.errors.OpError, ValueError, OSError) as e:
        raise ModelError(f'{model_dir}: cannot load the SavedModel: {e}') from None
    if 'serving_default' not in model.signatures:
        raise ModelError(f'{model_dir} has no serving_default signature (it has: '
                         f'{", ".join(model.signatures) or "none"}).')
    serve = model.signatures['serving_default']
    inputs = sorted(serve.structured_input_signature[1])
    if inputs != sorted(INPUTS):
        raise ModelError(f'{model_dir}: serving_default takes {inputs}, not the '
                         f'{list(INPUTS)} of this algorithm\'s export.')
    serve._keep_model_alive = model  # the signature does not own its variables
    return serve


def trained_classes(model_dir: str) -> Optional[int]:
    """num_classes of the job that exported the model, from the metrics.json the
    job writes beside it; None when there is none."""
    from object_detection_algo import io_utils
    metrics = io_utils.read_json(posixpath.join(model_dir, 'metrics.json')) or {}
    return (metrics.get('flags') or {}).get('num_classes')


def _call(serve, images: Sequence[bytes], keys: Sequence[str]) -> List[Dict[str, np.ndarray]]:
    out = serve(encoded_image=tf.constant(list(images), tf.string),
                key=tf.constant(list(keys), tf.string))
    out = {k: v.numpy() for k, v in out.items()}
    return [{k: out[k][i] for k in OUTPUTS} for i in range(len(images))]


def predict(serve, images: Sequence[bytes], keys: Sequence[str]
            ) -> List[Union[Dict[str, np.ndarray], InstanceError]]:
    """One result per image: the signature's outputs for it, or the error.

    The whole batch goes in one call; if that fails (an image that does not
    decode fails the batch), each image is retried alone to find the bad ones.
    """
    if not images:
        return []
    try:
        return _call(serve, images, keys)
    except tf.errors.InvalidArgumentError as e:
        if len(images) == 1:
            return [InstanceError(_first_line(e.message))]
    return [predict(serve, [image], [key])[0] for image, key in zip(images, keys)]


def _first_line(message: str) -> str:
    # TF wraps the op's own message in "Graph execution error", a stack note
    # and the node name; keep the op's message.
    lines = [l.strip() for l in message.splitlines() if l.strip()]
    useful = [l for l in lines if not l.startswith(('Graph execution error', 'Detected at node',
                                                    '<stack traces', '[['))]
    return (useful or lines or ['unknown error'])[0].split(' [Op:')[0]
