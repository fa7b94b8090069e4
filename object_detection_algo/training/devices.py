"""Which devices to train on, and why: a TPU when the environment names one,
all visible GPUs (mirrored) when there are any, the CPU otherwise."""

import dataclasses
import json
from typing import Mapping, Optional

# Set by AI Platform / Cloud TPU VMs and by users, in the order we trust them.
_TPU_VARIABLES = ('TPU_NAME', 'KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS', 'TPU_ADDRESS')


@dataclasses.dataclass(frozen=True)
class DeviceChoice:
    kind: str  # tpu, gpu, cpu
    tpu_address: Optional[str]
    reason: str


def choose(env: Mapping[str, str], num_gpus: int) -> DeviceChoice:
    """Pure decision from the environment and the number of visible GPUs."""
    for name in _TPU_VARIABLES:
        if env.get(name):
            return DeviceChoice('tpu', env[name], f'{name}={env[name]} names a TPU')
    try:
        cluster = (json.loads(env.get('TF_CONFIG') or '{}') or {}).get('cluster') or {}
    except (ValueError, AttributeError):
        cluster = {}
    for role in ('tpu_worker', 'cloud_tpu', 'tpu'):
        hosts = cluster.get(role) if isinstance(cluster, dict) else None
        if hosts:
            address = hosts[0] if isinstance(hosts, list) else str(hosts)
            address = address if '://' in address else f'grpc://{address}'
            return DeviceChoice('tpu', address, f'TF_CONFIG cluster has a {role} ({address})')
    if num_gpus > 0:
        return DeviceChoice('gpu', None, f'{num_gpus} GPU(s) visible, mirrored over all')
    return DeviceChoice('cpu', None, 'no TPU named and no GPU visible')


def make_strategy(choice: DeviceChoice):
    import tensorflow as tf
    if choice.kind == 'tpu':
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=choice.tpu_address)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if choice.kind == 'gpu':
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
