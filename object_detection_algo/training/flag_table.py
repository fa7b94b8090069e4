"""The one table of the job's flags: names, types, defaults, valid ranges, help
and the Model Garden config fields they set.

Everything else is derived from it: the absl definitions (cli.py), value
validation (here), the typed settings (settings.py), the config mapping
(experiment.py) and the flag table of docs (`python -m object_detection_algo
flags-table`). Pure Python: no TensorFlow.
"""

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from object_detection_algo.errors import UsageError
from object_detection_algo.training.settings import Settings

RESNET_DEPTHS = (18, 34, 50, 101, 152, 200)

# Keys each optimizer accepts in --optimizer_arguments, named as in Model
# Garden's optimizer configs (tests check them against those dataclasses).
OPTIMIZER_KEYS = {
    'momentum': {'momentum': float, 'nesterov': bool},
    'adam': {'beta_1': float, 'beta_2': float, 'epsilon': float, 'amsgrad': bool},
    'rmsprop': {'rho': float, 'momentum': float, 'epsilon': float, 'centered': bool},
}


@dataclasses.dataclass(frozen=True)
class Flag:
    name: str
    kind: str  # int, float, str, bool, size, int_list, float_list, kv
    default: Any  # None: required, or computed from other flags (see `valid`)
    valid: str  # what is allowed, as the user reads it
    help: str
    check: Optional[Callable[[Any], bool]] = None
    choices: Tuple[str, ...] = ()
    config: Tuple[str, ...] = ()  # Model Garden config fields this flag sets
    required: bool = False
    extension: bool = False  # ours, not the original algorithm's


def _ge(n):
    return lambda v: v >= n


FLAGS_TABLE: List[Flag] = [
    Flag('training_data_path', 'str', None, 'file pattern, local or gs://',
         'TFRecord files of tf.Examples for training (glob: * ? [..]).',
         check=bool, config=('task.train_data.input_path',), required=True),
    Flag('validation_data_path', 'str', None, 'file pattern, local or gs://',
         'TFRecord files of tf.Examples for evaluation.',
         check=bool, config=('task.validation_data.input_path',), required=True),
    Flag('job-dir', 'str', None, 'local dir or gs://',
         'Output root: checkpoints/ and model/ go under it. On Vertex AI the '
         'AIP_* variables may replace it. Also spelled --job_dir.'),
    Flag('num_classes', 'int', None, '>= 1',
         'Classes in the data; labels are 1..num_classes, 0 is background.',
         check=_ge(1), config=('task.model.num_classes',), required=True),
    Flag('max_steps', 'int', None, '>= 1',
         'Training steps; the job ends after them.',
         check=_ge(1), config=('trainer.train_steps',), required=True),
    Flag('train_batch_size', 'int', 32, '>= 1', 'Images per step (global).',
         check=_ge(1), config=('task.train_data.global_batch_size',)),
    Flag('num_eval_images', 'int', 0, '>= 0',
         'Images per evaluation; 0 = all of the validation set.',
         check=_ge(0), config=('trainer.validation_steps',)),
    Flag('train_steps_per_eval', 'int', 1000, '>= 1',
         'Training steps between evaluations (and one at the end).',
         check=_ge(1), config=('trainer.validation_interval',)),
    Flag('image_size', 'size', (640, 640), 'H,W each >= 2^fpn_max_level; one number: a square',
         'Model input size, height first. Padded up to a multiple of '
         '2^fpn_max_level.', config=('task.model.input_size',)),
    Flag('resnet_depth', 'int', 50, ', '.join(map(str, RESNET_DEPTHS)),
         'ResNet backbone depth.', check=lambda v: v in RESNET_DEPTHS,
         config=('task.model.backbone.resnet.model_id',)),
    Flag('fpn_type', 'str', 'fpn', 'fpn, nasfpn', 'Multi-level feature network.',
         choices=('fpn', 'nasfpn'), config=('task.model.decoder.type',)),
    Flag('fpn_min_level', 'int', 3, '3..fpn_max_level', 'Lowest pyramid level.',
         check=lambda v: 3 <= v <= 7, config=('task.model.min_level',)),
    Flag('fpn_max_level', 'int', 7, 'fpn_min_level..7', 'Highest pyramid level.',
         check=lambda v: 3 <= v <= 7, config=('task.model.max_level',)),
    Flag('anchor_size', 'float', 4.0, '> 0',
         'Anchor scale relative to the level stride.',
         check=lambda v: v > 0, config=('task.model.anchor.anchor_size',)),
    Flag('bbox_aspect_ratios', 'float_list', (1.0, 2.0, 0.5), 'each > 0',
         'Anchor width/height ratios, comma-separated.',
         check=lambda v: len(v) > 0 and all(x > 0 for x in v),
         config=('task.model.anchor.aspect_ratios',)),
    Flag('max_num_bboxes_in_training', 'int', 100, '>= 1',
         'Ground-truth boxes kept per image.', check=_ge(1),
         config=('task.train_data.parser.max_num_instances',
                 'task.validation_data.parser.max_num_instances')),
    Flag('max_num_bboxes_in_prediction', 'int', 100, '>= 1',
         'Detections returned per image.', check=_ge(1),
         config=('task.model.detection_generator.max_num_detections',)),
    Flag('nms_iou_threshold', 'float', 0.5, '(0, 1]', 'NMS overlap threshold.',
         check=lambda v: 0 < v <= 1,
         config=('task.model.detection_generator.nms_iou_threshold',)),
    Flag('nms_score_threshold', 'float', 0.05, '[0, 1)', 'Minimum score kept.',
         check=lambda v: 0 <= v < 1,
         config=('task.model.detection_generator.pre_nms_score_threshold',)),
    Flag('focal_loss_alpha', 'float', 0.25, '(0, 1)', 'Focal loss balance.',
         check=lambda v: 0 < v < 1, config=('task.losses.focal_loss_alpha',)),
    Flag('focal_loss_gamma', 'float', 1.5, '>= 0', 'Focal loss focusing.',
         check=_ge(0), config=('task.losses.focal_loss_gamma',)),
    Flag('huber_loss_delta', 'float', 0.1, '> 0', 'Box regression Huber delta.',
         check=lambda v: v > 0, config=('task.losses.huber_loss_delta',)),
    Flag('detection_loss_weight', 'float', 50.0, '>= 0',
         'Weight of the box loss against the class loss.',
         check=_ge(0), config=('task.losses.box_loss_weight',)),
    Flag('aug_rand_hflip', 'bool', True, 'true, false', 'Random horizontal flip.',
         config=('task.train_data.parser.aug_rand_hflip',)),
    Flag('aug_scale_min', 'float', 1.0, '(0, 1]',
         'Lowest random scale of scale jitter.', check=lambda v: 0 < v <= 1,
         config=('task.train_data.parser.aug_scale_min',)),
    Flag('aug_scale_max', 'float', 1.0, '>= 1',
         'Highest random scale of scale jitter.', check=_ge(1),
         config=('task.train_data.parser.aug_scale_max',)),
    Flag('auto_augmentation', 'bool', False, 'true, false',
         'AutoAugment detection policy v0.',
         config=('task.train_data.parser.aug_type',)),
    Flag('initial_learning_rate', 'float', 0.08, '> 0',
         'Learning rate after warm-up.', check=lambda v: v > 0,
         config=('trainer.optimizer_config.learning_rate',)),
    Flag('warmup_learning_rate', 'float', 0.0067, '>= 0',
         'Learning rate at step 0, rising linearly.', check=_ge(0),
         config=('trainer.optimizer_config.warmup.linear.warmup_learning_rate',)),
    Flag('warmup_steps', 'int', 500, '>= 0, < max_steps', 'Warm-up length.',
         check=_ge(0),
         config=('trainer.optimizer_config.warmup.linear.warmup_steps',)),
    Flag('learning_rate_decay_type', 'str', 'cosine', 'cosine, stepwise (step)',
         'Learning rate schedule after warm-up.',
         choices=('cosine', 'stepwise', 'step'),
         config=('trainer.optimizer_config.learning_rate.type',)),
    Flag('stepwise_learning_rate_steps', 'int_list', None,
         'increasing, each in 1..max_steps-1',
         'Stepwise boundaries. Default: 2/3 and 8/9 of max_steps.',
         config=('trainer.optimizer_config.learning_rate.stepwise.boundaries',)),
    Flag('stepwise_learning_rate_levels', 'float_list', None,
         'one > 0 per step',
         'Learning rates after each boundary. Default: 0.1x and 0.01x '
         'initial_learning_rate.',
         config=('trainer.optimizer_config.learning_rate.stepwise.values',)),
    Flag('optimizer_type', 'str', 'momentum', 'momentum, adam, rmsprop',
         'Optimizer.', choices=('momentum', 'adam', 'rmsprop'),
         config=('trainer.optimizer_config.optimizer.type',)),
    Flag('optimizer_arguments', 'kv', None, 'k=v pairs the optimizer takes',
         'Optimizer arguments, e.g. momentum=0.9. Default: momentum=0.9 for '
         'momentum, none for the others.',
         config=('trainer.optimizer_config.optimizer',)),
    Flag('weight_decay', 'float', 0.0001, '>= 0', 'L2 weight decay.',
         check=_ge(0), config=('task.losses.l2_weight_decay',)),
    # Our extensions: documented in docs/flags.md, not part of the original.
    Flag('log_every_steps', 'int', 50, '>= 1',
         'Steps between progress lines and TensorBoard points (also the '
         'length of one on-device training loop).', check=_ge(1),
         config=('trainer.steps_per_loop', 'trainer.summary_interval'),
         extension=True),
    Flag('checkpoint_every_steps', 'int', 500, '>= 1',
         'Steps between checkpoints, besides the one at each evaluation and '
         'the one on SIGTERM (preemption).', check=_ge(1),
         config=('trainer.checkpoint_interval',), extension=True),
    Flag('head_num_filters', 'int', 256, '>= 8',
         'Filters in each box/class head convolution (also the FPN width).',
         check=_ge(8), config=('task.model.head.num_filters',
                               'task.model.decoder.fpn.num_filters',
                               'task.model.decoder.nasfpn.num_filters'),
         extension=True),
    Flag('head_num_convs', 'int', 4, '>= 1',
         'Convolutions in each box/class head tower.', check=_ge(1),
         config=('task.model.head.num_convs',), extension=True),
    Flag('precision', 'str', 'auto', 'auto, float32, bfloat16, float16',
         'The dtype the model computes in (weights stay float32; the exported model is '
         'float32). auto: bfloat16 on TPU; float16 with dynamic loss scaling on GPUs with '
         'tensor cores (compute capability >= 7.0), float32 on older GPUs; bfloat16 on CPUs '
         'with AMX or AVX-512 BF16, float32 on other CPUs. The Devices line says which and '
         'why; a value the devices cannot run (float16 on TPU or CPU, bfloat16 on GPUs below '
         '8.0) stops the job before training.', choices=('auto', 'float32', 'bfloat16',
                                                          'float16'), extension=True),
    Flag('preflight_max_records', 'int', 5000, '>= 0',
         'Records the data check before training reads from each of the two data '
         'globs: all of them when there are fewer, else a sample spread over the files '
         '(0 = always all). Errors stop the job before training (exit status 3); the '
         'report is preflight_report.json in the checkpoint folder.', check=_ge(0),
         extension=True),
    Flag('skip_bad_records', 'bool', False, 'true, false',
         'Train and evaluate without the records that fail the data check, instead of '
         'stopping. The check then reads every record of both sets (preflight_max_records '
         'is ignored); the log and preflight_report.json count and list the skipped '
         'records. An unreadable file, duplicate source_ids and 0-based labels concern a '
         'whole file or set and still stop the job.', extension=True),
    Flag('init_checkpoint', 'str', 'auto', 'auto, none, or a checkpoint prefix or folder, '
         'local or gs://',
         'Weights a new job starts from. auto: the ImageNet ResNet-50 of Model Garden for '
         '--resnet_depth=50 (the image\'s copy, else gs://cloud-tpu-checkpoints), from scratch '
         'for other depths or when no copy answers; none: from scratch; a path: a Model Garden '
         'ResNet classifier checkpoint or an earlier job\'s R/checkpoints[/trial_T] (its newest '
         'checkpoint). Checked against the model before training; a restart resumes from the '
         'job\'s own checkpoint and loads nothing.', check=bool, extension=True),
    Flag('init_checkpoint_modules', 'str', None, 'backbone; backbone,decoder; all '
         '(default: fits the checkpoint)',
         'Parts of --init_checkpoint to load. Default: backbone from a classifier, all from an '
         'earlier job with the same --num_classes, backbone,decoder from one with other '
         'classes (all is refused then).', extension=True),
    Flag('allow_data_change', 'bool', False, 'true, false',
         'Let a restarted job go on although its data files differ from its first start '
         '(added, removed, or another size or modification time); otherwise it stops. '
         'After a change of the validation data, evaluations are compared only with those '
         'on the same data when choosing the best model.', extension=True),
]

FLAGS_BY_NAME: Dict[str, Flag] = {f.name: f for f in FLAGS_TABLE}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ('true', 't', '1', 'yes'):
        return True
    if low in ('false', 'f', '0', 'no'):
        return False
    raise ValueError('not a boolean')


def _parse_number(text: str, kind) -> Any:
    text = text.strip()
    if kind is int:
        value = float(text)  # tuning services may send 1000.0 for an int
        if not value.is_integer():
            raise ValueError('not an integer')
        return int(value)
    value = float(text)
    if not math.isfinite(value):
        raise ValueError('not a finite number')
    return value


def _parse_list(text: str, kind) -> Tuple:
    parts = [p for p in text.replace(' ', '').split(',') if p != '']
    return tuple(_parse_number(p, kind) for p in parts)


def parse_value(flag: Flag, raw: Any) -> Any:
    """Turns a raw flag value (a string, or a bool from absl) into its type."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        return raw
    if flag.kind == 'str':
        return raw
    if flag.kind == 'bool':
        return _parse_bool(raw)
    if flag.kind == 'int':
        return _parse_number(raw, int)
    if flag.kind == 'float':
        return _parse_number(raw, float)
    if flag.kind == 'int_list':
        return _parse_list(raw, int)
    if flag.kind == 'float_list':
        return _parse_list(raw, float)
    if flag.kind == 'size':
        size = _parse_list(raw, int)
        if len(size) == 1:
            size = size * 2
        if len(size) != 2:
            raise ValueError('needs two numbers, height and width')
        return size
    if flag.kind == 'kv':
        pairs = {}
        for item in filter(None, raw.replace(' ', '').split(',')):
            key, sep, value = item.partition('=')
            if not sep or not key:
                raise ValueError(f'"{item}" is not key=value')
            pairs[key] = value
        return pairs
    raise AssertionError(f'unknown flag kind {flag.kind}')


def _fail(flag: Flag, raw: Any, why: str = '') -> UsageError:
    detail = f' ({why})' if why else ''
    return UsageError(
        f'--{flag.name}={raw!s} is not valid{detail}. Allowed: {flag.valid}.')


def _optimizer_arguments(optimizer: str, pairs: Dict[str, str]) -> Dict[str, Any]:
    flag = FLAGS_BY_NAME['optimizer_arguments']
    allowed = OPTIMIZER_KEYS[optimizer]
    typed = {}
    for key, text in pairs.items():
        if key not in allowed:
            raise UsageError(
                f'--optimizer_arguments: "{key}" is not an argument of the '
                f'{optimizer} optimizer. Allowed keys: {", ".join(sorted(allowed))}.')
        try:
            typed[key] = (_parse_bool(text) if allowed[key] is bool
                          else _parse_number(text, float))
        except ValueError as e:
            raise _fail(flag, f'{key}={text}', str(e)) from None
    return typed


def resolve(raw_values: Dict[str, Any]) -> Settings:
    """Parses and validates every flag; fills defaults computed from others.

    Raises UsageError naming the first bad flag, its value and what is
    allowed. Runs before TensorFlow is imported.
    """
    values: Dict[str, Any] = {}
    for flag in FLAGS_TABLE:
        raw = raw_values.get(flag.name)
        if raw is None or (isinstance(raw, str) and raw == '' and flag.kind != 'str'):
            if flag.required:
                raise UsageError(f'--{flag.name} is required ({flag.help})')
            values[flag.name] = flag.default
            continue
        try:
            value = parse_value(flag, raw)
        except ValueError as e:
            raise _fail(flag, raw, str(e)) from None
        if flag.kind == 'str' and flag.choices:
            value = value.strip().lower()
            if value not in flag.choices:
                raise _fail(flag, raw)
        if flag.check is not None and not flag.check(value):
            raise _fail(flag, raw)
        values[flag.name] = value

    _check_together(values)
    return Settings.from_flags(values)


def _check_together(v: Dict[str, Any]) -> None:
    """Rules that involve more than one flag; fills computed defaults."""
    if v['fpn_min_level'] > v['fpn_max_level']:
        raise UsageError(
            f'--fpn_min_level={v["fpn_min_level"]} is above '
            f'--fpn_max_level={v["fpn_max_level"]}. Allowed: '
            f'3 <= fpn_min_level <= fpn_max_level <= 7.')
    stride = 2 ** v['fpn_max_level']
    if min(v['image_size']) < stride:
        raise UsageError(
            f'--image_size={",".join(map(str, v["image_size"]))} is too small '
            f'for --fpn_max_level={v["fpn_max_level"]}: each side must be at '
            f'least 2^{v["fpn_max_level"]} = {stride}.')
    if v['warmup_steps'] >= v['max_steps']:
        raise UsageError(
            f'--warmup_steps={v["warmup_steps"]} is not below '
            f'--max_steps={v["max_steps"]}. Allowed: 0 <= warmup_steps < '
            f'max_steps; pass a smaller --warmup_steps.')
    _init_checkpoint(v)
    if v['learning_rate_decay_type'] == 'step':
        v['learning_rate_decay_type'] = 'stepwise'

    steps = v['stepwise_learning_rate_steps']
    if steps is None:
        steps = sorted({max(1, v['max_steps'] * 2 // 3), max(1, v['max_steps'] * 8 // 9)})
        steps = tuple(s for s in steps if s < v['max_steps'])
    elif (any(s < 1 or s >= v['max_steps'] for s in steps)
          or list(steps) != sorted(set(steps))):
        raise UsageError(
            f'--stepwise_learning_rate_steps={",".join(map(str, steps))} is not '
            f'valid. Allowed: strictly increasing steps, each in 1..'
            f'{v["max_steps"] - 1} (below --max_steps).')
    levels = v['stepwise_learning_rate_levels']
    if levels is None:
        levels = tuple(v['initial_learning_rate'] * f for f in (0.1, 0.01))[:len(steps)]
    elif len(levels) != len(steps) or any(x <= 0 for x in levels):
        raise UsageError(
            f'--stepwise_learning_rate_levels={",".join(map(str, levels))} is '
            f'not valid. Allowed: one learning rate > 0 per step of '
            f'--stepwise_learning_rate_steps ({len(steps)} here).')
    v['stepwise_learning_rate_steps'] = tuple(steps)
    v['stepwise_learning_rate_levels'] = tuple(levels)

    pairs = v['optimizer_arguments']
    if pairs is None:
        pairs = {'momentum': '0.9'} if v['optimizer_type'] == 'momentum' else {}
    v['optimizer_arguments'] = _optimizer_arguments(v['optimizer_type'], pairs)


def _show_default(flag: Flag) -> str:
    if flag.default is None:
        return '(required)' if flag.required else '(see meaning)'
    if isinstance(flag.default, bool):
        return str(flag.default).lower()
    if isinstance(flag.default, tuple):
        return ','.join(str(x) for x in flag.default)
    return str(flag.default)


def markdown_table() -> str:
    """The flag table of docs/flags.md, generated from FLAGS_TABLE."""
    rows = ['| Flag | Type | Default | Valid | Meaning |', '|---|---|---|---|---|']
    for f in FLAGS_TABLE:
        name = f'`{f.name}`' + (' (ours)' if f.extension else '')
        rows.append(f'| {name} | {f.kind} | {_show_default(f)} | {f.valid} | {f.help} |')
    return '\n'.join(rows) + '\n'


_MODULE_SETS = {('backbone',): 'backbone', ('backbone', 'decoder'): 'backbone,decoder',
                ('all',): 'all'}


def _init_checkpoint(v: Dict[str, Any]) -> None:
    """auto/none in any case; the modules in one spelling ('decoder,backbone' too)."""
    path = v['init_checkpoint'].strip()
    v['init_checkpoint'] = path.lower() if path.lower() in ('auto', 'none') else path
    modules = v['init_checkpoint_modules']
    if not modules:
        v['init_checkpoint_modules'] = None  # fits the checkpoint
        return
    names = tuple(sorted(set(filter(None, modules.replace(' ', '').lower().split(',')))))
    if names not in _MODULE_SETS:
        raise _fail(FLAGS_BY_NAME['init_checkpoint_modules'], modules)
    if v['init_checkpoint'] == 'none':
        raise UsageError(f'--init_checkpoint_modules={modules} needs weights to load: '
                         '--init_checkpoint is none. Drop one of the two.')
    v['init_checkpoint_modules'] = _MODULE_SETS[names]
