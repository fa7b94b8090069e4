"""The weights a new job starts from: --init_checkpoint and --init_checkpoint_modules.

  auto   Model Garden's ImageNet ResNet-50 for --resnet_depth=50: the image's copy
         (PRETRAINED_WEIGHTS_DIR) first, then the published gs:// file; from scratch when
         neither answers within seconds, and for the depths without a checkpoint that fits.
  none   from scratch.
  PATH   a checkpoint prefix or a folder (its newest checkpoint), local or gs://: a
         Model Garden ResNet classifier (its backbone) or an earlier job of ours, e.g.
         R/checkpoints or R/checkpoints/trial_T as the job left them.

Everything is checked from the checkpoint's index before the data is read: that it can
be read, which modules it holds, the class count of an earlier job, and that every
variable of the modules to load has this model's name and shape. Model Garden's
`RetinaNetTask.initialize` then loads them, only when the job has no checkpoint of its
own: a restarted job resumes and never initialises again (job.build passes no weights).
"""

import dataclasses
import os
import posixpath
import tempfile
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging
from official.vision.tasks import retinanet

from object_detection_algo import io_utils
from object_detection_algo.errors import StorageError, UsageError
from object_detection_algo.training import experiment, identity, storage_check
from object_detection_algo.training.settings import Settings

# The preset's own ImageNet ResNet-50 (retinanet_resnetfpn_coco.init_checkpoint).
PUBLISHED = {50: 'gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080'}
# Depths whose published ImageNet checkpoints do not fit this backbone, and why.
NOT_FITTING = {
    101: 'the published ImageNet ResNet-101 was trained with swish activations and this '
         'backbone uses relu',
    152: 'the published ImageNet ResNet-152 comes as a tarball whose layout could not be '
         'checked against this backbone; extract it and pass its prefix as --init_checkpoint',
}
# The image's copy: <PRETRAINED_WEIGHTS_DIR>/<name of the published file's folder>/ckpt-...
PRETRAINED_DIR_VARIABLE = 'PRETRAINED_WEIGHTS_DIR'
DEFAULT_PRETRAINED_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), 'pretrained')
AUTO_PROBE_SECONDS = 10  # auto falls back to scratch when gs:// gives no answer in time

MODULES = ('backbone', 'decoder', 'head')  # RetinaNetModel.checkpoint_items
_CLASSIFIER = 'head/_classifier/kernel/.ATTRIBUTES/VARIABLE_VALUE'
_NUM_SCALES = 3  # anchor scales per level: the preset's, not a flag
_SHOWN = 5  # mismatched variables named in an error


@dataclasses.dataclass(frozen=True)
class InitialWeights:
    checkpoint: Optional[str]  # a checkpoint prefix; None: from scratch
    modules: Optional[str]  # 'backbone', 'backbone,decoder' or 'all'
    source: str  # 'imagenet', 'job', 'checkpoint' (a classifier of the user's), 'none'
    description: str  # what the log line and metrics.json say

    def as_json(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def scratch(why: str) -> InitialWeights:
    return InitialWeights(None, None, 'none', f'none ({why}); training from scratch')


def module_names(modules: str) -> Tuple[str, ...]:
    return MODULES if modules == 'all' else tuple(modules.split(','))


def pretrained_dir(env) -> str:
    return env.get(PRETRAINED_DIR_VARIABLE) or DEFAULT_PRETRAINED_DIR


def image_copy(depth: int, env) -> Optional[str]:
    """Where the image keeps its copy of the published checkpoint of this depth."""
    published = PUBLISHED.get(depth)
    if published is None:
        return None
    folder, name = posixpath.split(published)
    return os.path.join(pretrained_dir(env), posixpath.basename(folder), name)


# --- reading a checkpoint's index ---------------------------------------------

def _prefix_of(path: str, what: str) -> str:
    """The checkpoint prefix `path` names (a prefix, or a folder: its newest one)."""
    if tf.io.gfile.exists(path + '.index'):
        return path
    if tf.io.gfile.isdir(path):
        if tf.io.gfile.exists(posixpath.join(path, 'saved_model.pb')):
            raise UsageError(
                f'{what} is an exported SavedModel, not a checkpoint. Pass the checkpoint '
                'folder of the job that made it (R/checkpoints, or R/checkpoints/trial_T '
                'under tuning).')
        newest = tf.train.latest_checkpoint(path)
        if newest and tf.io.gfile.exists(newest + '.index'):
            return newest
        found = tf.io.gfile.glob(posixpath.join(path, '*.index'))
        if found:
            return sorted(found)[-1][:-len('.index')]
        raise StorageError(
            f'{what}: the folder holds no checkpoint (no <prefix>.index file and no '
            '"checkpoint" file naming one). Pass a checkpoint prefix such as '
            f'{posixpath.join(path, "ckpt-1000")}, or a folder a job wrote checkpoints to.')
    raise StorageError(
        f'{what}: no checkpoint there ({path}.index does not exist and it is not a folder). '
        'Pass a checkpoint prefix (the path without .index / .data-*) or its folder.')


def read_index(path: str, what: str, seconds: float = storage_check.PROBE_DEADLINE_SECONDS
               ) -> Tuple[str, Dict[str, List[int]]]:
    """(prefix, {variable name: shape}) from the checkpoint's index; on gs:// with a
    deadline. StorageError when it cannot be read."""
    found = {}

    def read():
        found['prefix'] = _prefix_of(path, what)
        found['variables'] = dict(tf.train.list_variables(found['prefix']))
    try:
        storage_check.within_deadline(read, path, what, seconds)
    except tf.errors.OpError as e:
        raise StorageError(f'{what}: cannot read the checkpoint: '
                           f'{storage_check.one_line(e.message)}') from None
    return found['prefix'], found['variables']


def modules_in(variables: Dict[str, List[int]]) -> Tuple[str, ...]:
    """The RetinaNet modules a checkpoint holds variables of, in model order."""
    tops = {name.split('/', 1)[0] for name in variables}
    return tuple(m for m in MODULES if m in tops)


def model_variables(variables: Dict[str, List[int]], modules: Tuple[str, ...]
                    ) -> Dict[str, List[int]]:
    """The weights of those modules: no optimizer slots, no object graph."""
    return {name: shape for name, shape in variables.items()
            if name.split('/', 1)[0] in modules and '.OPTIMIZER_SLOT' not in name}


# --- what this model expects --------------------------------------------------

def expected_variables(settings: Settings, modules: Tuple[str, ...]) -> Dict[str, List[int]]:
    """{name: shape} this model's modules are saved under: the model is built and its
    modules written to a temporary checkpoint (a few seconds; nothing is trained)."""
    params = experiment.build(settings, [], [], validation_steps=-1)
    model = retinanet.RetinaNetTask(params.task).build_model()
    items = {m: v for m, v in model.checkpoint_items.items() if m in modules}
    with tempfile.TemporaryDirectory(prefix='init_weights_') as folder:
        prefix = tf.train.Checkpoint(**items).write(os.path.join(folder, 'expected'))
        variables = dict(tf.train.list_variables(prefix))
    return model_variables(variables, modules)


def mismatches(expected: Dict[str, List[int]], found: Dict[str, List[int]]) -> List[str]:
    """One line per variable the model needs that the checkpoint lacks or shapes otherwise."""
    lines = []
    for name, shape in expected.items():
        short = name.replace('/.ATTRIBUTES/VARIABLE_VALUE', '')
        if name not in found:
            lines.append(f'{short}: {list(shape)} in this model, missing in the checkpoint')
        elif list(found[name]) != list(shape):
            lines.append(f'{short}: {list(shape)} in this model, {list(found[name])} in the '
                         'checkpoint')
    return lines


def _hint(module: str, s: Settings) -> str:
    """The flags that shape a module's variables, with this job's values."""
    flags = {'backbone': ('resnet_depth',),
             'decoder': ('fpn_type', 'fpn_min_level', 'fpn_max_level', 'head_num_filters'),
             'head': ('num_classes', 'bbox_aspect_ratios', 'head_num_filters',
                      'head_num_convs')}[module]
    shown = lambda v: ','.join(map(str, v)) if isinstance(v, tuple) else str(v)
    return ' '.join(f'--{f}={shown(getattr(s, f))}' for f in flags)


def check_fits(settings: Settings, prefix: str, found: Dict[str, List[int]],
               modules: Tuple[str, ...], what: str) -> None:
    """A UsageError naming the variables of `modules` that this model shapes otherwise."""
    lines = mismatches(expected_variables(settings, modules), found)
    if not lines:
        return
    parts = [m for m in modules if any(line.startswith(m + '/') for line in lines)]
    more = f'\n  ... and {len(lines) - _SHOWN} more' if len(lines) > _SHOWN else ''
    raise UsageError(
        f'{what}: the checkpoint {prefix} does not fit this model: {len(lines)} variables '
        f'of its {", ".join(modules)} are missing from the checkpoint or shaped otherwise:\n  ' + '\n  '.join(lines[:_SHOWN]) + more +
        '\nThe flags that shape them are, in this job: ' +
        '; '.join(_hint(p, settings) for p in parts) + '. Pass the values the checkpoint '
        'was trained with, load fewer modules (--init_checkpoint_modules), or choose another '
        'checkpoint.')


# --- an earlier job's classes ---------------------------------------------------

def anchors_per_location(settings: Settings) -> int:
    return len(settings.bbox_aspect_ratios) * _NUM_SCALES


def earlier_classes(prefix: str, variables: Dict[str, List[int]],
                    settings: Settings) -> Optional[int]:
    """The class count of the job that wrote the checkpoint: from its job_identity.json
    when it is beside the checkpoint, else from its class head's outputs."""
    recorded = io_utils.read_json(posixpath.join(posixpath.dirname(prefix),
                                                 identity.IDENTITY_FILE))
    if recorded and 'num_classes' in recorded.get('shape', {}):
        return int(recorded['shape']['num_classes'])
    shape = variables.get(_CLASSIFIER)
    per_location = anchors_per_location(settings)
    if shape and shape[-1] % per_location == 0:
        return shape[-1] // per_location - 1  # Model Garden counts background
    return None


# --- the decision -----------------------------------------------------------------

def _auto(settings: Settings, env) -> InitialWeights:
    depth = settings.resnet_depth
    if depth not in PUBLISHED:
        return scratch(NOT_FITTING.get(depth, f'no published ImageNet checkpoint for ResNet-{depth}'))
    what = '--init_checkpoint=auto'
    tried = []
    for path in (image_copy(depth, env), PUBLISHED[depth]):
        if not path.startswith('gs://') and not os.path.exists(path + '.index'):
            tried.append(f'{path}: not in this image')
            continue
        try:
            prefix, variables = read_index(path, what, AUTO_PROBE_SECONDS)
        except (StorageError, UsageError) as e:
            tried.append(f'{path}: {_reason(e, what, path)}')
            continue
        check_fits(settings, prefix, model_variables(variables, ('backbone',)),
                   ('backbone',), f'{what} ({prefix})')
        return InitialWeights(prefix, 'backbone', 'imagenet',
                              f'ImageNet ResNet-{depth} (backbone) from {prefix}')
    return scratch(f'no copy of the ImageNet ResNet-{depth} could be read: ' + '; '.join(tried))


def _reason(error: Exception, what: str, path: str) -> str:
    """The first sentence of a read error, without the flag and the path it names."""
    text = str(error)
    text = text[len(what) + 2:] if text.startswith(what + ': ') else text
    return text.replace(f' for {path}', '').split('. ', 1)[0].rstrip('.')


def _explicit(settings: Settings, path: str) -> InitialWeights:
    what = f'--init_checkpoint={path}'
    prefix, variables = read_index(path, what)
    present = modules_in(variables)
    if 'backbone' not in present:
        raise UsageError(
            f'{what}: the checkpoint {prefix} holds no backbone/ variables: it is not a Model '
            'Garden RetinaNet or ResNet classifier checkpoint (made by this job or by '
            'official.vision.train).')
    is_job = 'head' in present
    classes = earlier_classes(prefix, variables, settings) if is_job else None
    same_classes = is_job and classes == settings.num_classes
    modules = settings.init_checkpoint_modules
    if modules is None:
        modules = 'all' if same_classes else 'backbone,decoder' if is_job else 'backbone'
    wanted = module_names(modules)
    missing = [m for m in wanted if m not in present]
    if missing:
        raise UsageError(
            f'--init_checkpoint_modules={modules}: the checkpoint {prefix} has no '
            f'{", ".join(missing)} (it holds {", ".join(present)}). Pass '
            f'--init_checkpoint_modules={",".join(m for m in present if m != "head")}.')
    if 'head' in wanted and not same_classes:
        theirs = f'{classes} classes' if classes is not None else 'another class head'
        raise UsageError(
            f'--init_checkpoint_modules={modules}: the checkpoint {prefix} was trained with '
            f'{theirs}, this job has --num_classes={settings.num_classes}: its class head '
            'cannot be loaded. Pass --init_checkpoint_modules=backbone,decoder (the default '
            'for a checkpoint with other classes).')
    check_fits(settings, prefix, model_variables(variables, wanted), wanted, what)
    source = 'job' if is_job else 'checkpoint'
    kind = "an earlier job's checkpoint" if is_job else 'a ResNet classifier checkpoint'
    detail = ', '.join(module_names(modules))
    return InitialWeights(prefix, modules, source, f'{kind} ({detail}) from {prefix}')


def choose(settings: Settings, env=os.environ) -> InitialWeights:
    """The initial weights of a new job; checked and logged in one line."""
    value = settings.init_checkpoint
    if value == 'none':
        weights = scratch('--init_checkpoint=none')
    elif value == 'auto':
        weights = _auto(settings, env)
    else:
        weights = _explicit(settings, value)
    fell_back = value == 'auto' and not weights.checkpoint and settings.resnet_depth in PUBLISHED
    (logging.warning if fell_back else logging.info)('Initial weights: %s.', weights.description)
    return weights


def note_restart(settings: Settings) -> None:
    """A restarted job loads nothing: say so when the user named weights."""
    if settings.init_checkpoint not in ('auto', 'none'):
        logging.info('--init_checkpoint=%s is not used: the job resumes from its own '
                     'checkpoint.', settings.init_checkpoint)
