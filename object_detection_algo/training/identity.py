"""What makes a restart the same job: the flags that shape the model and its
evaluation, and a fingerprint of the data (each matched file's size and
modification time: cheap, no record is read). Recorded beside the checkpoints
at the first start and compared at every restart: other model flags are
refused (exit 2), other data too (exit 3) unless --allow_data_change, which
starts a new data version so that "best" compares only evaluations on the
same data."""

import dataclasses
import posixpath
from typing import Any, Dict, List, Optional

from absl import logging

from object_detection_algo import io_utils
from object_detection_algo.errors import DataError, UsageError
from object_detection_algo.training.settings import Settings

IDENTITY_FILE = 'job_identity.json'  # in the checkpoint folder

# The checkpoint's variables and the anchors depend on these ...
MODEL_FLAGS = ('num_classes', 'resnet_depth', 'fpn_type', 'fpn_min_level', 'fpn_max_level',
               'image_size', 'anchor_size', 'bbox_aspect_ratios', 'head_num_filters',
               'head_num_convs')
# ... and the AP of an evaluation on these: other values make APs incomparable.
EVALUATION_FLAGS = ('num_eval_images', 'max_num_bboxes_in_prediction', 'nms_iou_threshold',
                    'nms_score_threshold')
_SHOWN = 5  # files named per kind of change


def shape_of(settings: Settings) -> Dict[str, Any]:
    """{flag: value} of the model and evaluation flags, as JSON holds them.
    image_size is the padded input size: 960 and 1000 make the same model."""
    values = {name: getattr(settings, name) for name in MODEL_FLAGS + EVALUATION_FLAGS}
    values['image_size'] = settings.input_size
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _show(value: Any) -> str:
    return ','.join(map(str, value)) if isinstance(value, list) else str(value)


def shape_changes(recorded: Dict[str, Any], current: Dict[str, Any]) -> List[str]:
    """One line per flag whose value differs: '--name: old at the first start, new now'."""
    return [f'--{name}: {_show(recorded[name])} at the first start, {_show(current[name])} now'
            for name in current if name in recorded and recorded[name] != current[name]]


@dataclasses.dataclass
class FileChanges:
    added: List[str]
    removed: List[str]
    changed: List[str]  # other size or modification time

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def text(self) -> str:
        parts = []
        for kind, paths in (('added', self.added), ('removed', self.removed),
                            ('changed (size or modification time)', self.changed)):
            if paths:
                more = f' and {len(paths) - _SHOWN} more' if len(paths) > _SHOWN else ''
                parts.append(f'{len(paths)} file(s) {kind}: {", ".join(paths[:_SHOWN])}{more}')
        return '; '.join(parts)


def file_changes(recorded: Dict[str, List[int]], current: Dict[str, List[int]]) -> FileChanges:
    """What differs between two {path: [size, mtime_ns]} fingerprints."""
    return FileChanges(added=sorted(set(current) - set(recorded)),
                       removed=sorted(set(recorded) - set(current)),
                       changed=sorted(p for p in set(recorded) & set(current)
                                      if list(recorded[p]) != list(current[p])))


def fingerprint(files: List[str]) -> Dict[str, List[int]]:
    """{path: [size, mtime_ns]}: one stat per file (on gs:// the object's size
    and update time, which a rewrite changes)."""
    import tensorflow as tf
    out = {}
    for path in files:
        stat = tf.io.gfile.stat(path)
        out[path] = [int(stat.length), int(stat.mtime_nsec)]
    return out


@dataclasses.dataclass
class Identity:
    shape: Dict[str, Any]  # shape_of(settings)
    data: Dict[str, Dict[str, List[int]]]  # data flag -> fingerprint of its files
    data_version: int = 1  # +1 at each allowed change of the validation data
    # Data flags whose files the user was told to fix (the job stopped on their bad
    # records mid-job): the next start accepts their change without --allow_data_change.
    fix_expected: List[str] = dataclasses.field(default_factory=list)
    # What the first start loaded (init_weights.InitialWeights.as_json()); a restart loads nothing.
    initial_weights: Dict[str, Any] = dataclasses.field(default_factory=dict)

    def summary(self) -> Dict[str, Any]:
        """What metrics.json records: the shape, the data version, files and bytes per set."""
        return {'shape': self.shape, 'data_version': self.data_version,
                'data': {flag: {'files': len(fp), 'bytes': sum(v[0] for v in fp.values())}
                         for flag, fp in self.data.items()}}


def _path(checkpoint_dir: str) -> str:
    return posixpath.join(checkpoint_dir, IDENTITY_FILE)


def read(checkpoint_dir: str) -> Optional[Identity]:
    """The identity of the job whose progress (a checkpoint) is in the folder;
    None for a new job, or one started before identities were recorded."""
    import tensorflow as tf
    if tf.train.latest_checkpoint(checkpoint_dir) is None:
        return None  # nothing to resume: whatever an earlier start recorded does not bind
    content = io_utils.read_json(_path(checkpoint_dir))
    return Identity(**content) if content else None


def write(checkpoint_dir: str, identity: Identity) -> None:
    io_utils.write_json(_path(checkpoint_dir), dataclasses.asdict(identity))


def check_shape(previous: Optional[Identity], settings: Settings, where: str) -> None:
    """A UsageError naming each model or evaluation flag that differs from the first start."""
    if previous is None:
        return
    changes = shape_changes(previous.shape, shape_of(settings))
    if changes:
        raise UsageError(
            f'{where} holds the checkpoints of a job started with other model or evaluation '
            'settings; they cannot be resumed with these:\n  ' + '\n  '.join(changes) +
            '\nRestart with the values of the first start, or give a new --job-dir to train '
            'with the new ones.')


def check_data(previous: Optional[Identity], settings: Settings,
               files: Dict[str, List[str]], where: str) -> Identity:
    """This start's identity. A DataError naming the files added, removed or
    changed since the first start, unless --allow_data_change; then a change of
    the validation set starts a new data version."""
    current = Identity(shape_of(settings), {flag: fingerprint(paths)
                                            for flag, paths in files.items()})
    if previous is None:
        return current
    changes = {flag: file_changes(previous.data.get(flag, {}), fp)
               for flag, fp in current.data.items()}
    changes = {flag: c for flag, c in changes.items() if c}
    lines = [f'--{flag}={getattr(settings, flag)}: {c.text()}' for flag, c in changes.items()]
    current.data_version = previous.data_version
    current.initial_weights = previous.initial_weights
    if not changes:
        current.fix_expected = previous.fix_expected  # not fixed yet: still expected
        return current
    fixed = set(changes) <= set(previous.fix_expected)
    if fixed:
        logging.warning('The data changed after the job stopped on its bad records (%s): '
                        'going on with it.', '; '.join(lines))
    elif not settings.allow_data_change:
        raise DataError(
            f'The data differs from the first start of the job in {where}:\n  ' +
            '\n  '.join(lines) + '\nThe best model is chosen by comparing AP across '
            'evaluations, which only means something on the same validation data, so the job '
            'stops before training. Restore the data, give a new --job-dir, or pass '
            '--allow_data_change to go on with this data.')
    if 'validation_data_path' in changes:
        current.data_version += 1
        logging.warning('The validation data changed since the first start (%s). '
                        'Evaluations from now on are data version %d and are compared only '
                        'with each other: the next one replaces the best model.',
                        '; '.join(lines), current.data_version)
    elif not fixed:
        logging.warning('--allow_data_change: the training data changed since the first '
                        'start (%s); the validation data is the same, so evaluations stay '
                        'comparable.', '; '.join(lines))
    return current


def expect_fix(checkpoint_dir: str, flag: str) -> None:
    """Records that the job stopped on bad records of --flag, whose files the
    user will now fix: the next start accepts their change."""
    content = io_utils.read_json(_path(checkpoint_dir))
    if content is None:
        return
    recorded = Identity(**content)
    recorded.fix_expected = sorted(set(recorded.fix_expected) | {flag})
    write(checkpoint_dir, recorded)
