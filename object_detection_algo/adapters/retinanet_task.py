"""Model Garden's RetinaNet task with two parts of its input pipeline swapped:
records are decoded by our tolerant `RecordDecoder`, and the records the data
check chose to skip are dropped before decoding. Its COCO evaluator is ours
(adapters/coco_evaluator.py: the F1-best score threshold per class), built with
the arguments Model Garden's `build_metrics` gives its own.

Model Garden internals touched: `RetinaNetTask.build_inputs` is restated
(Model Garden builds its decoder inside it, with no hook), so the `Parser`
arguments below copy the ones upstream passes. `tests/test_adapters.py` fails
when `retinanet_input.Parser` gains or loses an argument, or Model Garden's own
call passes one we do not, so an upgrade cannot drop a new option silently.
"""

from typing import Any, Dict, Optional, Sequence

import tensorflow as tf
from official.common import dataset_fn
from official.vision.dataloaders import input_reader, input_reader_factory, retinanet_input
from official.vision.tasks import retinanet

from object_detection_algo.adapters.coco_evaluator import COCOEvaluator
from object_detection_algo.adapters.record_decoder import RecordDecoder
from object_detection_algo.data.record_checks import fingerprint


# Parser arguments Model Garden's build_inputs leaves at their defaults, as we do:
# the old AutoAugment switches (aug_type replaced them), resize order and mode.
PARSER_DEFAULTS_KEPT = ('use_autoaugment', 'autoaugment_policy_name', 'resize_first', 'mode')


def parser_arguments(task_config, params) -> Dict[str, Any]:
    """What Model Garden's build_inputs passes to retinanet_input.Parser."""
    model = task_config.model
    p = params.parser
    return dict(
        output_size=model.input_size[:2],
        min_level=model.min_level,
        max_level=model.max_level,
        num_scales=model.anchor.num_scales,
        aspect_ratios=model.anchor.aspect_ratios,
        anchor_size=model.anchor.anchor_size,
        dtype=params.dtype,
        match_threshold=p.match_threshold,
        unmatched_threshold=p.unmatched_threshold,
        box_coder_weights=model.detection_generator.box_coder_weights,
        aug_type=p.aug_type,
        aug_rand_hflip=p.aug_rand_hflip,
        aug_rand_jpeg=p.aug_rand_jpeg,
        aug_scale_min=p.aug_scale_min,
        aug_scale_max=p.aug_scale_max,
        skip_crowd_during_training=p.skip_crowd_during_training,
        max_num_instances=p.max_num_instances,
        pad=p.pad,
        keep_aspect_ratio=p.keep_aspect_ratio)


def _reader(file_type: str, skip: Sequence[int]):
    """The dataset_fn for the files: records whose fingerprint is in `skip` are
    dropped before they are decoded."""
    read = dataset_fn.pick_dataset_fn(file_type)
    if not skip:
        return read
    bad = sorted(set(skip))

    def read_skipping(*args, **kwargs):
        keep = lambda raw: tf.logical_not(tf.reduce_any(tf.equal(
            fingerprint(raw), tf.constant(bad, tf.int64))))
        return read(*args, **kwargs).filter(keep)
    return read_skipping


class RetinaNetTask(retinanet.RetinaNetTask):

    def __init__(self, params, skip: Optional[Dict[bool, Sequence[int]]] = None, **kwargs):
        """skip: {is_training: fingerprints of records to leave out}."""
        super().__init__(params, **kwargs)
        self._skip = skip or {}

    def build_metrics(self, training=True):
        metrics = super().build_metrics(training)
        if not training and self.task_config.use_coco_metrics:
            self.coco_metric = COCOEvaluator(
                annotation_file=self.task_config.annotation_file, include_mask=False,
                per_category_metrics=self.task_config.per_category_metrics,
                max_num_eval_detections=self.task_config.max_num_eval_detections)
        return metrics

    def build_inputs(self, params, input_context=None):
        parser = retinanet_input.Parser(**parser_arguments(self.task_config, params))
        reader = input_reader_factory.input_reader_generator(
            params,
            dataset_fn=_reader(params.file_type, self._skip.get(params.is_training, ())),
            decoder_fn=RecordDecoder().decode,
            combine_fn=input_reader.create_combine_fn(params),
            parser_fn=parser.parse_fn(params.is_training))
        return reader.read(input_context=input_context)
