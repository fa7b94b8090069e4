"""Training throughput, interleaved: Model Garden's own trainer
(`official.vision.train`) in float32 (the reference) and in bfloat16, and this
job with --precision=auto, on the same data, model and batch, run A B C A B C ...
for --rounds rounds. Prints images/s of every run (steady state: the first loop,
which traces the graph, left out), the median ratio of each to the reference
with its range, and this job's seconds per evaluation and per export.

    .venv/bin/python bench/train_throughput.py [--rounds 3] [--steps 60] [--baseline DIR]

--baseline DIR adds a fourth command: this job from another checkout (e.g. a git
worktree of an older commit), with the same flags, to compare evaluation and
export times before and after a change.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ORBIT_RATE = re.compile(r'train \| step:\s+\d+ \| steps/sec:\s+([\d.]+)')
OUR_RATE = re.compile(r'\| ([\d.]+) steps/s, [\d.]+ images/s')
OUR_EVAL = re.compile(r'eval at step (\d+)/\d+ .*?(?:exported to \S+ in ([\d.]+)s \| )?'
                      r'(?:evaluated in ([\d.]+)s|(\d+)s)$', re.M)


def steady_rate(log: str, pattern) -> float:
    rates = [float(m) for m in pattern.findall(log)]
    rates = rates[1:] or rates  # the first loop includes tracing
    return statistics.mean(rates) if rates else float('nan')


def run(command, env, cwd=ROOT) -> str:
    result = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f'{" ".join(command[:3])} failed:\n{log[-3000:]}')
    return log


def model_garden_config(path, data, model, args, dtype) -> None:
    with open(path, 'w') as f:
        f.write(
            f'runtime: {{mixed_precision_dtype: {dtype}}}\n'
            'task:\n'
            '  init_checkpoint: null\n'
            '  annotation_file: null\n'
            '  model:\n'
            f'    num_classes: 4\n    input_size: [{model["size"]}, {model["size"]}, 3]\n'
            f'    max_level: {model["max_level"]}\n'
            f'    backbone: {{type: resnet, resnet: {{model_id: {model["resnet"]}}}}}\n'
            f'    decoder: {{type: fpn, fpn: {{num_filters: {model["filters"]}}}}}\n'
            f'    head: {{num_filters: {model["filters"]}}}\n'
            '  train_data:\n'
            f'    input_path: "{data["train"]}"\n    global_batch_size: {args.batch}\n'
            f'    dtype: {dtype}\n    shuffle_buffer_size: 1000\n'
            '    parser: {aug_rand_hflip: true, aug_scale_min: 1.0, aug_scale_max: 1.0}\n'
            '  validation_data:\n'
            f'    input_path: "{data["val"]}"\n    global_batch_size: 8\n    dtype: {dtype}\n'
            'trainer:\n'
            f'  train_steps: {args.steps}\n  steps_per_loop: {args.loop}\n'
            f'  summary_interval: {args.loop}\n  checkpoint_interval: {args.steps}\n'
            '  optimizer_config:\n'
            '    learning_rate: {type: cosine, cosine: {initial_learning_rate: 0.08, '
            f'decay_steps: {args.steps}}}}}\n'
            '    warmup: {type: linear, linear: {warmup_steps: 10, warmup_learning_rate: '
            '0.0067}}\n')


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--loop', type=int, default=15)
    parser.add_argument('--head_num_filters', type=int, default=64)
    parser.add_argument('--precision', default='auto', help="this job's --precision")
    parser.add_argument('--baseline', help='another checkout of this project to run too')
    args = parser.parse_args()

    from object_detection_algo.data import synthetic
    work = tempfile.mkdtemp(prefix='bench_')
    data = synthetic.write_dataset(os.path.join(work, 'data'), num_train=256, num_val=32)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_USE_LEGACY_KERAS': '1',
           'CLOUD_ML_HP_METRIC_FILE': os.path.join(work, 'hp', 'output.metrics')}
    model = dict(resnet=18, size=128, max_level=5, filters=args.head_num_filters)
    for dtype in ('float32', 'bfloat16'):
        model_garden_config(os.path.join(work, f'mg_{dtype}.yaml'), data, model, args, dtype)

    def ours(checkout, name, round_):
        return [sys.executable, os.path.join(checkout, 'entrypoint.py'),
                f'--training_data_path={data["train"]}',
                f'--validation_data_path={data["val"]}', f'--job-dir={work}/{name}{round_}',
                '--num_classes=3', f'--resnet_depth={model["resnet"]}',
                f'--image_size={model["size"]},{model["size"]}',
                f'--fpn_max_level={model["max_level"]}', f'--head_num_filters={model["filters"]}',
                f'--train_batch_size={args.batch}', f'--max_steps={args.steps}',
                f'--train_steps_per_eval={args.steps // 2}', '--warmup_steps=10',
                f'--log_every_steps={args.loop}', '--nms_score_threshold=0.05',
                # Flags an older checkout may not know.
                *([f'--precision={args.precision}', '--init_checkpoint=none']
                  if checkout == ROOT else [])]

    def model_garden(dtype, round_):
        return [sys.executable, '-m', 'official.vision.train',
                '--experiment=retinanet_resnetfpn_coco', '--mode=train',
                f'--model_dir={work}/mg_{dtype}{round_}',
                f'--config_file={work}/mg_{dtype}.yaml']

    commands = {'Model Garden float32': lambda r: (model_garden('float32', r), ORBIT_RATE, ROOT),
                'Model Garden bfloat16': lambda r: (model_garden('bfloat16', r), ORBIT_RATE, ROOT),
                f'ours --precision={args.precision}': lambda r: (ours(ROOT, 'ours', r), OUR_RATE,
                                                                 ROOT)}
    if args.baseline:
        commands['ours, baseline checkout'] = lambda r: (
            ours(args.baseline, 'base', r), OUR_RATE, args.baseline)
    rates = {name: [] for name in commands}
    evals = {name: [] for name in commands if name.startswith('ours')}
    for round_ in range(args.rounds):
        for name, make in commands.items():
            command, pattern, cwd = make(round_)
            log = run(command, env, cwd)
            rate = steady_rate(log, pattern)
            rates[name].append(rate * args.batch)
            if name in evals:
                # (step, export s, evaluation s); an older log gives one total: export 0
                evals[name].append([(int(m[0]), float(m[1] or 0), float(m[2] or m[3]))
                                    for m in OUR_EVAL.findall(log)])
            print(f'round {round_ + 1} {name:28s} {rate * args.batch:6.1f} images/s', flush=True)

    print(f'\nResNet-{model["resnet"]} FPN 3-{model["max_level"]}, {model["size"]} px, batch '
          f'{args.batch}, head/FPN filters {model["filters"]}, {args.steps} steps, '
          f'{args.rounds} rounds interleaved, CPU x{os.cpu_count()}')
    reference = rates['Model Garden float32']
    print('| run | images/s (median) | per run | ratio to MG float32 (median, range) |')
    print('|---|---|---|---|')
    for name, values in rates.items():
        ratios = [v / r for v, r in zip(values, reference)]
        print(f'| {name} | {statistics.median(values):.1f} | '
              f'{", ".join(f"{v:.1f}" for v in values)} | {statistics.median(ratios):.2f} '
              f'({min(ratios):.2f}-{max(ratios):.2f}) |')
    for name, runs in evals.items():
        for index in range(max(len(r) for r in runs)):
            points = [r[index] for r in runs if len(r) > index]
            print(f'{name}, evaluation point {index + 1} (step {points[0][0]}): evaluation '
                  f'{statistics.median(p[2] for p in points):.1f} s, export '
                  f'{statistics.median(p[1] for p in points):.1f} s, together '
                  f'{statistics.median(p[1] + p[2] for p in points):.1f} s (medians)')


if __name__ == '__main__':
    main()
