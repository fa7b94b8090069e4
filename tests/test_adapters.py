"""The places where the project adapts Model Garden's and hypertune's
internals (object_detection_algo/adapters/) still fit the installed versions:
these fail on an upgrade that would otherwise change behaviour silently."""

import inspect
import json

import hypertune

from object_detection_algo.adapters import hypertune_file, retinanet_task
from object_detection_algo.training import experiment, flag_table

BASE = {'training_data_path': '/d/t*', 'validation_data_path': '/d/v*', 'job-dir': '/tmp/o',
        'num_classes': '3', 'max_steps': '10', 'warmup_steps': '0'}


def test_we_pass_every_argument_of_model_gardens_retinanet_parser():
    from official.vision.dataloaders import retinanet_input
    accepted = set(inspect.signature(retinanet_input.Parser.__init__).parameters) - {'self'}
    params = experiment.build(flag_table.resolve(BASE), ['a'], ['b'], validation_steps=1)
    passed = set(retinanet_task.parser_arguments(params.task, params.task.train_data))
    passed |= set(retinanet_task.PARSER_DEFAULTS_KEPT)
    assert passed == accepted, (
        f'Parser takes {sorted(accepted - passed)} that we do not pass, or no longer takes '
        f'{sorted(passed - accepted)}: update adapters/retinanet_task.py as Model Garden\'s '
        'RetinaNetTask.build_inputs does.')


def test_our_build_inputs_follows_model_gardens_parser_call():
    """Every Parser argument Model Garden's own build_inputs passes, we pass."""
    from official.vision.tasks import retinanet
    source = inspect.getsource(retinanet.RetinaNetTask.build_inputs)
    call = source.split('retinanet_input.Parser(', 1)[1].split('\n    )', 1)[0]
    upstream = {line.strip().split('=', 1)[0] for line in call.splitlines()
                if '=' in line and line.startswith('        ') and not line.startswith('         ')}
    params = experiment.build(flag_table.resolve(BASE), ['a'], ['b'], validation_steps=1)
    assert upstream == set(retinanet_task.parser_arguments(params.task, params.task.train_data))


def test_hypertune_file_sets_what_hypertunes_constructor_sets(tmp_path, monkeypatch):
    monkeypatch.setenv('CLOUD_ML_HP_METRIC_FILE', str(tmp_path / 'a' / 'output.metrics'))
    real = hypertune.HyperTune()
    ours = hypertune_file.HyperTuneFile(str(tmp_path / 'b' / 'output.metrics'), '4')
    assert set(vars(ours)) == set(vars(real))


def test_hypertune_file_writes_hypertunes_lines_and_keeps_an_earlier_runs(tmp_path):
    path = tmp_path / 'hp' / 'output.metrics'
    hypertune_file.HyperTuneFile(str(path), '4').report_ap(0.25, 10)
    resumed = hypertune_file.HyperTuneFile(str(path), '4')
    resumed.report_ap(0.5, 20)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(x['AP'], x['global_step'], x['trial']) for x in lines] == [
        ('0.25', '10', '4'), ('0.5', '20', '4')]


def test_hypertune_file_takes_a_bare_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hypertune_file.HyperTuneFile('output.metrics', '0').report_ap(0.1, 1)
    assert (tmp_path / 'output.metrics').exists()
