"""The training job: train to max_steps with Model Garden's trainer under an
Orbit controller, evaluate every train_steps_per_eval steps, report AP, keep
the best SavedModel, resume from the newest checkpoint.

`build` assembles a `Job` from its parts (devices, the data plan, the config,
the runner); `run` is the entrypoint's one call and the one place its errors
become exit statuses."""

import os
import posixpath
import signal
import time
from typing import Any, Dict, List, Optional

import orbit
import tensorflow as tf
from absl import logging
from official.core import train_lib, train_utils
from official.modeling import performance
from official.vision.utils import summary_manager

from object_detection_algo import errors, io_utils, logs
from object_detection_algo.adapters import coco_metrics, orbit_log
from object_detection_algo.adapters.coco_metrics import COCO_METRICS
from object_detection_algo.adapters.hypertune_file import HyperTuneFile
from object_detection_algo.adapters.retinanet_task import RetinaNetTask
from object_detection_algo.data import record_checks
from object_detection_algo.training import (best_model, chief_evaluation, cluster, data_check,
                                            devices, experiment, identity, init_weights,
                                            model_card, multiworker, precision, reporting,
                                            storage_check)
from object_detection_algo.training.outputs import OutputDirs
from object_detection_algo.training.settings import Settings

EVALUATIONS_FILE = 'evaluations.json'  # in the checkpoint dir: what was evaluated
IMAGES_PER_EVALUATION = 4  # validation images drawn with their detections for TensorBoard

# What a record the decoder cannot take raises from inside the input pipeline.
PIPELINE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


class Preempted(Exception):
    """SIGTERM arrived; the job stops at the end of the current loop."""


class PreemptionStop:
    """An Orbit train action: raises Preempted at the end of the loop in which
    SIGTERM arrived (the job saves a checkpoint there)."""

    def __init__(self):
        self.requested = False
        self.agree = None  # on a cluster: whether any task got SIGTERM (a collective)

    def on_sigterm(self, signum, frame) -> None:
        logging.warning('SIGTERM: saving a checkpoint at the end of this training loop.')
        self.requested = True

    def __call__(self, _output) -> None:
        stopping = self.agree(self.requested) if self.agree else self.requested
        if stopping:
            raise Preempted()


def build_runner(params, task, trainer, strategy, dirs: OutputDirs, train_actions: List,
                 runner_class=train_lib.OrbitExperimentRunner) -> train_lib.OrbitExperimentRunner:
    """Model Garden's runner for train-and-evaluate, with our summaries' folders
    (validation: the scalars, and a few images with their detections drawn)."""
    return runner_class(
        distribution_strategy=strategy, task=task, mode='train_and_eval',
        params=params, model_dir=dirs.checkpoints, trainer=trainer,
        train_actions=train_actions,
        summary_manager=orbit.utils.SummaryManager(
            posixpath.join(dirs.tensorboard, 'train'), tf.summary.scalar,
            global_step=trainer.global_step),
        eval_summary_manager=summary_manager.ImageScalarSummaryManager(
            posixpath.join(dirs.tensorboard, 'validation'), tf.summary.scalar,
            tf.summary.image, max_outputs=IMAGES_PER_EVALUATION,
            global_step=trainer.global_step))


class Job:

    def __init__(self, settings: Settings, dirs: OutputDirs, data: data_check.DataPlan,
                 params, runner: train_lib.OrbitExperimentRunner,
                 progress: reporting.ProgressLog, tuning: HyperTuneFile,
                 job_identity: identity.Identity, card_facts: Dict[str, Any],
                 link: Optional[multiworker.Link] = None,
                 chief_eval: Optional[chief_evaluation.ChiefEvaluator] = None):
        self.settings = settings
        self.card_facts = card_facts  # class names and data, for the model card
        self.started = time.time()
        self.identity = job_identity
        self.dirs = dirs
        self.data = data
        self.params = params
        self.runner = runner
        self.controller = runner.controller
        self.progress = progress
        self.tuning = tuning
        self.link = link  # on a cluster: this chief's messages to the other tasks
        self.chief_eval = chief_eval
        self.best = best_model.BestModel(dirs.model, dirs.checkpoints,
                                         best_model.Exporter(params))
        self.evaluations_path = posixpath.join(dirs.checkpoints, EVALUATIONS_FILE)
        self.evaluations = io_utils.read_json(self.evaluations_path) or {'evaluations': []}

    def step(self) -> int:
        return int(self.runner.trainer.global_step.numpy())

    def _same_data(self, entry: Dict[str, Any]) -> bool:
        """An evaluation (or the best model's) on this start's validation data."""
        return entry.get('data_version', 1) == self.identity.data_version

    def _evaluated(self, step: int) -> bool:
        return any(e['step'] == step and self._same_data(e)
                   for e in self.evaluations['evaluations'])

    def _best(self) -> Optional[Dict[str, Any]]:
        """metrics.json of the best model, when it was evaluated on this data."""
        best = self.best.metrics()
        return best if best and self._same_data(best) else None

    def _best_ap(self) -> float:
        best = self._best()
        return best['metrics']['AP'] if best else -1.0

    def _bad_data(self, flag: str, error: tf.errors.OpError, saved: str) -> errors.DataError:
        """The DataError naming the records behind a pipeline failure; re-raises
        the failure itself when every record passes the check."""
        failure = data_check.pipeline_failure(error.message)
        files = self.data.files[flag]
        logging.error('The input pipeline of --%s failed: %s\nReading every record of its %d '
                      'file(s) to find the bad one(s). %s', flag, failure, len(files), saved)
        found = data_check.find_bad_records(self.settings, flag, files, self.dirs.checkpoints,
                                            self.data.skip.get(flag, ()))
        if found is None:
            raise error
        identity.expect_fix(self.dirs.checkpoints, flag)
        report = found.report
        return errors.DataError(
            f'--{flag}={getattr(self.settings, flag)}: the input pipeline failed on a record the '
            f'check before training let through ({failure}). Every record checked now: '
            f'{report.count(record_checks.ERROR)} error(s):\n{report.summary()}\n{saved} Fix '
            f'or remove the records and start the job again. Full report: {found.path}')

    def train_to(self, target: int) -> None:
        if self.link:
            self.link.send('train', target=target)
            self.link.others_waiting = False
        try:
            self.controller.train(steps=target, checkpoint_at_completion=True)
        except Preempted:
            self.controller.save_checkpoint()
            raise
        except PIPELINE_ERRORS as e:
            if self.link:  # a save is a collective, which the failure broke on every task
                self.link.report(e)
                raise self._bad_data('training_data_path', e, (
                    f'The cluster stopped near step {self.step()}; the best model is untouched: '
                    'a restart of the cluster resumes from the last checkpoint.')) from None
            self.controller.save_checkpoint()  # the steps done so far are kept
            step = self.step()
            raise self._bad_data('training_data_path', e, (
                f'Training stopped at step {step}; its checkpoint is saved and the best model '
                f'is untouched: a restart resumes from step {step}.')) from None
        except tf.errors.OpError as e:
            if self.link and self.link.is_lost_task(e):
                raise self.link.lost(
                    e, _step_of(tf.train.latest_checkpoint(self.dirs.checkpoints))) from None
            raise
        if self.link:
            self.link.others_waiting = True

    def _evaluation_output(self) -> Dict[str, Any]:
        if self.chief_eval:  # on a cluster: the chief alone (training/chief_evaluation.py)
            return self.chief_eval.evaluate(self.controller.checkpoint_manager.latest_checkpoint)
        return self.controller.evaluate(steps=self.params.trainer.validation_steps)

    def evaluate(self) -> None:
        step = self.step()
        start = time.time()
        try:
            with logs.library_prints():  # pycocotools' tables
                output = self._evaluation_output()
        except PIPELINE_ERRORS as e:
            raise self._bad_data('validation_data_path', e, (
                f'The evaluation at step {step} did not finish; the checkpoint of step {step} '
                'is saved and the best model is untouched: a restart resumes from there and '
                'evaluates.')) from None
        metrics = {k: float(output[k]) for k in COCO_METRICS}
        per_class = coco_metrics.per_class_from_outputs(output)
        ap = metrics['AP']
        self.tuning.report_ap(ap, step)
        best_ap = self._best_ap()
        exported = ap > best_ap
        evaluated = time.time()
        if exported:
            self.best.replace(
                self.controller.checkpoint_manager.latest_checkpoint,
                model_card.card(self.settings, step, metrics, per_class,
                                self.card_facts['names'], self.card_facts['data'], {
                                    'data_version': self.identity.data_version,
                                    'initial_weights': self.identity.initial_weights,
                                    'identity': self.identity.summary()}, self.started))
        self.evaluations['evaluations'].append(
            {'step': step, 'metrics': metrics, 'exported': exported,
             'per_class': {str(k): v for k, v in per_class.items()},
             'data_version': self.identity.data_version})
        io_utils.write_json(self.evaluations_path, self.evaluations)
        outcome = (f'new best, exported to {self.dirs.model} in {time.time() - evaluated:.1f}s'
                   if exported else f'best stays {best_ap:.4f}')
        logging.info('eval at step %d/%d | AP %.4f | AP50 %.4f | AP75 %.4f | %s | '
                     'evaluated in %.1fs', step, self.settings.max_steps, ap, metrics['AP50'],
                     metrics['AP75'], outcome, evaluated - start)
        self.progress.restart_clock()

    def run(self) -> None:
        try:
            self._run()
        except tf.errors.PermissionDeniedError as e:
            raise errors.StorageError(
                f'permission denied by the storage, stopping at step {self.step()}: '
                f'{storage_check.one_line(e.message)}. {storage_check.WRITE_ADVICE} A restart '
                'resumes from the last checkpoint.') from None

    def _run(self) -> None:
        max_steps, interval = self.settings.max_steps, self.settings.train_steps_per_eval
        self.best.recover()
        step = self.step()
        if step:
            logging.info('Resuming from the checkpoint at step %d in %s.', step, self.dirs.checkpoints)
        if step >= max_steps and self._evaluated(step) and self._best():
            logging.info('Training already reached max_steps=%d; the final evaluation and '
                         'the best model exist. Nothing to do.', max_steps)
            return
        at_eval_point = step and (step % interval == 0 or step >= max_steps)
        if at_eval_point and (not self._evaluated(step) or not self._best()):
            self.evaluate()  # the previous run stopped between training and evaluation
        self.progress.restart_clock()
        while step < max_steps:
            target = min((step // interval + 1) * interval, max_steps)
            self.train_to(target)
            step = self.step()
            self.evaluate()
        best = self.best.metrics()
        for line in model_card.table(best):
            logging.info('Best model, per class: %s', line)
        logging.info('Done: %d steps. Best AP %.4f (AP50 %.4f) at step %d, model in %s.',
                     step, best['metrics']['AP'], best['metrics']['AP50'], best['step'],
                     self.dirs.model)


def remove_unfinished_saves(checkpoint_dir: str) -> None:
    """Deletes the <prefix>_temp folders of checkpoint saves that were killed
    before they finished (a finished save removes its own)."""
    for folder in tf.io.gfile.glob(posixpath.join(checkpoint_dir, 'ckpt-*_temp')):
        tf.io.gfile.rmtree(folder)
        logging.warning('Removed %s, left by a checkpoint save that did not finish.', folder)


def build(settings: Settings, dirs: OutputDirs, stop: PreemptionStop,
          choice: devices.DeviceChoice, link: Optional[multiworker.Link] = None) -> Job:
    """The restart check, the strategy, the data check, the config, the trainer and its
    runner, on the devices run chose. On a cluster (`link`) the strategy is up and the
    other tasks wait for this chief's plan."""
    where = (f'--job-dir={settings.job_dir}' if settings.job_dir
             else f'the checkpoint folder {dirs.checkpoints}')
    previous = identity.read(dirs.checkpoints)
    identity.check_shape(previous, settings, where)  # before anything is built
    if link:
        strategy = link.strategy
        refused = cluster.batch_error(settings.train_batch_size, strategy.num_replicas_in_sync,
                                      link.cluster)
        if refused:
            raise errors.UsageError(refused)
    computing = precision.choose(settings.precision, choice.kind,
                                 precision.gpu_capabilities(), precision.cpu_flags())
    if link:  # the Devices: line named the cluster; the chief's precision is every task's
        logging.info('Precision %s (%s), for every task of the cluster.', computing.dtype,
                     computing.reason)
    else:
        logging.info('Devices: %s (%s); precision %s (%s).', choice.kind.upper(), choice.reason,
                     computing.dtype, computing.reason)
        strategy = devices.make_strategy(choice)
    latest = tf.train.latest_checkpoint(dirs.checkpoints)
    resuming = latest is not None
    if resuming:
        weights = None  # the job's own checkpoint is restored; nothing else is loaded
        init_weights.note_restart(settings)
    else:
        weights = init_weights.choose(settings)  # checked before the data is read
    files = data_check.match(settings)
    this_start = identity.check_data(previous, settings, files, where)
    if weights:
        this_start.initial_weights = weights.as_json()
    data = data_check.plan(settings, files, dirs.checkpoints)
    preflight = io_utils.read_json(posixpath.join(dirs.checkpoints, data_check.REPORT_FILE)) or {}
    card_facts = {'names': model_card.class_names(settings, preflight),
                  'data': model_card.data_used(settings, preflight, data.num_eval)}
    identity.write(dirs.checkpoints, this_start)
    remove_unfinished_saves(dirs.checkpoints)  # only once the job goes on
    params = experiment.for_job(settings, data.files, data.num_eval,
                                strategy.num_replicas_in_sync, on_tpu=choice.kind == 'tpu',
                                dtype=computing.dtype, weights=weights)
    performance.set_mixed_precision_policy(computing.dtype)  # as Model Garden's train.py does
    if link:
        link.share_plan(params, data.skip.get('training_data_path', ()), latest,
                        _step_of(latest), settings.as_flags())
    tuning = HyperTuneFile(dirs.metrics_file, dirs.trial or '0')
    io_utils.makedirs(dirs.checkpoints)
    task = RetinaNetTask(params.task, skip={
        True: data.skip.get('training_data_path', ()),
        False: data.skip.get('validation_data_path', ())})
    with strategy.scope():
        trainer = train_utils.create_trainer(params, task, train=True, evaluate=True)
    progress = reporting.ProgressLog(trainer.global_step, settings.max_steps,
                                     settings.train_batch_size)
    orbit_log.install()
    runner = build_runner(params, task, trainer, strategy, dirs, [progress, stop])
    chief_eval = chief_evaluation.ChiefEvaluator(
        params, settings, data.skip.get('validation_data_path', ()), trainer.global_step,
        runner.controller.eval_summary_manager) if link else None
    return Job(settings, dirs, data, params, runner, progress, tuning, this_start, card_facts,
               link, chief_eval)


def _step_of(checkpoint: Optional[str]) -> int:
    """The step of a checkpoint prefix ('.../ckpt-800'); 0 for none."""
    return int(checkpoint.rsplit('-', 1)[1]) if checkpoint else 0


def run(settings: Settings, dirs: OutputDirs) -> int:
    """The whole job; its exit status (errors.py lists them)."""
    logging.info('Outputs: checkpoints %s, best model %s, TensorBoard %s%s.',
                 dirs.checkpoints, dirs.model, dirs.tensorboard,
                 f', trial {dirs.trial}' if dirs.trial else '')
    stop = PreemptionStop()
    link = None
    try:
        choice = devices.choose(os.environ, len(tf.config.list_physical_devices('GPU')))
        if choice.cluster:  # every task connects first, so that all learn how the chief fares
            link = multiworker.connect(choice, stop.on_sigterm)
            stop.agree = link.any_task_stopping
            if not link.is_chief:
                from object_detection_algo.training import follower  # (it imports this module)
                return follower.run(settings, link, stop)
        storage_check.check_paths(settings, dirs)
        job = build(settings, dirs, stop, choice, link)
        signal.signal(signal.SIGTERM, stop.on_sigterm)
        job.run()
    except Preempted:
        logging.warning('Stopped by SIGTERM at step %d; the checkpoint is saved, a '
                        'restart resumes from it.', job.step())
        return errors.EXIT_PREEMPTED
    except errors.JobError as e:
        if link:
            link.finish(e.exit_status, str(e))
        return errors.report(e)
    if link:
        link.finish(errors.EXIT_OK)
    return errors.EXIT_OK
