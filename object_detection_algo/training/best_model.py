"""The best model: the SavedModel of docs/contract.md ("The exported model")
exported from a checkpoint, and its safe replacement in R/model."""

import posixpath
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

from object_detection_algo.adapters.serving_module import ServingModule
from object_detection_algo.io_utils import read_json, write_json

METRICS_FILE = 'metrics.json'


class Exporter:
    """Exports checkpoints as the float32 serving model. The serving module is
    built and its signature traced once, at the first export; later exports
    only load the checkpoint's weights into it and save."""

    def __init__(self, params):
        self._params = params.replace(task={'export_config': {
            'output_normalized_coordinates': True,
            'cast_num_detections_to_float': True,
            'cast_detection_classes_to_float': True}})
        self._module = None

    def _build(self) -> ServingModule:
        policy = tf.keras.mixed_precision.global_policy()
        tf.keras.mixed_precision.set_global_policy('float32')  # serve on CPU and GPU
        try:
            return ServingModule(params=self._params, batch_size=None,
                                 input_image_size=list(self._params.task.model.input_size[:2]))
        finally:
            tf.keras.mixed_precision.set_global_policy(policy)

    def export(self, checkpoint_path: str, export_dir: str) -> None:
        if self._module is None:
            self._module = self._build()
        tf.train.Checkpoint(model=self._module.model).read(checkpoint_path).expect_partial()
        self._module.save(export_dir)


def is_complete(model_dir: str) -> bool:
    return (tf.io.gfile.exists(posixpath.join(model_dir, 'saved_model.pb'))
            and tf.io.gfile.exists(posixpath.join(model_dir, METRICS_FILE)))


def _tree(folder: str) -> Tuple[List[str], List[str]]:
    """(sub-folders, files) under a folder, as paths relative to it."""
    folders, files = [], []
    for parent, _, names in tf.io.gfile.walk(folder):
        rel = posixpath.relpath(parent.rstrip('/'), folder.rstrip('/'))
        if rel != '.':
            folders.append(rel)
        files += [name if rel == '.' else posixpath.join(rel, name) for name in names]
    return folders, files


class BestModel:
    """Keeps R/model a plain SavedModel folder that a reader never finds mixed
    or half-written, on local disk and on gs://, which has no atomic rename.

    A new best is written whole into a staging folder beside the checkpoints
    (complete once its metrics.json, written last, exists). Only then is R/model
    touched: saved_model.pb is deleted first, so a reader finds no model
    rather than a mixed one; the rest is emptied and refilled from staging;
    saved_model.pb is copied last. The staging folder is deleted after that.
    While R/model lacks saved_model.pb a complete staging folder exists, so
    `recover()` after a kill finishes the copy from it (the new model is
    better than the one it replaces, and nothing of the old one is needed).
    """

    def __init__(self, model_dir: str, work_dir: str, exporter: Optional[Exporter] = None):
        self.model_dir = model_dir
        self.staging = posixpath.join(work_dir, 'best_model_staging')
        self.exporter = exporter

    def recover(self) -> None:
        if is_complete(self.staging) and self.metrics() == read_json(
                posixpath.join(self.staging, METRICS_FILE)):
            tf.io.gfile.rmtree(self.staging)  # killed after the last copy
        elif is_complete(self.staging):
            logging.warning('Completing the interrupted replacement of the best model in %s '
                            'from %s.', self.model_dir, self.staging)
            self._install()
        elif tf.io.gfile.exists(self.staging):
            tf.io.gfile.rmtree(self.staging)  # an export that never finished

    def metrics(self) -> Optional[Dict[str, Any]]:
        if not is_complete(self.model_dir):
            return None
        return read_json(posixpath.join(self.model_dir, METRICS_FILE))

    def replace(self, checkpoint_path: str, metrics: Dict[str, Any]) -> None:
        self.recover()
        self.exporter.export(checkpoint_path, self.staging)
        write_json(posixpath.join(self.staging, METRICS_FILE), metrics)  # marks it complete
        self._install()

    def _install(self) -> None:
        """Copies the complete staging folder over R/model, saved_model.pb last."""
        graph = posixpath.join(self.model_dir, 'saved_model.pb')
        if tf.io.gfile.exists(graph):
            tf.io.gfile.remove(graph)  # from here on readers see no model
        if tf.io.gfile.exists(self.model_dir):
            tf.io.gfile.rmtree(self.model_dir)  # old variables, assets, metrics
        folders, files = _tree(self.staging)
        tf.io.gfile.makedirs(self.model_dir)
        for name in folders:  # empty ones too (assets/), as a SavedModel has them
            tf.io.gfile.makedirs(posixpath.join(self.model_dir, name))
        for name in sorted(files, key=lambda f: f == 'saved_model.pb'):
            tf.io.gfile.copy(posixpath.join(self.staging, name),
                             posixpath.join(self.model_dir, name), overwrite=True)
        tf.io.gfile.rmtree(self.staging)
