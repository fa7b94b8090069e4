"""Does mixed precision cost accuracy? The demo's config (README command 1)
trained --runs times in float32 and --runs times in the precision `auto` picks
on this machine, interleaved (training is not seeded), on the same synthetic
data. Prints each run's AP, AP50 and minutes, then mean and range per
precision, and the AP `evaluate` gives for each float32 export (the job's own
evaluation runs in the training precision).

    .venv/bin/python bench/precision_accuracy.py [--runs 3] [--out bench_output/precision]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from object_detection_algo.demo import DEMO_FLAGS, ENTRYPOINT  # noqa: E402


def train(data: str, job_dir: str, precision: str) -> dict:
    flags = {**DEMO_FLAGS, 'training_data_path': f'{data}/train-*',
             'validation_data_path': f'{data}/val-*', 'job-dir': job_dir,
             'precision': precision}
    start = time.time()
    with open(job_dir + '.log', 'w') as log:
        code = subprocess.call([sys.executable, ENTRYPOINT, *(f'--{k}={v}' for k, v in
                                                               flags.items())],
                               cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    if code:
        raise SystemExit(f'the job failed (exit {code}): see {job_dir}.log')
    minutes = (time.time() - start) / 60
    with open(os.path.join(job_dir, 'model', 'metrics.json')) as f:
        card = json.load(f)
    evaluation = os.path.join(job_dir, 'evaluation')
    subprocess.run([sys.executable, '-m', 'object_detection_algo', 'evaluate',
                    f'--model_dir={job_dir}/model', f'--data_path={data}/val-*',
                    f'--output_dir={evaluation}'], cwd=ROOT, check=True, capture_output=True)
    with open(os.path.join(evaluation, 'metrics.json')) as f:
        exported_ap = json.load(f)['metrics']['AP']
    return {'AP': card['metrics']['AP'], 'AP50': card['metrics']['AP50'],
            'exported AP': exported_ap, 'minutes': minutes}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--runs', type=int, default=3)
    parser.add_argument('--out', default=os.path.join(ROOT, 'bench_output', 'precision'))
    args = parser.parse_args()
    from object_detection_algo.data import synthetic
    from object_detection_algo.training import precision
    data = os.path.join(args.out, 'data')
    if not os.path.exists(os.path.join(data, 'label_map.csv')):
        synthetic.write_dataset(data)
    auto = precision.choose('auto', 'cpu', (), precision.cpu_flags())
    results = {'float32': [], f'auto ({auto.dtype})': []}
    for run in range(args.runs):
        for name, value in (('float32', 'float32'), (f'auto ({auto.dtype})', 'auto')):
            result = train(data, os.path.join(args.out, f'{value}_{run}'), value)
            results[name].append(result)
            print(f'run {run + 1} {name:16s} AP {result["AP"]:.3f} AP50 {result["AP50"]:.3f} '
                  f'exported AP {result["exported AP"]:.3f} {result["minutes"]:.1f} min',
                  flush=True)
    print(f'\nDemo config, {args.runs} runs each, interleaved; auto: {auto.reason}\n')
    print('| precision | AP mean (range) | AP50 mean (range) | exported AP mean | minutes |')
    print('|---|---|---|---|---|')
    for name, runs in results.items():
        cell = lambda key: (f'{statistics.mean(r[key] for r in runs):.3f} '
                            f'({min(r[key] for r in runs):.3f}-{max(r[key] for r in runs):.3f})')
        print(f'| {name} | {cell("AP")} | {cell("AP50")} | '
              f'{statistics.mean(r["exported AP"] for r in runs):.3f} | '
              f'{statistics.median(r["minutes"] for r in runs):.1f} |')


if __name__ == '__main__':
    main()
