"""The places where the project adapts Model Garden's and hypertune's
internals (object_detection_algo/adapters/) still fit the installed versions:
these fail on an upgrade that would otherwise change behaviour silently."""

import contextlib
import inspect
import io
import json

import hypertune
import pytest

from object_detection_algo.adapters import coco_metrics, hypertune_file, retinanet_task
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


def test_best_f1_on_a_hand_counted_ranking():
    """One class, 4 true boxes; detections by score: hit .9, hit .8, miss .7, hit .6,
    miss .5. Counting by hand: at score >= .6, precision 3/4 and recall 3/4 give
    F1 .75, the best (>= .8: 1 and 1/2, F1 .67; >= .5: 3/5 and 3/4, F1 .67)."""
    from pycocotools import coco, cocoeval
    images = [{'id': i} for i in range(1, 5)]
    truth = [{'id': i, 'image_id': i, 'category_id': 1, 'bbox': [10, 10, 20, 20], 'area': 400,
              'iscrowd': 0} for i in range(1, 5)]
    found = [{'id': n, 'image_id': image, 'category_id': 1, 'bbox': box, 'score': score,
              'area': 400, 'iscrowd': 0}
             for n, (image, box, score) in enumerate([
                 (1, [10, 10, 20, 20], .9), (2, [10, 10, 20, 20], .8), (3, [60, 60, 20, 20], .7),
                 (3, [10, 10, 20, 20], .6), (4, [60, 60, 20, 20], .5)], 1)]
    gt, dt = coco.COCO(), coco.COCO()
    gt.dataset = {'images': images, 'annotations': truth, 'categories': [{'id': 1}]}
    dt.dataset = {'images': images, 'annotations': found, 'categories': [{'id': 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt.createIndex()
        evaluation = cocoeval.COCOeval(gt, dt, iouType='bbox')
        evaluation.evaluate()
        evaluation.accumulate()
    point = coco_metrics.best_f1(evaluation)[1]
    assert point == pytest.approx({'f1': 0.75, 'score_threshold': 0.6, 'precision': 0.75,
                                   'recall': 0.75})
    outputs = coco_metrics.per_class_outputs(evaluation)
    back = coco_metrics.per_class_from_outputs(outputs)[1]
    assert back['score_threshold'] == pytest.approx(0.6)
    assert back['num_boxes'] == 4 and isinstance(back['num_boxes'], int)


def test_internals_we_replace_still_exist():
    import orbit
    from official.vision.evaluation import coco_evaluator
    assert callable(orbit.controller._log)
    assert callable(coco_evaluator.COCOEvaluator._retrieve_per_category_metrics)


def test_our_coco_evaluator_gets_the_arguments_model_garden_gives_its_own():
    from official.vision.tasks import retinanet
    def keywords(source, call):
        body = source.split(call, 1)[1].split(')', 1)[0]
        return {part.split('=', 1)[0].strip() for part in body.split(',') if '=' in part}
    upstream = keywords(inspect.getsource(retinanet.RetinaNetTask.build_metrics),
                        'coco_evaluator.COCOEvaluator(')
    ours = keywords(inspect.getsource(retinanet_task.RetinaNetTask.build_metrics),
                    'COCOEvaluator(')
    assert upstream == ours


def test_model_gardens_runner_still_builds_its_checkpoint_manager_through_the_hook():
    """adapters/follower_runner.py replaces the manager of a cluster task that is not the chief."""
    from official.core import train_lib
    source = inspect.getsource(train_lib.OrbitExperimentRunner.__init__)
    assert 'self._checkpoint_manager = self._maybe_build_checkpoint_manager()' in source
    for name in ('trainer', 'params', 'model_dir'):
        assert isinstance(getattr(train_lib.OrbitExperimentRunner, name), property), name
