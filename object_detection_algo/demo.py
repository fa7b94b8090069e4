"""The README's first command: make the bundled synthetic dataset, train on it
through the real entrypoint, then answer one prediction with the best model."""

import json
import os
import subprocess
import sys
import time

# Sized for 2 CPU cores: a small ResNet-18 RetinaNet at 128 px, trained from
# scratch. Shapes are 21..64 px and square-boxed, so anchors of one aspect
# ratio and a smaller base size cover them, and pyramid levels above 5 would
# see nothing. From scratch, small batches with more steps learn faster per
# image than batch 16, and learning rates above ~0.05 stall (see docs/training.md).
DEMO_FLAGS = {
    'num_classes': 3,
    'resnet_depth': 18,
    'image_size': '128,128',
    'fpn_max_level': 5,
    'anchor_size': 3.0,
    'bbox_aspect_ratios': '1.0',
    'head_num_filters': 64,
    'train_batch_size': 8,
    'max_steps': 1600,
    'train_steps_per_eval': 800,
    'warmup_steps': 100,
    'initial_learning_rate': 0.03,
    'log_every_steps': 50,
}

ENTRYPOINT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                          'entrypoint.py')


def run(out_dir: str, extra_flags=()) -> int:
    from object_detection_algo.data import synthetic
    data_dir = os.path.join(out_dir, 'data')
    job_dir = os.path.join(out_dir, 'job')
    if not os.path.exists(os.path.join(data_dir, 'label_map.csv')):
        print(f'Writing the synthetic dataset to {data_dir} ...', flush=True)
        synthetic.write_dataset(data_dir)
    flags = {**DEMO_FLAGS,
             'training_data_path': os.path.join(data_dir, 'train-*'),
             'validation_data_path': os.path.join(data_dir, 'val-*'),
             'job-dir': job_dir}
    command = [sys.executable, ENTRYPOINT] + [f'--{k}={v}' for k, v in flags.items()]
    command += list(extra_flags)
    print('Running:', ' '.join(command), flush=True)
    start = time.time()
    code = subprocess.call(command)
    if code != 0:
        print(f'The training job failed with exit status {code}.', file=sys.stderr)
        return code
    wall = time.time() - start
    model_dir = os.path.join(job_dir, 'model')
    with open(os.path.join(model_dir, 'metrics.json')) as f:
        best = json.load(f)

    # One prediction, as a serving client would send it: raw image bytes + key.
    import numpy as np
    from object_detection_algo.serving import model_client
    image, boxes, labels = synthetic.draw_image(np.random.RandomState(12345))
    sample = os.path.join(out_dir, 'sample.jpg')
    with open(sample, 'wb') as f:
        f.write(synthetic.encode(image))
    serve = model_client.load(model_dir)
    [result] = model_client.predict(serve, [synthetic.encode(image)], ['demo-image'])
    n = int(result['num_detections'])
    print(f'\nDemo done in {wall / 60:.1f} min. Best AP {best["metrics"]["AP"]:.3f} '
          f'(AP50 {best["metrics"]["AP50"]:.3f}) at step {best["step"]}.')
    print(f'Best model: {model_dir}  (metrics: {model_dir}/metrics.json)')
    print(f'Prediction on a new image (key {result["key"].decode()}), truth: ' +
          ', '.join(f'{synthetic.CLASS_NAMES[l - 1]}' for l in labels))
    for i in range(n):
        if result['detection_scores'][i] < 0.3:
            continue
        cls = synthetic.CLASS_NAMES[int(result['detection_classes'][i]) - 1]
        box = ', '.join(f'{v:.2f}' for v in result['detection_boxes'][i])
        print(f'  {cls:8s} score {result["detection_scores"][i]:.2f}  box [{box}]')
    labels_csv = os.path.join(data_dir, 'label_map.csv')
    print('\nNext, with the exported model:\n'
          f'  python -m object_detection_algo predict --model_dir {model_dir} '
          f'--label_map {labels_csv} --draw_dir {out_dir}/drawn {sample}\n'
          f'  python -m object_detection_algo evaluate --model_dir {model_dir} '
          f'--data_path "{flags["validation_data_path"]}" --label_map {labels_csv} '
          f'--output_dir {out_dir}/evaluation')
    return 0
