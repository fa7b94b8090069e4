"""The cluster a job is one task of, as the caller describes it in TF_CONFIG
(or, failing that, Vertex AI's CLUSTER_SPEC). Pure Python, no TensorFlow.

Supported: one machine (no cluster, or a cluster of one task), and clusters of
training tasks only: a chief (`chief`, or `master` as AI Platform names it)
with workers, or workers alone. Parameter servers and evaluators would each
train alone into the same folders, so a cluster naming them is refused before
anything starts (exit 2).
"""

import dataclasses
import json
import math
import re
from typing import Dict, List, Mapping, Optional, Tuple

from object_detection_algo.errors import UsageError
from object_detection_algo.training.outputs import json_variable

TRAINING_ROLES = ('chief', 'master', 'worker')
REFUSED_ROLES = ('ps', 'evaluator')
# TensorFlow 2.20's cluster check accepts chief, worker, ps and evaluator only: AI
# Platform's `master` is the same task and is renamed for TensorFlow here, and only here.
TENSORFLOW_ROLE = {'master': 'chief'}
# Vertex AI's CLUSTER_SPEC names worker pools; TF_CONFIG gives them these roles.
VERTEX_POOL_ROLE = {'workerpool0': 'chief', 'workerpool1': 'worker', 'workerpool2': 'ps',
                    'workerpool3': 'evaluator'}
SUPPORTED = ('one machine, or a chief (AI Platform: master; Vertex AI: worker pool 0) with '
             'workers (AI Platform: workerCount; Vertex AI: worker pool 1), all training '
             'together with MultiWorkerMirroredStrategy')


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The training tasks of a cluster of more than one, and which one this is."""
    hosts: Dict[str, Tuple[str, ...]]  # role as the caller names it -> addresses
    task_type: str  # this task's role, as the caller names it
    task_index: int
    source: str  # the variable it was read from

    @property
    def num_tasks(self) -> int:
        return sum(len(h) for h in self.hosts.values())

    @property
    def chief(self) -> Tuple[str, int]:
        """The task that writes: the chief or master, else worker 0 (as TensorFlow decides)."""
        for role in ('chief', 'master'):
            if role in self.hosts:
                return role, 0
        return 'worker', 0

    @property
    def is_chief(self) -> bool:
        return (self.task_type, self.task_index) == self.chief

    @property
    def task_name(self) -> str:
        return f'{self.task_type} {self.task_index}'

    def shape(self) -> str:
        """'master 1, worker 2'."""
        return ', '.join(f'{role} {len(self.hosts[role])}' for role in TRAINING_ROLES
                         if role in self.hosts)

    def tensorflow_spec(self) -> Dict[str, List[str]]:
        """The cluster as TensorFlow's ClusterSpec takes it (master renamed chief)."""
        return {TENSORFLOW_ROLE.get(role, role): list(hosts) for role, hosts in self.hosts.items()}

    @property
    def tensorflow_task_type(self) -> str:
        return TENSORFLOW_ROLE.get(self.task_type, self.task_type)

    def name_of(self, tensorflow_role: str, index: int) -> str:
        """A task named as TensorFlow names it ('/job:chief/.../task:0'), as the caller does."""
        for role in self.hosts:
            if TENSORFLOW_ROLE.get(role, role) == tensorflow_role:
                return f'{role} {index}'
        return f'{tensorflow_role} {index}'


def _from_cluster_spec(env: Mapping[str, str]) -> dict:
    """CLUSTER_SPEC (Vertex AI's worker pools) in TF_CONFIG's terms."""
    spec = json_variable(env, 'CLUSTER_SPEC')
    pools, task = spec.get('cluster') or {}, spec.get('task') or {}
    if not isinstance(pools, dict) or not isinstance(task, dict):
        return {}
    cluster = {VERTEX_POOL_ROLE.get(pool, pool): hosts for pool, hosts in pools.items()}
    task = dict(task, type=VERTEX_POOL_ROLE.get(task.get('type'), task.get('type')))
    return {'cluster': cluster, 'task': task}


def from_env(env: Mapping[str, str]) -> Optional[Cluster]:
    """The cluster of training tasks; None for one machine. A UsageError for a
    cluster this job cannot train on (parameter servers, an evaluator, a task
    that is not in it), naming the variable, its value and the shapes that work."""
    source, config = 'TF_CONFIG', json_variable(env, 'TF_CONFIG')
    if not config.get('cluster'):
        source, config = 'CLUSTER_SPEC', _from_cluster_spec(env)
    cluster, task = config.get('cluster') or {}, config.get('task') or {}
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f'{source}: "cluster" and "task" must be JSON objects, not '
                         f'{json.dumps(config)[:300]}.')
    task_type = task.get('type')
    refused = sorted({r for r in REFUSED_ROLES if cluster.get(r)} |
                     ({task_type} if task_type in REFUSED_ROLES else set()))
    if refused:
        raise UsageError(
            f'{source} describes a cluster with {" and ".join(refused)} task(s) '
            f'({json.dumps(cluster)[:300]}; this task: {json.dumps(task)}). This job trains '
            f'on {SUPPORTED}. Remove the parameter servers and evaluators from the job '
            '(AI Platform: parameterServerCount / evaluatorCount; Vertex AI: worker pools 2 '
            'and 3).')
    hosts = {}
    for role in TRAINING_ROLES:
        addresses = cluster.get(role) or []
        if isinstance(addresses, str):
            addresses = [addresses]
        if addresses:
            hosts[role] = tuple(str(a) for a in addresses)
    if sum(len(h) for h in hosts.values()) <= 1:
        return None  # one machine: AI Platform writes TF_CONFIG for single-machine jobs too
    chiefs = [(role, len(hosts[role])) for role in ('chief', 'master') if role in hosts]
    if len(chiefs) > 1 or (chiefs and chiefs[0][1] > 1):
        raise UsageError(f'{source} names more than one chief ({json.dumps(cluster)[:300]}): '
                         'give one chief (or master) task.')
    try:
        index = int(task.get('index', 0))
    except (TypeError, ValueError):
        index = -1
    if task_type not in hosts or not 0 <= index < len(hosts[task_type]):
        raise UsageError(
            f'{source}: this task ({json.dumps(task)}) is not one of the cluster\'s training '
            f'tasks ({_describe(hosts)}). Each machine needs "task": {{"type": ..., "index": '
            '...}} naming its own place in "cluster".')
    return Cluster(hosts=hosts, task_type=task_type, task_index=index, source=source)


def _describe(hosts: Dict[str, Tuple[str, ...]]) -> str:
    return ', '.join(f'{role} 0..{len(h) - 1}' for role, h in hosts.items())


def devices_line(cluster: Cluster, kind: str, replicas: int) -> str:
    """What the Devices: line says about the cluster."""
    return (f'{kind.upper()} on a cluster of {cluster.num_tasks} tasks ({cluster.shape()}, from '
            f'{cluster.source}): this task is {cluster.task_name}'
            f'{" (the chief, which writes)" if cluster.is_chief else ""}; {replicas} replicas '
            'in all, MultiWorkerMirroredStrategy')


def proxy_bypass(env: Mapping[str, str], cluster: Cluster) -> str:
    """The `no_grpc_proxy` value that keeps the tasks' own traffic off an HTTP
    proxy set in the environment (gRPC takes https_proxy and http_proxy too, and
    a proxy made for Cloud Storage does not carry it: the tasks wait for each
    other until the registration deadline). Whatever the environment already
    exempts stays exempt; gRPC reads no_grpc_proxy in place of no_proxy."""
    kept = env.get('no_grpc_proxy') or env.get('no_proxy') or env.get('NO_PROXY') or ''
    entries = [e.strip() for e in kept.split(',') if e.strip()]
    for hosts in cluster.hosts.values():
        for address in hosts:
            host = address.rsplit(':', 1)[0].strip('[]')  # host:port, [v6]:port
            if host not in entries:
                entries.append(host)
    return ','.join(entries)


def batch_error(batch: int, replicas: int, cluster: Cluster) -> Optional[str]:
    """Why --train_batch_size cannot be split over the cluster's replicas, or None."""
    if batch % replicas == 0:
        return None
    per_task = replicas // cluster.num_tasks
    return (f'--train_batch_size={batch} does not split over the {replicas} replicas of the '
            f'cluster ({cluster.num_tasks} tasks x {per_task} device(s) each): pass a multiple '
            f'of {replicas}, e.g. {max(replicas, batch // replicas * replicas)}.')


def sharding_line(num_files: int, num_tasks: int) -> str:
    """How Model Garden's reader splits the training files over the tasks."""
    if num_files >= num_tasks:
        return (f'Training data over {num_tasks} tasks: each reads its share of the '
                f'{num_files} files (about {math.ceil(num_files / num_tasks)} each).')
    return (f'Training data over {num_tasks} tasks: {num_files} file(s), fewer than the tasks, '
            f'so every task reads all records and keeps 1 in {num_tasks}. Write at least '
            f'{num_tasks} files to spare that reading.')


_TASK = re.compile(r'/job:(\w+)/(?:replica:\d+/)?task:(\d+)')
_NOISE = re.compile(r'\{\{[^}]*\}\}|Collective ops is aborted by:|\[Op:[^\]]*\]|'
                    r'The error could be from a previous operation\..*')


def cause(message: str) -> str:
    """The first line of TensorFlow's error, without its function and op names."""
    text = _NOISE.sub(' ', message.strip().split('\n', 1)[0])
    return ' '.join(text.split()) or 'no message'


def lost_tasks(message: str, cluster: Cluster) -> Optional[str]:
    """The tasks TensorFlow's error says were lost ('worker 1'), or None when the
    error is not about the cluster's tasks or their connections."""
    text = ' '.join(message.split())
    signs = ('unhealthy', 'stopped sending heartbeats', 'Socket closed', 'Connection refused',
             'failed to connect', 'Collective ops is aborted', 'CoordinationService',
             'coordination service', 'heartbeat')
    if not any(sign in text for sign in signs):
        return None
    own = (cluster.tensorflow_task_type, cluster.task_index)
    named = []
    for role, index in _TASK.findall(text):
        if (role, int(index)) != own:
            name = cluster.name_of(role, int(index))
            if name not in named:
                named.append(name)
    return ', '.join(named) or 'another task'
