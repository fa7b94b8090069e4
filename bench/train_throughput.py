"""Training throughput: our entrypoint against Model Garden's own trainer
(`official.vision.train`), same data, same model, same batch, one after the
other in one go. Prints steady-state steps/s and images/s (first loop, which
traces the graph, excluded).

    .venv/bin/python bench/train_throughput.py [--steps 60] [--head_num_filters 64]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ORBIT_LINE = re.compile(r'train \| step:\s+(\d+) \| steps/sec:\s+([\d.]+)')


def steady_steps_per_second(log: str) -> float:
    rates = [float(m.group(2)) for m in ORBIT_LINE.finditer(log)]
    rates = rates[1:] or rates  # the first loop includes tracing
    return sum(rates) / len(rates) if rates else float('nan')


def run(command, env) -> str:
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
    log = result.stdout + result.stderr
    if result.returncode != 0:
        raise SystemExit(f'{command[1]} failed:\n{log[-3000:]}')
    return log


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--steps', type=int, default=60)
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--loop', type=int, default=15)
    parser.add_argument('--head_num_filters', type=int, default=256)
    args = parser.parse_args()

    from object_detection_algo.data import synthetic
    work = tempfile.mkdtemp(prefix='bench_')
    data = synthetic.write_dataset(os.path.join(work, 'data'), num_train=256, num_val=16)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '2', 'TF_USE_LEGACY_KERAS': '1',
           'CLOUD_ML_HP_METRIC_FILE': os.path.join(work, 'hp', 'output.metrics')}
    model = dict(resnet=18, size=128, max_level=5, filters=args.head_num_filters)

    ours = run([sys.executable, os.path.join(ROOT, 'entrypoint.py'),
                f'--training_data_path={data["train"]}', f'--validation_data_path={data["val"]}',
                f'--job-dir={work}/ours', '--num_classes=3', f'--resnet_depth={model["resnet"]}',
                f'--image_size={model["size"]},{model["size"]}',
                f'--fpn_max_level={model["max_level"]}', f'--head_num_filters={model["filters"]}',
                f'--train_batch_size={args.batch}', f'--max_steps={args.steps}',
                f'--train_steps_per_eval={args.steps}', '--warmup_steps=10',
                f'--log_every_steps={args.loop}', '--nms_score_threshold=0.05'], env)

    override = (
        'runtime: {mixed_precision_dtype: float32}\n'
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
        '    dtype: float32\n    shuffle_buffer_size: 1000\n'
        '    parser: {aug_rand_hflip: true, aug_scale_min: 1.0, aug_scale_max: 1.0}\n'
        '  validation_data:\n'
        f'    input_path: "{data["val"]}"\n    global_batch_size: 8\n    dtype: float32\n'
        'trainer:\n'
        f'  train_steps: {args.steps}\n  steps_per_loop: {args.loop}\n'
        f'  summary_interval: {args.loop}\n  checkpoint_interval: {args.steps}\n'
        '  optimizer_config:\n'
        '    learning_rate: {type: cosine, cosine: {initial_learning_rate: 0.08, '
        f'decay_steps: {args.steps}}}}}\n'
        '    warmup: {type: linear, linear: {warmup_steps: 10, warmup_learning_rate: 0.0067}}\n')
    override_file = os.path.join(work, 'reference.yaml')
    with open(override_file, 'w') as f:
        f.write(override)
    reference = run([sys.executable, '-m', 'official.vision.train',
                     '--experiment=retinanet_resnetfpn_coco', '--mode=train',
                     f'--model_dir={work}/reference', f'--config_file={override_file}'], env)

    print(f'ResNet-{model["resnet"]} FPN, {model["size"]} px, batch {args.batch}, '
          f'head/FPN filters {model["filters"]}, {args.steps} steps, CPU x{os.cpu_count()}')
    for name, log in (('ours (entrypoint.py)', ours), ('Model Garden train.py', reference)):
        rate = steady_steps_per_second(log)
        print(f'{name:24s} {rate:6.3f} steps/s  {rate * args.batch:6.1f} images/s')


if __name__ == '__main__':
    main()
