"""Resolved flags -> a Model Garden RetinaNet ExperimentConfig.

Starts from the `retinanet_resnetfpn_coco` preset and sets every field the
flag table names in its `config` column.
"""

import math
from typing import Any, Dict, List, Optional

from absl import logging
from official.core import config_definitions as cfg
from official.core import exp_factory
from official.vision.configs import retinanet as retinanet_cfg  # registers presets

from object_detection_algo.errors import UsageError
from object_detection_algo.training.settings import Settings

# Model Garden's experiment every config starts from (the follower of a cluster too).
PRESET = 'retinanet_resnetfpn_coco'
_OPTIMIZER_TYPE = {'momentum': 'sgd', 'adam': 'adam', 'rmsprop': 'rmsprop'}


def eval_batch_size(settings: Settings, num_replicas: int = 1) -> int:
    """Evaluation batch: at most 8 images per replica, never above the training batch."""
    per_replica = max(1, min(8, settings.train_batch_size // num_replicas))
    return per_replica * num_replicas


def learning_rate_config(s: Settings) -> Dict[str, Any]:
    if s.learning_rate_decay_type == 'cosine':
        lr = {'type': 'cosine', 'cosine': {
            'initial_learning_rate': s.initial_learning_rate,
            'decay_steps': s.max_steps}}
    else:
        lr = {'type': 'stepwise', 'stepwise': {
            'boundaries': list(s.stepwise_learning_rate_steps),
            'values': [s.initial_learning_rate, *s.stepwise_learning_rate_levels]}}
    warmup = {'type': None}
    if s.warmup_steps > 0:
        warmup = {'type': 'linear', 'linear': {
            'warmup_steps': s.warmup_steps,
            'warmup_learning_rate': s.warmup_learning_rate}}
    return {'learning_rate': lr, 'warmup': warmup}


def optimizer_config(s: Settings) -> Dict[str, Any]:
    kind = _OPTIMIZER_TYPE[s.optimizer_type]
    return {'type': kind, kind: dict(s.optimizer_arguments)}


def build(s: Settings, train_files: List[str], eval_files: List[str],
          validation_steps: int, num_replicas: int = 1,
          dtype: str = 'float32', drop_eval_remainder: bool = False,
          init_checkpoint: Optional[str] = None,
          init_checkpoint_modules: Optional[str] = None) -> cfg.ExperimentConfig:
    """The config; its initial weights are those init_weights.choose checked (the
    preset's own ImageNet path is never used unchecked)."""
    height, width = s.input_size
    params = exp_factory.get_exp_config(PRESET)
    task = params.task
    task.init_checkpoint = init_checkpoint
    task.init_checkpoint_modules = init_checkpoint_modules or 'backbone'
    task.annotation_file = None  # ground truth for COCO eval comes from the records
    # Model Garden casts the images to the compute dtype and, for float16, wraps the
    # optimizer for dynamic loss scaling (runtime.loss_scale None).
    params.runtime.mixed_precision_dtype = dtype

    model = task.model
    model.num_classes = s.num_classes + 1  # Model Garden counts background
    model.input_size = [height, width, 3]
    model.min_level = s.fpn_min_level
    model.max_level = s.fpn_max_level
    model.anchor.anchor_size = s.anchor_size
    model.anchor.aspect_ratios = list(s.bbox_aspect_ratios)
    model.backbone.resnet.model_id = s.resnet_depth
    model.decoder.type = s.fpn_type
    model.decoder.fpn.num_filters = s.head_num_filters
    model.decoder.nasfpn.num_filters = s.head_num_filters
    model.head.num_filters = s.head_num_filters
    model.head.num_convs = s.head_num_convs
    gen = model.detection_generator
    gen.max_num_detections = s.max_num_bboxes_in_prediction
    gen.nms_iou_threshold = s.nms_iou_threshold
    gen.pre_nms_score_threshold = s.nms_score_threshold
    # COCO AP is defined at 100 detections per image; Model Garden's evaluator
    # reports AP as -1 if this differs, whatever the model returns.
    task.max_num_eval_detections = 100
    task.per_category_metrics = True  # AP per class, and our F1-best score thresholds
    task.allow_image_summary = True  # the last evaluation batch, drawn, to TensorBoard

    task.losses.focal_loss_alpha = s.focal_loss_alpha
    task.losses.focal_loss_gamma = s.focal_loss_gamma
    task.losses.huber_loss_delta = s.huber_loss_delta
    task.losses.box_loss_weight = s.detection_loss_weight
    task.losses.l2_weight_decay = s.weight_decay

    for data, files in ((task.train_data, train_files), (task.validation_data, eval_files)):
        data.input_path = list(files)
        data.dtype = dtype
        data.parser.max_num_instances = s.max_num_bboxes_in_training
    task.train_data.global_batch_size = s.train_batch_size
    task.train_data.shuffle_buffer_size = 1000
    parser = task.train_data.parser
    parser.aug_rand_hflip = s.aug_rand_hflip
    parser.aug_scale_min = s.aug_scale_min
    parser.aug_scale_max = s.aug_scale_max
    parser.aug_type = None
    if s.auto_augmentation:
        parser.aug_type = {'type': 'autoaug', 'autoaug': {'augmentation_name': 'detection_v0'}}
    task.validation_data.global_batch_size = eval_batch_size(s, num_replicas)
    task.validation_data.drop_remainder = drop_eval_remainder

    trainer = params.trainer
    trainer.train_steps = s.max_steps
    trainer.validation_steps = validation_steps
    trainer.validation_interval = s.train_steps_per_eval
    trainer.steps_per_loop = s.log_every_steps
    trainer.summary_interval = s.log_every_steps
    trainer.checkpoint_interval = s.checkpoint_every_steps
    trainer.max_to_keep = 3
    trainer.best_checkpoint_export_subdir = ''  # we export the best model ourselves
    trainer.optimizer_config = {
        'optimizer': optimizer_config(s), **learning_rate_config(s)}
    params.validate()
    return params


def validation_steps(settings: Settings, num_records: int, batch: int) -> int:
    """Batches per evaluation for --num_eval_images (-1: the whole set)."""
    wanted = settings.num_eval_images
    if wanted == 0:
        logging.info('Evaluating on all %d validation images.', num_records)
        return -1
    if wanted >= num_records:
        logging.warning('--num_eval_images=%d is not below the %d images of the '
                        'validation set: evaluating on all of them.', wanted, num_records)
        return -1
    steps = math.ceil(wanted / batch)
    logging.info('Evaluating on %d of %d validation images (%d batches of %d).',
                 min(steps * batch, num_records), num_records, steps, batch)
    return steps


def for_job(settings: Settings, files: Dict[str, List[str]], num_eval: int,
            num_replicas: int, on_tpu: bool, dtype: str = 'float32',
            weights=None) -> cfg.ExperimentConfig:
    """The config of a training job on these files and devices."""
    if settings.train_batch_size % num_replicas:
        raise UsageError(
            f'--train_batch_size={settings.train_batch_size} does not split over the '
            f'{num_replicas} devices in use: pass a multiple of {num_replicas}.')
    batch = eval_batch_size(settings, num_replicas)
    return build(settings, files['training_data_path'], files['validation_data_path'],
                 validation_steps=validation_steps(settings, num_eval, batch),
                 num_replicas=num_replicas, dtype=dtype,
                 drop_eval_remainder=on_tpu,
                 init_checkpoint=weights.checkpoint if weights else None,
                 init_checkpoint_modules=weights.modules if weights else None)
