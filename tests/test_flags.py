"""Flag parsing and validation through the real absl parser, table-driven."""

import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags

from conftest import ENTRYPOINT, ROOT
from object_detection_algo.training import cli, flag_table, settings

REQUIRED = ['--training_data_path=/d/train*', '--validation_data_path=/d/val*',
            '--num_classes=3', '--max_steps=1000', '--job-dir=/tmp/out']


def parse(args):
    """Parses with a fresh absl FlagValues, as the entrypoint does."""
    cli.define_flags()
    flags.FLAGS.unparse_flags()
    cli.parse(['entrypoint.py', *args])
    settings, dirs = cli.resolved()
    return settings, dirs


def parse_error(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(args)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def test_defaults_match_the_contract():
    s, _ = parse(REQUIRED)
    expected = {
        'train_batch_size': 32, 'num_eval_images': 0, 'train_steps_per_eval': 1000,
        'image_size': (640, 640), 'resnet_depth': 50, 'fpn_type': 'fpn',
        'fpn_min_level': 3, 'fpn_max_level': 7, 'anchor_size': 4.0,
        'bbox_aspect_ratios': (1.0, 2.0, 0.5), 'max_num_bboxes_in_training': 100,
        'max_num_bboxes_in_prediction': 100, 'nms_iou_threshold': 0.5,
        'nms_score_threshold': 0.05, 'focal_loss_alpha': 0.25, 'focal_loss_gamma': 1.5,
        'huber_loss_delta': 0.1, 'detection_loss_weight': 50.0, 'aug_rand_hflip': True,
        'aug_scale_min': 1.0, 'aug_scale_max': 1.0, 'auto_augmentation': False,
        'initial_learning_rate': 0.08, 'warmup_learning_rate': 0.0067, 'warmup_steps': 500,
        'learning_rate_decay_type': 'cosine', 'stepwise_learning_rate_steps': (666, 888),
        'stepwise_learning_rate_levels': (0.008, 0.0008), 'optimizer_type': 'momentum',
        'optimizer_arguments': {'momentum': 0.9}, 'weight_decay': 0.0001,
    }
    for name, value in expected.items():
        got = getattr(s, name)
        assert got == pytest.approx(value) if isinstance(value, float) else got == value, name


@pytest.mark.parametrize('args, name, value', [
    (['--train_batch_size', '8'], 'train_batch_size', 8),  # --name value form
    (['--image_size=960,1280'], 'image_size', (960, 1280)),
    (['--image_size=512'], 'image_size', (512, 512)),  # one number: a square
    (['--job_dir=/tmp/out/'], 'job_dir', '/tmp/out/'),  # both spellings, one value
    (['--allow_data_change'], 'allow_data_change', True),
    (['--bbox_aspect_ratios=1.0, 2.0'], 'bbox_aspect_ratios', (1.0, 2.0)),
    (['--aug_rand_hflip=FALSE'], 'aug_rand_hflip', False),
    (['--aug_rand_hflip=True'], 'aug_rand_hflip', True),
    (['--noaug_rand_hflip'], 'aug_rand_hflip', False),
    (['--auto_augmentation'], 'auto_augmentation', True),
    (['--fpn_type=NASFPN'], 'fpn_type', 'nasfpn'),
    (['--learning_rate_decay_type=step'], 'learning_rate_decay_type', 'stepwise'),
    (['--stepwise_learning_rate_steps=100,200', '--stepwise_learning_rate_levels=0.1,0.01'],
     'stepwise_learning_rate_levels', (0.1, 0.01)),
    (['--optimizer_type=adam', '--optimizer_arguments=beta_1=0.8,amsgrad=true'],
     'optimizer_arguments', {'beta_1': 0.8, 'amsgrad': True}),
    (['--optimizer_type=adam'], 'optimizer_arguments', {}),
    (['--max_steps=2000.0'], 'max_steps', 2000),  # tuning services send floats
])
def test_values_parse(args, name, value):
    s, _ = parse(REQUIRED + args)
    assert getattr(s, name) == value


def test_job_dir_has_two_spellings():
    base = [a for a in REQUIRED if not a.startswith('--job-dir')]
    assert parse(base + ['--job_dir=/x/y'])[1].model == '/x/y/model'
    assert parse(base + ['--job-dir', 'gs://b/run/'])[1].checkpoints == 'gs://b/run/checkpoints'


@pytest.mark.parametrize('args, message', [
    (['--num_classes=0'], '--num_classes=0 is not valid'),
    (['--max_steps=abc'], '--max_steps=abc is not valid'),
    (['--resnet_depth=42'], 'Allowed: 18, 34, 50, 101, 152, 200'),
    (['--fpn_type=bifpn'], 'Allowed: fpn, nasfpn'),
    (['--fpn_min_level=6', '--fpn_max_level=5'], 'fpn_min_level=6 is above'),
    (['--fpn_max_level=8'], '--fpn_max_level=8 is not valid'),
    (['--image_size=64,640'], 'each side must be at least 2^7 = 128'),
    (['--image_size=1,2,3'], '--image_size=1,2,3 is not valid'),
    (['--nms_iou_threshold=0'], 'Allowed: (0, 1]'),
    (['--nms_score_threshold=1'], 'Allowed: [0, 1)'),
    (['--focal_loss_alpha=1'], '--focal_loss_alpha=1 is not valid'),
    (['--aug_scale_min=1.5'], '--aug_scale_min=1.5 is not valid'),
    (['--aug_scale_max=0.5'], '--aug_scale_max=0.5 is not valid'),
    (['--aug_rand_hflip=maybe'], '--aug_rand_hflip=maybe is not valid. Allowed: true, false'),
    (['--job_dir=/other'], '--job-dir was given 2 different values (/tmp/out, /other)'),
    (['--bbox_aspect_ratios=1,-2'], '--bbox_aspect_ratios=1,-2 is not valid'),
    (['--warmup_steps=1000'], '--warmup_steps=1000 is not below --max_steps=1000'),
    (['--initial_learning_rate=0'], '--initial_learning_rate=0 is not valid'),
    (['--learning_rate_decay_type=linear'], 'Allowed: cosine, stepwise'),
    (['--stepwise_learning_rate_steps=500,100'], 'strictly increasing'),
    (['--stepwise_learning_rate_steps=100,2000'], 'strictly increasing'),
    (['--stepwise_learning_rate_steps=100,200', '--stepwise_learning_rate_levels=0.1'],
     'one learning rate > 0 per step'),
    (['--optimizer_type=sgd'], 'Allowed: momentum, adam, rmsprop'),
    (['--optimizer_arguments=beta_1=0.5'], '"beta_1" is not an argument of the momentum'),
    (['--optimizer_arguments=momentum'], 'is not key=value'),
    (['--weight_decay=-1'], '--weight_decay=-1 is not valid'),
    (['--num_eval_images=-1'], '--num_eval_images=-1 is not valid'),
    (['--unknown_flag=1'], "Unknown command line flag 'unknown_flag'"),
    (['stray'], 'unexpected argument(s): stray'),
])
def test_bad_values_exit_2_naming_flag(args, message, capsys):
    assert message in parse_error(REQUIRED + args, capsys)


@pytest.mark.parametrize('missing', ['training_data_path', 'validation_data_path',
                                     'num_classes', 'max_steps'])
def test_required_flags(missing, capsys):
    args = [a for a in REQUIRED if not a.startswith(f'--{missing}=')]
    assert f'--{missing} is required' in parse_error(args, capsys)


@pytest.mark.parametrize('tf_config, message', [
    ('{"task": {"trial": 3', 'TF_CONFIG is not valid JSON (Expecting'),
    ('[1, 2]', 'TF_CONFIG must be a JSON object'),
    ('{"task": "master"}', 'TF_CONFIG must be a JSON object with an object "task"'),
])
def test_tf_config_that_is_not_a_json_object_is_refused(tf_config, message, capsys,
                                                        monkeypatch):
    monkeypatch.setenv('TF_CONFIG', tf_config)
    assert message in parse_error(REQUIRED, capsys)


def test_output_root_is_required_without_vertex(capsys, monkeypatch):
    monkeypatch.delenv('AIP_MODEL_DIR', raising=False)
    args = [a for a in REQUIRED if not a.startswith('--job-dir')]
    assert '--job-dir is required' in parse_error(args, capsys)


def test_padding_to_the_largest_stride():
    s, _ = parse(REQUIRED + ['--image_size=960,1280'])
    assert s.input_size == (1024, 1280)


# The Python type each kind of flag resolves to, as Settings declares it.
_KIND_TYPES = {'int': 'int', 'float': 'float', 'str': 'str', 'bool': 'bool',
               'size': 'Tuple[int, int]', 'int_list': 'Tuple[int, ...]',
               'float_list': 'Tuple[float, ...]', 'kv': 'Dict[str, Any]'}


def test_settings_has_one_typed_field_per_flag_in_table_order():
    fields = dataclasses.fields(settings.Settings)
    assert [settings.flag_name(f.name) for f in fields] == [
        f.name for f in flag_table.FLAGS_TABLE]
    for field, flag in zip(fields, flag_table.FLAGS_TABLE):
        declared = str(field.type).replace('typing.', '')
        expected = _KIND_TYPES[flag.kind]
        if flag.name in ('job-dir', 'init_checkpoint_modules'):  # None: not given
            expected = 'Optional[str]'
        assert declared in (expected, f"<class '{expected}'>"), (flag.name, declared)


def test_settings_are_frozen_and_written_under_flag_names():
    s, _ = parse(REQUIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.max_steps = 5
    written = s.as_flags()
    assert written['job-dir'] == '/tmp/out' and 'job_dir' not in written
    assert list(written) == [f.name for f in flag_table.FLAGS_TABLE]


def test_bad_flag_fails_before_tensorflow_is_imported():
    """The real entrypoint process: exit 2, message on stderr, TensorFlow untouched."""
    probe = (
        'import runpy, sys\n'
        f'sys.argv = ["entrypoint.py", "--max_steps=-5", *{REQUIRED[:3]!r}, "--job-dir=/tmp/x"]\n'
        'try:\n'
        f'    runpy.run_path({ENTRYPOINT!r}, run_name="__main__")\n'
        'except SystemExit as e:\n'
        '    print("exit", e.code, "tensorflow" in sys.modules)\n')
    result = subprocess.run([sys.executable, '-c', probe], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.stdout.strip() == 'exit 2 False'
    assert '--max_steps=-5 is not valid' in result.stderr


def test_docs_flag_table_is_generated_from_the_table():
    with open(os.path.join(ROOT, 'docs', 'flags.md')) as f:
        page = f.read()
    assert flag_table.markdown_table() in page, (
        'docs/flags.md table is stale: paste `python -m object_detection_algo flags-table`')
