"""The job of a cluster task other than the chief: it trains its share when the
chief says so, and writes nothing the job keeps.

It checks nothing itself: the chief checks storage, the restart and the data,
then sends its plan (the config, the training records to skip, the checkpoint
to resume from), or the error every task then exits with. The follower builds
the same model under the same strategy, restores the chief's checkpoint, and
trains to each step the chief names; the checkpoints and summaries the
strategy needs it to write go to a scratch folder of its own, removed at the
end. It ends when the chief says so, with the chief's exit status.
"""

import functools
import os
import shutil
import tempfile
from typing import Any, Dict

import tensorflow as tf
from absl import logging
from official.core import exp_factory, train_utils
from official.modeling import performance

from object_detection_algo import errors
from object_detection_algo.adapters import orbit_log
from object_detection_algo.adapters.follower_runner import FollowerRunner
from object_detection_algo.adapters.retinanet_task import RetinaNetTask
from object_detection_algo.training import cluster as cluster_config
from object_detection_algo.training import data_check, experiment, job, reporting
from object_detection_algo.training.multiworker import Link
from object_detection_algo.training.outputs import OutputDirs
from object_detection_algo.training.settings import Settings


def _config(plan: Dict[str, Any]):
    """The chief's config, whatever flags this task was started with."""
    params = exp_factory.get_exp_config(experiment.PRESET)
    params.override(plan['params'], is_strict=True)
    return params


def _flag_differences(settings: Settings, chief_flags: Dict[str, Any]) -> str:
    mine = settings.as_flags()
    return ', '.join(f'--{name}' for name in sorted(chief_flags)
                     if _same(mine.get(name)) != _same(chief_flags[name]))


def _same(value):
    """Flags as JSON gives them back (tuples become lists)."""
    return list(value) if isinstance(value, tuple) else value


class Follower:

    def __init__(self, settings: Settings, link: Link, stop: job.PreemptionStop):
        self.settings = settings
        self.link = link
        self.stop = stop
        self.chief = '{} {}'.format(*link.cluster.chief)
        self.scratch = tempfile.mkdtemp(prefix=f'object_detection_{link.cluster.task_type}'
                                               f'{link.cluster.task_index}_')
        self.runner = None
        self.progress = None

    def run(self) -> int:
        logging.info('This task follows the chief (%s): the checkpoints and summaries the '
                     'strategy needs go to %s, removed at the end.', self.chief, self.scratch)
        try:
            plan = self.link.receive()
            if plan['kind'] == 'plan':
                self._build(plan)
                plan = self.link.receive()
            while plan['kind'] == 'train':
                self._train_to(plan['target'])
                plan = self.link.receive()
            return self._exit(plan)
        finally:
            self._clean()

    def _build(self, plan: Dict[str, Any]) -> None:
        differ = _flag_differences(self.settings, plan['flags'])
        if differ:
            logging.warning('This task was started with other values than the chief for %s: '
                            'it trains with the chief\'s.', differ)
        params = _config(plan)
        performance.set_mixed_precision_policy(tf.as_dtype(params.runtime.mixed_precision_dtype))
        strategy = self.link.strategy
        task = RetinaNetTask(params.task, skip={True: plan['skip'], False: ()})
        with strategy.scope():  # the same variables, in the same order, as the chief
            trainer = train_utils.create_trainer(params, task, train=True, evaluate=True)
        progress = reporting.ProgressLog(trainer.global_step, plan['flags']['max_steps'],
                                         plan['flags']['train_batch_size'])
        orbit_log.install()
        scratch = OutputDirs(checkpoints=os.path.join(self.scratch, 'checkpoints'),
                             model=os.path.join(self.scratch, 'model'),
                             tensorboard=os.path.join(self.scratch, 'tensorboard'), trial=None,
                             metrics_file=os.path.join(self.scratch, 'hypertune'))
        runner = functools.partial(FollowerRunner, resume_from=plan['restore'],
                                   resume_step=plan['step'])
        try:  # Orbit restores the chief's checkpoint here
            self.runner = job.build_runner(params, task, trainer, strategy, scratch,
                                           [progress, self.stop], runner_class=runner)
            restored = int(trainer.global_step.numpy())
            problem = (None if restored == plan['step'] else
                       f'it holds step {restored}, the chief\'s {plan["step"]}')
        except (tf.errors.NotFoundError, tf.errors.DataLossError,
                tf.errors.PermissionDeniedError, ValueError) as e:  # the restore's
            problem = str(e).strip().splitlines()[0][:300]
        if problem:
            error = errors.ClusterError(
                f'this task ({self.link.cluster.task_name}) cannot resume from the chief\'s '
                f'checkpoint {plan["restore"]} ({problem}). Every task reads it: the output '
                'folder (--job-dir, or AIP_CHECKPOINT_DIR) must be storage all machines share, '
                'such as gs://.')
            self.link.report(error)  # the chief waits for this task in its first step
            raise error
        self.progress = progress
        logging.info('Ready at step %d.', restored)

    def _train_to(self, target: int) -> None:
        controller = self.runner.controller
        self.progress.restart_clock()  # the chief's evaluation is not training time
        try:
            controller.train(steps=target, checkpoint_at_completion=True)
        except job.Preempted:
            controller.save_checkpoint()  # a collective: every task saves after this loop
            raise
        except job.PIPELINE_ERRORS as e:
            if 'Error reported from' not in e.message:
                self.link.report(e)  # this task's own records: stop the others now
            failure = cluster_config.cause(data_check.pipeline_failure(e.message))
            raise errors.DataError(
                f'the input pipeline failed during training ({failure[:500]}). The chief '
                f'({self.chief}) reads every record of --training_data_path and names the bad '
                'ones in its log and in data_failure_report.json beside the checkpoints.') from None
        except tf.errors.OpError as e:
            if self.link.is_lost_task(e):
                raise self.link.lost(e) from None
            raise

    def _exit(self, message: Dict[str, Any]) -> int:
        status = message['status']
        if status == errors.EXIT_OK:
            logging.info('Done: the chief (%s) ended the job.', self.chief)
            return status
        raise errors.ChiefStopped(
            f'the chief ({self.chief}) stopped the job: {message["message"]}', status)

    def _clean(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def run(settings: Settings, link: Link, stop: job.PreemptionStop) -> int:
    """The follower's whole job; its exit status (the chief's when it stops the job)."""
    follower = Follower(settings, link, stop)
    try:
        return follower.run()
    except job.Preempted:
        logging.warning('Stopped by SIGTERM on a task of the cluster; the chief saved the '
                        'checkpoint, a restart of the cluster resumes from it.')
        return errors.EXIT_PREEMPTED
    except errors.JobError as e:
        return errors.report(e)
