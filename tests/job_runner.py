"""Starting the real entrypoint as a caller would: in a subprocess, with the
caller's environment variables cleared, on tiny CPU model settings. Shared by
the tests (through conftest.py) and by the benchmarks under bench/."""

import os
import random
import socket
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENTRYPOINT = os.path.join(ROOT, 'entrypoint.py')

# Tiny model settings for CPU tests: ResNet-18 at 128 px, small head; float32 on every
# CPU (auto picks bfloat16 on some), so jobs compare exactly with `evaluate`.
TINY_FLAGS = [
    '--num_classes=3', '--resnet_depth=18', '--image_size=128,128',
    '--fpn_max_level=5', '--train_batch_size=2', '--warmup_steps=0',
    '--head_num_filters=32', '--head_num_convs=1', '--initial_learning_rate=0.01',
    '--log_every_steps=1', '--precision=float32',
]
_CALLER_VARIABLES = ('TF_CONFIG', 'CLUSTER_SPEC', 'CLOUD_ML_TRIAL_ID', 'CLOUD_ML_JOB_ID',
                     'AIP_MODEL_DIR', 'AIP_CHECKPOINT_DIR', 'AIP_TENSORBOARD_LOG_DIR',
                     'CLOUD_ML_HP_METRIC_FILE', 'TPU_NAME')


def free_ports(count):
    """Ports on 127.0.0.1 that nothing listens on now, for a local cluster's tasks.
    Drawn below the kernel's range for outgoing connections: the tasks bind them
    half a minute later, and a port from that range may meanwhile become the local
    end of some connection."""
    try:
        with open('/proc/sys/net/ipv4/ip_local_port_range') as f:
            first_outgoing = int(f.read().split()[0])
    except OSError:
        first_outgoing = 32768  # Linux's default
    ports = []
    while len(ports) < count:
        port = random.randrange(max(1024, first_outgoing - 10000), first_outgoing)
        with socket.socket() as s:
            try:
                s.bind(('127.0.0.1', port))
            except OSError:  # in use
                continue
        if port not in ports:
            ports.append(port)
    return ports


def job_env(metrics_file, **extra):
    env = {k: v for k, v in os.environ.items() if k not in _CALLER_VARIABLES}
    env['CLOUD_ML_HP_METRIC_FILE'] = str(metrics_file)
    env['TF_CPP_MIN_LOG_LEVEL'] = '2'
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_job(args, env, log_path):
    log = open(log_path, 'w')
    return subprocess.Popen([sys.executable, ENTRYPOINT, *args], env=env, cwd=ROOT,
                            stdout=log, stderr=subprocess.STDOUT)


def run_job(args, env, log_path, timeout=900):
    proc = start_job(args, env, log_path)
    code = proc.wait(timeout=timeout)
    with open(log_path) as f:
        return code, f.read()
