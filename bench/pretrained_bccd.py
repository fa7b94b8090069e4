"""What starting from earlier weights is worth: BCCD (../shared/datasets/bccd)
trained from scratch and fine-tuned from the demo's model (trained first on the
synthetic shapes), same config and steps, one after the other. Prints AP and
AP50 of each at every evaluation.

    .venv/bin/python bench/pretrained_bccd.py [--steps 600] [--source CHECKPOINT]
        [--modules backbone,decoder] [--resnet_depth 18]

Without --source it runs the demo (README command 1) into bench_output/demo first. With
ImageNet weights: --source gs://cloud-tpu-checkpoints/vision-2.0/resnet50_imagenet/ckpt-28080
--modules backbone --resnet_depth 50. A job already done is not run again.
"""

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BCCD = os.path.join(os.path.dirname(ROOT), 'shared', 'datasets', 'bccd', 'BCCD')

# The demo's backbone and decoder (ResNet-18, FPN 3-5, 64 filters), so that both load.
CONFIG = ['--num_classes=3', '--resnet_depth=18', '--image_size=256,256', '--fpn_max_level=5',
          '--head_num_filters=64', '--anchor_size=3', '--train_batch_size=8',
          '--warmup_steps=50', '--initial_learning_rate=0.03', '--log_every_steps=50',
          '--precision=float32']


def convert(out: str) -> None:
    if os.path.exists(os.path.join(out, 'label_map.csv')):
        return
    subprocess.run([sys.executable, '-m', 'object_detection_algo', 'convert', 'voc',
                    f'--annotations_dir={BCCD}/Annotations', f'--images_dir={BCCD}/JPEGImages',
                    f'--train_list={BCCD}/ImageSets/Main/trainval.txt',
                    f'--val_list={BCCD}/ImageSets/Main/test.txt', f'--out={out}'],
                   cwd=ROOT, check=True)


def demo_checkpoints(out: str) -> str:
    folder = os.path.join(out, 'job', 'checkpoints')
    if not os.path.exists(os.path.join(folder, 'checkpoint')):
        subprocess.run([sys.executable, '-m', 'object_detection_algo', 'demo', f'--out={out}'],
                       cwd=ROOT, check=True)
    return folder


def train(data: str, job_dir: str, steps: int, init: list) -> dict:
    command = [sys.executable, os.path.join(ROOT, 'entrypoint.py'),
               f'--training_data_path={data}/train-*', f'--validation_data_path={data}/val-*',
               f'--job-dir={job_dir}', f'--max_steps={steps}',
               f'--train_steps_per_eval={steps // 2}', *CONFIG, *init]
    print(' '.join(command), flush=True)
    start = time.time()
    with open(job_dir + '.log', 'w') as log:
        code = subprocess.call(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='2'))
    if code:
        raise SystemExit(f'the job failed (exit {code}): see {job_dir}.log')
    with open(os.path.join(job_dir, 'checkpoints', 'evaluations.json')) as f:
        evaluations = json.load(f)['evaluations']
    return {'minutes': (time.time() - start) / 60, 'evaluations': evaluations}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--steps', type=int, default=600)
    parser.add_argument('--source', help='checkpoint folder to fine-tune from (default: the '
                        "demo's, trained first)")
    parser.add_argument('--modules', default='backbone,decoder',
                        help='--init_checkpoint_modules of the fine-tuned job')
    parser.add_argument('--resnet_depth', type=int, default=18)
    parser.add_argument('--out', default=os.path.join(ROOT, 'bench_output'))
    args = parser.parse_args()
    CONFIG[1] = f'--resnet_depth={args.resnet_depth}'
    os.makedirs(args.out, exist_ok=True)
    source = args.source or demo_checkpoints(os.path.join(args.out, 'demo'))
    data = os.path.join(args.out, 'bccd_data')
    convert(data)
    runs = {
        'from scratch': train(data, os.path.join(args.out, 'bccd_scratch'), args.steps,
                              ['--init_checkpoint=none']),
        f'fine-tuned ({args.modules})': train(
            data, os.path.join(args.out, 'bccd_finetuned'), args.steps,
            [f'--init_checkpoint={source}', f'--init_checkpoint_modules={args.modules}']),
    }
    print(f'\nBCCD, {args.steps} steps, {" ".join(CONFIG)}; source: {source}\n')
    print('| start | step | AP | AP50 | AP75 | minutes |')
    print('|---|---|---|---|---|---|')
    for name, run in runs.items():
        for e in run['evaluations']:
            m = e['metrics']
            print(f'| {name} | {e["step"]} | {m["AP"]:.3f} | {m["AP50"]:.3f} | {m["AP75"]:.3f} '
                  f'| {run["minutes"]:.1f} |')


if __name__ == '__main__':
    main()
