"""Model Garden's RetinaNet task, reading records with our tolerant decoder
and leaving out the records the data check chose to skip."""

from typing import Dict, Optional, Sequence

import tensorflow as tf
from official.common import dataset_fn
from official.vision.dataloaders import input_reader, input_reader_factory, retinanet_input
from official.vision.tasks import retinanet

from object_detection_algo import records, validation


def _reader(file_type: str, skip: Sequence[int]):
    """The dataset_fn for the files: records whose fingerprint is in `skip` are
    dropped before they are decoded."""
    read = dataset_fn.pick_dataset_fn(file_type)
    if not skip:
        return read
    bad = sorted(set(skip))

    def read_skipping(*args, **kwargs):
        keep = lambda raw: tf.logical_not(tf.reduce_any(tf.equal(
            validation.fingerprint(raw), tf.constant(bad, tf.int64))))
        return read(*args, **kwargs).filter(keep)
    return read_skipping


class RetinaNetTask(retinanet.RetinaNetTask):

    def __init__(self, params, skip: Optional[Dict[bool, Sequence[int]]] = None, **kwargs):
        """skip: {is_training: fingerprints of records to leave out}."""
        super().__init__(params, **kwargs)
        self._skip = skip or {}

    def build_inputs(self, params, input_context=None):
        model = self.task_config.model
        p = params.parser
        parser = retinanet_input.Parser(
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
        reader = input_reader_factory.input_reader_generator(
            params,
            dataset_fn=_reader(params.file_type, self._skip.get(params.is_training, ())),
            decoder_fn=records.RecordDecoder().decode,
            combine_fn=input_reader.create_combine_fn(params),
            parser_fn=parser.parse_fn(params.is_training))
        return reader.read(input_context=input_context)
