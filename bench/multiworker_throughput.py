"""Training throughput on one task and on a cluster of local tasks (127.0.0.1,
TF_CONFIG as AI Platform writes it: a master and workers), the same model and
the same global batch. Prints steady-state images/s from the chief's progress
lines (the first loop, which traces the graph, left out).

On one machine every task shares its cores, so more tasks bring no speed: the
number is there to catch a regression of the cluster path (its per-loop
agreement on SIGTERM, the gradients' all-reduce) and to compare on machines
that each have their own cores or GPUs.

  .venv/bin/python bench/multiworker_throughput.py [--tasks 1 2] [--steps 40] [--batch 8]
      [--precision auto]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # the data is written with TensorFlow here

from object_detection_algo.data import synthetic  # noqa: E402
from tests.job_runner import ENTRYPOINT, free_ports, job_env  # noqa: E402

PROGRESS = re.compile(r'step (\d+)/\d+ \| loss \S+ \| lr \S+ \| [\d.]+ steps/s, ([\d.]+) images/s')


def task_envs(work, tasks):
    """The environment of each task, chief first (no TF_CONFIG for one task)."""
    if tasks == 1:
        return [job_env(os.path.join(work, 'hp0', 'm'))]
    hosts = [f'127.0.0.1:{p}' for p in free_ports(tasks)]
    spec = {'master': hosts[:1], 'worker': hosts[1:]}
    names = [('master', 0)] + [('worker', i) for i in range(tasks - 1)]
    return [job_env(os.path.join(work, f'hp{n}', 'm'), TF_CONFIG=json.dumps(
        {'cluster': spec, 'task': {'type': t, 'index': i}})) for n, (t, i) in enumerate(names)]


def images_per_second(log):
    rates = [float(m.group(2)) for m in PROGRESS.finditer(log)]
    rates = rates[1:] or rates  # the first loop includes tracing
    return sum(rates) / len(rates) if rates else float('nan')


def run(tasks, data, args, work):
    out = os.path.join(work, f'tasks{tasks}')
    flags = [f'--training_data_path={data["train"]}', f'--validation_data_path={data["val"]}',
             f'--job-dir={out}', '--num_classes=3', '--resnet_depth=18',
             '--image_size=128,128', '--fpn_max_level=5', f'--head_num_filters={args.filters}',
             f'--train_batch_size={args.batch}', f'--max_steps={args.steps}',
             f'--train_steps_per_eval={args.steps}', f'--log_every_steps={args.loop}',
             '--warmup_steps=0', '--num_eval_images=8', f'--precision={args.precision}']
    logs = [os.path.join(work, f'tasks{tasks}_{i}.txt') for i in range(tasks)]
    start = time.time()
    procs = []
    for env, log in zip(task_envs(work, tasks), logs):
        with open(log, 'w') as f:
            procs.append(subprocess.Popen([sys.executable, ENTRYPOINT, *flags], env=env,
                                          cwd=ROOT, stdout=f, stderr=subprocess.STDOUT))
    codes = [p.wait() for p in procs]
    seconds = time.time() - start
    if any(codes):
        sys.exit(f'{tasks} task(s) failed ({codes}): see {logs}')
    with open(logs[0]) as f:
        return images_per_second(f.read()), seconds


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--tasks', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--steps', type=int, default=40)
    parser.add_argument('--batch', type=int, default=8, help='the global batch, for every run')
    parser.add_argument('--loop', type=int, default=10)
    parser.add_argument('--filters', type=int, default=64)
    parser.add_argument('--precision', default='auto', help="the job's --precision")
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix='bench_multiworker_')
    data = synthetic.write_dataset(os.path.join(work, 'data'), num_train=256, num_val=16)
    print(f'ResNet-18 FPN, 128 px, head/FPN filters {args.filters}, global batch {args.batch}, '
          f'{args.steps} steps, loops of {args.loop}, --precision={args.precision}, '
          f'CPU x{os.cpu_count()} shared by all tasks')
    for tasks in args.tasks:
        rate, seconds = run(tasks, data, args, work)
        print(f'{tasks} task(s): {rate:6.1f} images/s (steady), {seconds:5.0f} s for the whole job')


if __name__ == '__main__':
    main()
