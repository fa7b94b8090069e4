"""The training job: train to max_steps with Model Garden's trainer under an
Orbit controller, evaluate every train_steps_per_eval steps, report AP, keep
the best SavedModel, resume from the newest checkpoint."""

import math
import os
import posixpath
import signal
import sys
import time
from typing import Any, Dict

import orbit
import tensorflow as tf
from absl import logging
from official.core import train_lib, train_utils

from object_detection_algo import (devices, experiment, export, outputs, preflight, records,
                                   reporting, storage_check)
from object_detection_algo.task import RetinaNetTask

EVALUATIONS_FILE = 'evaluations.json'  # in the checkpoint dir: what was evaluated
DATA_ERROR = 3


# What a record the decoder cannot take raises from inside the input pipeline.
_PIPELINE_ERRORS = (tf.errors.InvalidArgumentError, tf.errors.DataLossError)


class Preempted(Exception):
    """SIGTERM arrived; a checkpoint was written."""


def _validation_steps(settings: Dict[str, Any], num_records: int, batch: int) -> int:
    wanted = settings['num_eval_images']
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


class Job:

    def __init__(self, settings: Dict[str, Any], dirs: outputs.OutputDirs):
        self.s = settings
        self.dirs = dirs
        self.max_steps = settings['max_steps']
        self.interval = settings['train_steps_per_eval']
        self.preempted = False

        choice = devices.choose(os.environ, len(tf.config.list_physical_devices('GPU')))
        logging.info('Devices: %s (%s).', choice.kind.upper(), choice.reason)
        self.strategy = devices.make_strategy(choice)
        on_tpu = choice.kind == 'tpu'

        self.train_files = train_files = records.match_files(
            settings['training_data_path'], 'training_data_path')
        self.eval_files = eval_files = records.match_files(
            settings['validation_data_path'], 'validation_data_path')
        checked = preflight.run(settings, train_files, eval_files, dirs.checkpoints)  # first
        self.skipped = skip = checked.skip
        num_eval = checked.records['validation_data_path']
        if num_eval is None:  # the check read a sample: count them
            num_eval = records.count_records(eval_files)
        num_eval -= len(skip.get('validation_data_path', ()))
        if num_eval <= 0:
            raise records.DataError(
                f'--validation_data_path={settings["validation_data_path"]}: the '
                f'{len(eval_files)} matching file(s) hold no usable records.')
        logging.info('Data: %d training file(s), %d validation file(s) with %d records.',
                     len(train_files), len(eval_files), num_eval)
        replicas = self.strategy.num_replicas_in_sync
        if settings['train_batch_size'] % replicas:
            raise records.DataError(
                f'--train_batch_size={settings["train_batch_size"]} does not split over the '
                f'{replicas} devices in use: pass a multiple of {replicas}.')
        batch = experiment.eval_batch_size(settings, replicas)
        self.params = experiment.build(
            settings, train_files, eval_files,
            validation_steps=_validation_steps(settings, num_eval, batch),
            num_replicas=replicas, data_dtype='bfloat16' if on_tpu else 'float32',
            drop_eval_remainder=on_tpu)
        if on_tpu:
            tf.keras.mixed_precision.set_global_policy('mixed_bfloat16')

        self.best = export.BestModel(dirs.model, dirs.checkpoints)
        self.tuning = reporting.TuningReporter(dirs.trial)
        tf.io.gfile.makedirs(dirs.checkpoints)
        self.evaluations_path = posixpath.join(dirs.checkpoints, EVALUATIONS_FILE)
        self.evaluations = export.read_json(self.evaluations_path) or {'evaluations': []}

        task = RetinaNetTask(self.params.task, skip={
            True: skip.get('training_data_path', ()), False: skip.get('validation_data_path', ())})
        with self.strategy.scope():
            trainer = train_utils.create_trainer(self.params, task, train=True, evaluate=True)
        self.progress = reporting.ProgressLog(
            trainer.global_step, self.max_steps, settings['train_batch_size'])
        summaries = lambda sub: orbit.utils.SummaryManager(
            posixpath.join(dirs.tensorboard, sub), tf.summary.scalar,
            global_step=trainer.global_step)
        self.runner = train_lib.OrbitExperimentRunner(
            distribution_strategy=self.strategy, task=task, mode='train_and_eval',
            params=self.params, model_dir=dirs.checkpoints, trainer=trainer,
            train_actions=[self.progress, self._check_preemption],
            summary_manager=summaries('train'), eval_summary_manager=summaries('validation'))
        self.controller = self.runner.controller

    def step(self) -> int:
        return int(self.runner.trainer.global_step.numpy())

    def _check_preemption(self, _output) -> None:
        if self.preempted:
            self.controller.save_checkpoint()
            raise Preempted()

    def _evaluated(self, step: int) -> bool:
        return any(e['step'] == step for e in self.evaluations['evaluations'])

    def _best_ap(self) -> float:
        best = self.best.metrics()
        return best['metrics']['AP'] if best else -1.0

    def _bad_data(self, flag: str, error: tf.errors.OpError, saved: str) -> records.DataError:
        """The DataError naming the records behind a pipeline failure; re-raises
        the failure itself when every record passes the check."""
        found = preflight.name_bad_records(
            self.s, flag, self.train_files if flag == 'training_data_path' else self.eval_files,
            preflight.pipeline_failure(error.message), self.dirs.checkpoints, saved,
            self.skipped.get(flag, ()))
        if found is None:
            raise error
        return found

    def train_to(self, target: int) -> None:
        try:
            self.controller.train(steps=target, checkpoint_at_completion=True)
        except _PIPELINE_ERRORS as e:
            self.controller.save_checkpoint()  # the steps done so far are kept
            step = self.step()
            raise self._bad_data('training_data_path', e, (
                f'Training stopped at step {step}; its checkpoint is saved and the best model '
                f'is untouched: a restart resumes from step {step}.')) from None

    def evaluate(self) -> None:
        step = self.step()
        start = time.time()
        try:
            output = self.controller.evaluate(steps=self.params.trainer.validation_steps)
        except _PIPELINE_ERRORS as e:
            raise self._bad_data('validation_data_path', e, (
                f'The evaluation at step {step} did not finish; the checkpoint of step {step} '
                'is saved and the best model is untouched: a restart resumes from there and '
                'evaluates.')) from None
        metrics = {k: float(output[k]) for k in reporting.COCO_METRICS}
        ap = metrics['AP']
        self.tuning.report(ap, step)
        best_ap = self._best_ap()
        exported = ap > best_ap
        if exported:
            self.best.replace(self.params, self.controller.checkpoint_manager.latest_checkpoint, {
                'step': step, 'metrics': metrics, 'flags': self.s})
        self.evaluations['evaluations'].append(
            {'step': step, 'metrics': metrics, 'exported': exported})
        export.write_json(self.evaluations_path, self.evaluations)
        logging.info('eval at step %d/%d | AP %.4f | AP50 %.4f | AP75 %.4f | %s | %.0fs',
                     step, self.max_steps, ap, metrics['AP50'], metrics['AP75'],
                     f'new best, exported to {self.dirs.model}' if exported
                     else f'best stays {best_ap:.4f}', time.time() - start)
        self.progress.restart_clock()

    def run(self) -> None:
        self.best.recover()
        step = self.step()
        if step:
            logging.info('Resuming from the checkpoint at step %d in %s.', step, self.dirs.checkpoints)
        if step >= self.max_steps and self._evaluated(step) and self.best.metrics():
            logging.info('Training already reached max_steps=%d; the final evaluation and '
                         'the best model exist. Nothing to do.', self.max_steps)
            return
        at_eval_point = step and (step % self.interval == 0 or step >= self.max_steps)
        if at_eval_point and (not self._evaluated(step) or not self.best.metrics()):
            self.evaluate()  # the previous run stopped between training and evaluation
        self.progress.restart_clock()
        while step < self.max_steps:
            target = min((step // self.interval + 1) * self.interval, self.max_steps)
            self.train_to(target)
            step = self.step()
            self.evaluate()
        best = self.best.metrics()
        logging.info('Done: %d steps. Best AP %.4f (AP50 %.4f) at step %d, model in %s.',
                     step, best['metrics']['AP'], best['metrics']['AP50'], best['step'],
                     self.dirs.model)


def run(settings: Dict[str, Any], dirs: outputs.OutputDirs) -> int:
    logging.info('Outputs: checkpoints %s, best model %s, TensorBoard %s%s.',
                 dirs.checkpoints, dirs.model, dirs.tensorboard,
                 f', trial {dirs.trial}' if dirs.trial else '')
    try:
        storage_check.check_paths(settings, dirs)
        job = Job(settings, dirs)
    except records.DataError as e:
        logging.error('%s', e)
        sys.stderr.write(f'error: {e}\n')
        return DATA_ERROR

    def on_sigterm(signum, frame):
        logging.warning('SIGTERM: saving a checkpoint at the end of this training loop.')
        job.preempted = True
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        job.run()
    except records.DataError as e:
        logging.error('%s', e)
        sys.stderr.write(f'error: {e}\n')
        return DATA_ERROR
    except Preempted:
        logging.warning('Stopped by SIGTERM at step %d; the checkpoint is saved, a '
                        'restart resumes from it.', job.step())
        return 143
    except tf.errors.PermissionDeniedError as e:
        message = (f'permission denied by the storage, stopping at step {job.step()}: '
                   f'{storage_check.one_line(e.message)}. {storage_check.WRITE_ADVICE} A restart '
                   'resumes from the last checkpoint.')
        logging.error('%s', message)
        sys.stderr.write(f'error: {message}\n')
        return DATA_ERROR
    return 0
