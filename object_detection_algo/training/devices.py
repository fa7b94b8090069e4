"""Which devices to train on, and why: a TPU when the environment names one,
all visible GPUs (mirrored) when there are any, the CPU otherwise; on a
cluster of several training tasks (TF_CONFIG, no TPU), those of every task
(training/cluster.py)."""

import dataclasses
import json
from typing import Mapping, Optional

from object_detection_algo.training import cluster as cluster_config

# Set by AI Platform / Cloud TPU VMs and by users, in the order we trust them.
_TPU_VARIABLES = ('TPU_NAME', 'KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS', 'TPU_ADDRESS')


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    kind: str  # tpu, gpu, cpu
    tpu_address: Optional[str]
    reason: str
    cluster: Optional[cluster_config.Cluster] = None  # several training tasks


def choose(env: Mapping[str, str], num_gpus: int) -> DeviceChoice:
    """Pure decision from the environment and the number of visible GPUs."""
    for name in _TPU_VARIABLES:
        if env.get(name):
            return DeviceChoice('tpu', env[name], f'{name}={env[name]} names a TPU')
    try:
        cluster = (json.loads(env.get('TF_CONFIG') or '{}') or {}).get('cluster') or {}
    except (ValueError, AttributeError):
        cluster = None  # the command line refuses it (outputs.tf_config)
    for role in ('tpu_worker', 'cloud_tpu', 'tpu'):
        hosts = cluster.get(role) if isinstance(cluster, dict) else None
        if hosts:
            address = hosts[0] if isinstance(hosts, list) else str(hosts)
            address = address if '://' in address else f'grpc://{address}'
            return DeviceChoice('tpu', address, f'TF_CONFIG cluster has a {role} ({address})')
    tasks = cluster_config.from_env(env) if cluster is not None else None
    if tasks:
        kind = 'gpu' if num_gpus > 0 else 'cpu'
        return DeviceChoice(kind, None, f'{tasks.num_tasks} training tasks in {tasks.source}, '
                            f'{num_gpus or "no"} GPU(s) here', cluster=tasks)
    if num_gpus > 0:
        return DeviceChoice('gpu', None, f'{num_gpus} GPU(s) visible, mirrored over all')
    return DeviceChoice('cpu', None, 'no TPU named and no GPU visible')


def make_strategy(choice: DeviceChoice):
    import tensorflow as tf
    if choice.cluster:
        from object_detection_algo.training import multiworker
        return multiworker.make_strategy(choice.cluster)
    if choice.kind == 'tpu':
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=choice.tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if choice.kind == 'gpu':
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
