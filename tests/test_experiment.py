"""Every flag reaches the Model Garden config field the table says it sets."""

import dataclasses

import pytest

from object_detection_algo.training import experiment, flag_table

BASE = {'training_data_path': 'unused', 'validation_data_path': 'unused',
        'num_classes': '3', 'max_steps': '900', 'job-dir': '/tmp/x'}


def _get(params, path):
    value = params
    for part in path.split('.'):
        value = getattr(value, part)
    return value.as_dict() if hasattr(value, 'as_dict') else value


# flag: (raw value, {config path: expected value})
CASES = {
    'training_data_path': ('x', {'task.train_data.input_path': ['/data/t-0', '/data/t-1']}),
    'validation_data_path': ('x', {'task.validation_data.input_path': ['/data/v-0']}),
    'num_classes': ('5', {'task.model.num_classes': 6}),
    'max_steps': ('900', {'trainer.train_steps': 900}),
    'train_batch_size': ('12', {'task.train_data.global_batch_size': 12}),
    'num_eval_images': ('40', {'trainer.validation_steps': 17}),  # given to build() below
    'train_steps_per_eval': ('300', {'trainer.validation_interval': 300}),
    'image_size': ('300,200', {'task.model.input_size': [384, 256, 3]}),
    'resnet_depth': ('101', {'task.model.backbone.resnet.model_id': 101}),
    'fpn_type': ('nasfpn', {'task.model.decoder.type': 'nasfpn'}),
    'fpn_min_level': ('4', {'task.model.min_level': 4}),
    'fpn_max_level': ('6', {'task.model.max_level': 6}),
    'anchor_size': ('3.5', {'task.model.anchor.anchor_size': 3.5}),
    'bbox_aspect_ratios': ('1.0,3.0', {'task.model.anchor.aspect_ratios': [1.0, 3.0]}),
    'max_num_bboxes_in_training': ('42', {'task.train_data.parser.max_num_instances': 42,
                                          'task.validation_data.parser.max_num_instances': 42}),
    'max_num_bboxes_in_prediction': ('33', {
        'task.model.detection_generator.max_num_detections': 33,
        'task.max_num_eval_detections': 100}),
    'nms_iou_threshold': ('0.6', {'task.model.detection_generator.nms_iou_threshold': 0.6}),
    'nms_score_threshold': ('0.2', {
        'task.model.detection_generator.pre_nms_score_threshold': 0.2}),
    'focal_loss_alpha': ('0.3', {'task.losses.focal_loss_alpha': 0.3}),
    'focal_loss_gamma': ('2.0', {'task.losses.focal_loss_gamma': 2.0}),
    'huber_loss_delta': ('0.2', {'task.losses.huber_loss_delta': 0.2}),
    'detection_loss_weight': ('25', {'task.losses.box_loss_weight': 25}),
    'aug_rand_hflip': ('false', {'task.train_data.parser.aug_rand_hflip': False}),
    'aug_scale_min': ('0.5', {'task.train_data.parser.aug_scale_min': 0.5}),
    'aug_scale_max': ('1.5', {'task.train_data.parser.aug_scale_max': 1.5}),
    'auto_augmentation': ('true', {'task.train_data.parser.aug_type.type': 'autoaug',
                                   'task.train_data.parser.aug_type.autoaug.augmentation_name':
                                   'detection_v0'}),
    'initial_learning_rate': ('0.02', {
        'trainer.optimizer_config.learning_rate.cosine.initial_learning_rate': 0.02}),
    'warmup_learning_rate': ('0.001', {
        'trainer.optimizer_config.warmup.linear.warmup_learning_rate': 0.001}),
    'warmup_steps': ('77', {'trainer.optimizer_config.warmup.linear.warmup_steps': 77}),
    'learning_rate_decay_type': ('stepwise', {
        'trainer.optimizer_config.learning_rate.type': 'stepwise'}),
    'stepwise_learning_rate_steps': ('100,500', {
        'trainer.optimizer_config.learning_rate.stepwise.boundaries': [100, 500]}),
    'stepwise_learning_rate_levels': ('0.01,0.001', {
        'trainer.optimizer_config.learning_rate.stepwise.values': [0.08, 0.01, 0.001]}),
    'optimizer_type': ('rmsprop', {'trainer.optimizer_config.optimizer.type': 'rmsprop'}),
    'optimizer_arguments': ('momentum=0.7,nesterov=true', {
        'trainer.optimizer_config.optimizer.sgd.momentum': 0.7,
        'trainer.optimizer_config.optimizer.sgd.nesterov': True}),
    'weight_decay': ('0.0003', {'task.losses.l2_weight_decay': 0.0003}),
    'log_every_steps': ('20', {'trainer.steps_per_loop': 20, 'trainer.summary_interval': 20}),
    'checkpoint_every_steps': ('250', {'trainer.checkpoint_interval': 250}),
    'head_num_filters': ('64', {'task.model.head.num_filters': 64,
                                'task.model.decoder.fpn.num_filters': 64,
                                'task.model.decoder.nasfpn.num_filters': 64}),
    'head_num_convs': ('2', {'task.model.head.num_convs': 2}),
}
# Flags whose case needs a companion flag to be valid or visible.
COMPANIONS = {
    'stepwise_learning_rate_steps': {'learning_rate_decay_type': 'stepwise'},
    'stepwise_learning_rate_levels': {'learning_rate_decay_type': 'stepwise',
                                      'stepwise_learning_rate_steps': '100,500'},
    'fpn_min_level': {'image_size': '256,256'},
}


def test_every_mapped_flag_has_a_case():
    """Each field the table declares for a flag is checked by that flag's case."""
    assert {f.name for f in flag_table.FLAGS_TABLE if f.config} == set(CASES)
    for flag in flag_table.FLAGS_TABLE:
        for path in flag.config:
            assert any(checked.startswith(path) for checked in CASES[flag.name][1]), (
                flag.name, path)


@pytest.mark.parametrize('name', sorted(CASES))
def test_flag_reaches_config(name):
    raw, expected = CASES[name]
    settings = flag_table.resolve({**BASE, name: raw, **COMPANIONS.get(name, {})})
    params = experiment.build(settings, ['/data/t-0', '/data/t-1'], ['/data/v-0'],
                              validation_steps=17)
    for path, value in expected.items():
        got = _get(params, path)
        assert got == (pytest.approx(value) if isinstance(value, float) else value), path


def test_no_warmup_means_no_warmup_schedule():
    settings = flag_table.resolve({**BASE, 'warmup_steps': '0'})
    params = experiment.build(settings, ['a'], ['b'], validation_steps=-1)
    assert params.trainer.optimizer_config.warmup.type is None


def test_optimizer_keys_are_model_garden_fields():
    from official.modeling.optimization.configs import optimizer_config as oc
    classes = {'momentum': oc.SGDConfig, 'adam': oc.AdamConfig, 'rmsprop': oc.RMSPropConfig}
    for name, keys in flag_table.OPTIMIZER_KEYS.items():
        fields = {f.name for f in dataclasses.fields(classes[name])}
        assert set(keys) <= fields, name
