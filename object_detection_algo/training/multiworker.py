"""One task of a training cluster: the MultiWorkerMirroredStrategy with its
failure detection, the chief's messages to the other tasks, and the collective
decision to stop on SIGTERM.

The chief decides and writes; the other tasks follow (training/follower.py).
The chief's messages go through the key-value store of TensorFlow's
coordination service, numbered, as JSON: the plan (config, records to skip,
checkpoint to resume), "train to step N", and "exit with status S". A task
that dies stops sending heartbeats; the service then fails every pending
collective and key-value read on the other tasks, so nobody hangs.
"""

import json
import os
import random
import signal
from typing import Any, Dict, List, Optional

import tensorflow as tf
from absl import logging
from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
from tensorflow.python.eager import context

from object_detection_algo import errors
from object_detection_algo.training import cluster as cluster_config
from object_detection_algo.training import devices

# A task that misses heartbeats this long is taken as lost, and every other task
# stops. TensorFlow's per-collective timeout is not used: its docs keep it for
# debugging, as it starts a thread per collective.
HEARTBEAT_TIMEOUT_SECONDS = 20
# How long the tasks wait for each other to start (machines boot at different times).
REGISTER_TIMEOUT_SECONDS = 15 * 60
# How long the chief waits for the others to take its exit message before it leaves.
EXIT_BARRIER_SECONDS = 60
_KEY = 'object_detection_algo/message/{}'


def make_strategy(cluster: cluster_config.Cluster) -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the cluster's tasks (each with its GPUs, or
    its CPU), with the coordination service's heartbeats watching every task. The
    cluster is given to TensorFlow as a resolver, so TF_CONFIG's `master` (which
    TensorFlow 2.20 refuses) never reaches it."""
    spec = cluster.tensorflow_spec()
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(spec), task_type=cluster.tensorflow_task_type,
        task_id=cluster.task_index, rpc_layer='grpc')
    os.environ['no_grpc_proxy'] = cluster_config.proxy_bypass(os.environ, cluster)
    role, _ = cluster.chief
    leader = cluster_config.TENSORFLOW_ROLE.get(role, role)
    # Set before the strategy, which otherwise configures the service with defaults.
    context.context().configure_coordination_service(
        service_type='standalone', service_leader=f'/job:{leader}/replica:0/task:0',
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
        cluster_register_timeout_in_ms=REGISTER_TIMEOUT_SECONDS * 1000,
        shutdown_barrier_timeout_in_ms=EXIT_BARRIER_SECONDS * 1000,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(hosts))
                          for job, hosts in spec.items()])
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as e:
        raise errors.ClusterError(
            f'the cluster of {cluster.source} ({cluster.shape()}) did not come together within '
            f'{REGISTER_TIMEOUT_SECONDS // 60} minutes: {_first_line(e.message)}. Check that '
            'every task started and that their addresses and ports reach each other.') from None


def _first_line(message: str) -> str:
    return message.strip().split('\n', 1)[0]


class Link:
    """This task's place in the cluster: the strategy, and the chief's messages."""

    def __init__(self, choice, strategy: tf.distribute.Strategy):
        self.choice = choice
        self.cluster: cluster_config.Cluster = choice.cluster
        self.strategy = strategy
        self._sent = 0
        self._received = 0
        self._agree = None
        # Whether the other tasks wait for a message now (not inside a training loop):
        # only then does the chief wait for them to take its exit message.
        self.others_waiting = True

    @property
    def is_chief(self) -> bool:
        return self.cluster.is_chief

    # The chief's side.
    def send(self, kind: str, **fields: Any) -> None:
        context.context().set_config_key_value(_KEY.format(self._sent),
                                               json.dumps(dict(fields, kind=kind)))
        self._sent += 1

    def finish(self, status: int, message: str = '') -> None:
        """Tells the other tasks to exit with `status`, and waits (a while) until they
        have read it: the coordination service goes away with the chief's process.
        Tasks inside a training loop learn of the chief's failure from their collectives."""
        try:
            self.send('exit', status=status, message=message)
            if self.others_waiting:
                context.context().wait_at_barrier('object_detection_algo/exit',
                                                  EXIT_BARRIER_SECONDS * 1000)
        except tf.errors.OpError as e:  # a task is gone already: nothing to wait for
            logging.warning('Not every task of the cluster took the exit message: %s',
                            _first_line(e.message))

    def share_plan(self, params, skip: List[int], restore: Optional[str], step: int,
                   flags: Dict[str, Any]) -> None:
        """Makes `params` the cluster's config and sends it, with the training
        records to skip and the checkpoint to resume from (None: a new job)."""
        # One file order for all: Model Garden shuffles the files before each task
        # takes its share, with a random seed per process unless one is given.
        params.task.train_data.seed = random.SystemRandom().randrange(2 ** 31)
        # SIGTERM is the PreemptionStop action's (any_task_stopping), not Model
        # Garden's PreemptionCheckpointHandler, which would take the signal over.
        params.trainer.preemption_on_demand_checkpoint = False
        logging.info(cluster_config.sharding_line(len(params.task.train_data.input_path),
                                                  self.cluster.num_tasks))
        self.send('plan', params=params.as_dict(), skip=list(skip), restore=restore, step=step,
                  flags=flags)

    # The other tasks' side.
    def receive(self) -> Dict[str, Any]:
        """The chief's next message; blocks until it comes, or the chief is lost."""
        try:
            text = context.context().get_config_key_value(_KEY.format(self._received))
        except tf.errors.OpError as e:
            raise self.lost(e) from None
        self._received += 1
        message = json.loads(text)
        if message['kind'] == 'exit':
            try:
                context.context().wait_at_barrier('object_detection_algo/exit',
                                                  EXIT_BARRIER_SECONDS * 1000)
                # Leave after the chief, whose process holds the coordination service: a task
                # gone first would hold the chief's exit until its heartbeats time out.
                context.context().get_config_key_value('object_detection_algo/never',
                                                       EXIT_BARRIER_SECONDS * 1000)
            except tf.errors.OpError:
                pass  # the chief has left (or will)
        return message

    # Both sides.
    def lost(self, error: tf.errors.OpError, saved: Optional[int] = None) -> errors.ClusterError:
        """The ClusterError for a lost task, named from TensorFlow's error; `saved`:
        the step of the chief's newest checkpoint, when this is the chief."""
        lost = cluster_config.lost_tasks(error.message, self.cluster) or 'another task'
        where = ('the chief\'s newest checkpoint' if saved is None else
                 f'the chief\'s checkpoint at step {saved}' if saved else 'the start')
        return errors.ClusterError(
            f'this task ({self.cluster.task_name}) lost {lost} of the cluster '
            f'({cluster_config.cause(error.message)[:300]}): it crashed, was stopped or cannot be '
            f'reached. Every task stops. Start the whole cluster again to resume from {where}.')

    def is_lost_task(self, error: tf.errors.OpError) -> bool:
        return cluster_config.lost_tasks(error.message, self.cluster) is not None

    def report(self, error: Exception) -> None:
        """Fails the other tasks' pending collectives at once with this task's error
        (instead of after the heartbeat timeout)."""
        code = getattr(error, 'error_code', tf.errors.INTERNAL)
        try:
            context.context().report_error_to_cluster(code, f'{self.cluster.task_name}: {error}')
        except Exception as e:  # pylint: disable=broad-except
            logging.warning('Could not report the error to the cluster: %s', e)

    def any_task_stopping(self, requested: bool) -> bool:
        """True on every task when any task got SIGTERM: one small all-reduce at the
        end of each training loop, so that all stop after the same loop and save
        their checkpoint (a collective) together."""
        if self._agree is None:
            strategy = self.strategy

            @tf.function
            def agree(flag: bool):  # a Python bool: two traces, the value made on each replica
                return strategy.run(lambda: tf.distribute.get_replica_context().all_reduce(
                    tf.distribute.ReduceOp.SUM, tf.constant(1.0 if flag else 0.0)))
            self._agree = agree
        total = self._agree(bool(requested))
        stopping = float(self.strategy.experimental_local_results(total)[0]) > 0
        if stopping and not requested:
            logging.warning('Another task of the cluster got SIGTERM: saving a checkpoint at the '
                            'end of this training loop, then stopping.')
        return stopping


def connect(choice, on_sigterm) -> Link:
    """Starts this task's part of the cluster (waits for every task) and logs the
    Devices: line. SIGTERM is handled from here on: TensorFlow's coordination
    agent installs a handler of its own while the strategy starts."""
    logging.info('Joining the cluster (%s, from %s) as %s: waiting up to %d minutes for '
                 'every task to start.', choice.cluster.shape(), choice.cluster.source,
                 choice.cluster.task_name, REGISTER_TIMEOUT_SECONDS // 60)
    strategy = devices.make_strategy(choice)
    signal.signal(signal.SIGTERM, on_sigterm)
    logging.info('Devices: %s.', cluster_config.devices_line(
        choice.cluster, choice.kind, strategy.num_replicas_in_sync))
    return Link(choice, strategy)

