"""`predict`: answer images with an exported model, as `gcloud ai-platform
local predict` did: one JSON line per instance, or {"predictions": [...]}
for a request. Streams in batches, so memory stays bounded on big inputs."""

import argparse
import io
import itertools
import json
import os
import posixpath
import re
import sys
import time
from typing import Dict, Iterable, Iterator, List, Optional, TextIO, Union

import numpy as np

from object_detection_algo import errors, io_utils

DRAW_THRESHOLD = 0.5  # boxes drawn when no --score_threshold is given
# None (all), one score for every class, or {class id: score}.
Threshold = Union[None, float, Dict[int, float]]
DRAW_MIN_SIZE = 384   # smaller images are drawn enlarged
PROGRESS_SECONDS = 10


def kept(result: Dict[str, np.ndarray], threshold: Threshold) -> np.ndarray:
    """Indices of the detections that reach the threshold: one number for all
    classes, or {class id: number} (the model card's), in score order."""
    count = int(result['num_detections'])
    scores, classes = result['detection_scores'][:count], result['detection_classes'][:count]
    if isinstance(threshold, dict):
        needed = np.array([threshold.get(int(c), DRAW_THRESHOLD) for c in classes])
    else:
        needed = np.full(count, threshold)
    return np.flatnonzero(scores >= needed)


def card_thresholds(model_dir: str) -> Dict[int, float]:
    """{class id: the score threshold that maximised F1 on the validation set},
    from the model card (metrics.json) the training job wrote beside the model."""
    card = io_utils.read_json(posixpath.join(model_dir, 'metrics.json')) or {}
    rows = card.get('per_class')
    if not rows:
        raise errors.UsageError(
            f'--score_threshold=card: {model_dir}/metrics.json has no per-class thresholds '
            '(a model exported before they were recorded). Pass a number instead.')
    # A class without validation boxes has no threshold (-1): the default applies.
    return {int(r['id']): r['score_threshold'] for r in rows if r['score_threshold'] >= 0}


def prediction_json(result: Dict[str, np.ndarray], names: Optional[Dict[int, str]],
                    threshold: Threshold) -> Dict:
    """The signature's outputs for one image as AI Platform returned them
    (all N slots); with a threshold, only the detections that reach it."""
    boxes, classes = result['detection_boxes'], result['detection_classes']
    scores, count = result['detection_scores'], result['num_detections']
    if threshold is not None:
        keep = kept(result, threshold)
        boxes, classes, scores, count = boxes[keep], classes[keep], scores[keep], len(keep)
    out = {'detection_boxes': boxes.tolist(), 'detection_classes': classes.tolist(),
           'detection_scores': scores.tolist(), 'num_detections': float(count),
           'key': result['key'].decode()}
    if names:
        out['detection_class_names'] = [names.get(int(c), str(int(c))) for c in classes]
    return out


def draw(image: bytes, result: Dict, names: Optional[Dict[int, str]], threshold: Threshold,
         path: str) -> None:
    """The image with each detection >= threshold boxed, named and scored."""
    from PIL import Image, ImageDraw
    picture = Image.open(io.BytesIO(image)).convert('RGB')
    if max(picture.size) < DRAW_MIN_SIZE:  # so labels stay readable on small images
        factor = -(-DRAW_MIN_SIZE // max(picture.size))
        picture = picture.resize((picture.width * factor, picture.height * factor))
    pen = ImageDraw.Draw(picture)
    width, height = picture.size
    colours = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6']
    for i in kept(result, threshold):
        score = result['detection_scores'][i]
        ymin, xmin, ymax, xmax = result['detection_boxes'][i]
        class_id = int(result['detection_classes'][i])
        colour = colours[class_id % len(colours)]
        box = [xmin * width, ymin * height, xmax * width, ymax * height]
        pen.rectangle(box, outline=colour, width=2)
        label = f'{(names or {}).get(class_id, class_id)} {score:.2f}'
        left, top, right, bottom = pen.textbbox((box[0], box[1]), label)
        text_top = max(0, box[1] - (bottom - top) - 2)
        pen.rectangle([box[0], text_top, box[0] + right - left + 4, text_top + bottom - top + 2],
                      fill=colour)
        pen.text((box[0] + 2, text_top), label, fill='white')
    import tensorflow as tf
    with tf.io.gfile.GFile(path, 'wb') as f:
        buffer = io.BytesIO()
        picture.save(buffer, format='PNG')
        f.write(buffer.getvalue())


def _png_name(key: str, used: set) -> str:
    name = re.sub(r'[^A-Za-z0-9._-]+', '_', os.path.basename(key)) or 'image'
    name = os.path.splitext(name)[0]
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f'{name}_{n}'
    used.add(candidate)
    return candidate + '.png'


class Progress:
    """A line on stderr every PROGRESS_SECONDS and at the end."""

    def __init__(self):
        self.start = self.last = time.time()
        self.done = self.failed = 0

    def add(self, done: int, failed: int, final: bool = False) -> None:
        self.done += done
        self.failed += failed
        now = time.time()
        if final or now - self.last >= PROGRESS_SECONDS:
            self.last = now
            rate = self.done / max(now - self.start, 1e-9)
            sys.stderr.write(f'predict: {self.done} instances, {self.failed} failed, '
                             f'{rate:.1f} images/s\n')


def answer(serve, stream: Iterable, batch_size: int, names, threshold, draw_dir
           ) -> Iterator[Dict]:
    """One JSON-ready dict per `instances.Instance`, in input order: a
    prediction, or {"key", "error"} naming where the input came from."""
    from object_detection_algo.serving import model_client
    progress = Progress()
    used_names: set = set()
    stream = iter(stream)
    while True:
        chunk = list(itertools.islice(stream, batch_size))
        if not chunk:
            break
        good = [x for x in chunk if x.error is None]
        results = iter(model_client.predict(serve, [x.image for x in good], [x.key for x in good]))
        failed = 0
        for instance in chunk:
            error = instance.error
            result = None if error else next(results)
            if isinstance(result, model_client.InstanceError):
                error, result = str(result), None
            if error:
                failed += 1
                sys.stderr.write(f'error: {instance.origin}: {error}\n')
                yield {'key': instance.key, 'error': f'{instance.origin}: {error}'}
                continue
            if draw_dir:
                try:
                    draw(instance.image, result, names,
                         DRAW_THRESHOLD if threshold is None else threshold,
                         os.path.join(draw_dir, _png_name(instance.key, used_names)))
                except OSError as e:  # Pillow cannot read every format TensorFlow decodes
                    sys.stderr.write(f'warning: {instance.origin}: not drawn: {e}\n')
            yield prediction_json(result, names, threshold)
        progress.add(len(chunk), failed)
    progress.add(0, 0, final=True)


def run(args) -> int:
    """The `predict` command; exit 0 when every instance was answered, 1 when
    some failed (the others are answered), 2 when nothing could start."""
    import tensorflow as tf
    from object_detection_algo.data import label_map
    from object_detection_algo.serving import instances as instances_lib
    from object_detection_algo.serving import model_client
    sources = [bool(args.images), bool(args.json_instances), bool(args.json_request),
               bool(args.tfrecords)]
    if sum(sources) != 1:
        return errors.report(errors.UsageError(
            'give exactly one input: image paths, --json_instances, --json_request or '
            '--tfrecords.'))
    try:
        names = label_map.read(args.label_map) if args.label_map else None
        serve = model_client.load(args.model_dir)
        if args.images:
            stream = instances_lib.from_image_paths(args.images)
        elif args.json_instances:
            stream = instances_lib.from_json_instances(args.json_instances)
        elif args.json_request:
            stream = instances_lib.from_json_request(args.json_request)
        else:
            stream = instances_lib.from_tfrecords(args.tfrecords)
        first = list(itertools.islice(stream, 1))  # surface input errors before output
        stream = itertools.chain(first, stream)
        threshold = (card_thresholds(args.model_dir) if args.score_threshold == 'card'
                     else args.score_threshold)
    except errors.JobError as e:
        return errors.report(e, errors.EXIT_USAGE)
    if args.draw_dir:
        tf.io.gfile.makedirs(args.draw_dir)
    answers = answer(serve, stream, args.batch_size, names, threshold, args.draw_dir)
    failures = 0
    out: TextIO = tf.io.gfile.GFile(args.output, 'w') if args.output else sys.stdout
    try:
        if args.json_request:
            predictions: List[Dict] = list(answers)
            failures = sum('error' in p for p in predictions)
            out.write(json.dumps({'predictions': predictions}) + '\n')
        else:
            for prediction in answers:
                failures += 'error' in prediction
                out.write(json.dumps(prediction) + '\n')
                if out is sys.stdout:
                    out.flush()
    finally:
        if out is not sys.stdout:
            out.close()
    return errors.EXIT_PROBLEMS_FOUND if failures else errors.EXIT_OK


def _threshold(text: str):
    """--score_threshold: a score in [0, 1], or 'card'."""
    if text.strip().lower() == 'card':
        return 'card'
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f'{text!r}: a score between 0 and 1, or "card"')
    return value


def add_arguments(parser) -> None:
    parser.add_argument('images', nargs='*', help='image files, globs or folders (local or gs://)')
    parser.add_argument('--model_dir', required=True, help='the exported model (R/model)')
    parser.add_argument('--json_instances', '--json-instances', dest='json_instances',
                        help='newline-delimited {"encoded_image": {"b64": ...}, "key": ...}')
    parser.add_argument('--json_request', '--json-request', dest='json_request',
                        help='a request body {"instances": [...]}; answers {"predictions": [...]}')
    parser.add_argument('--tfrecords', help='a TFRecord glob; keyed by image/source_id')
    parser.add_argument('--output', help='write here instead of stdout (local or gs://)')
    parser.add_argument('--label_map', help='id,name CSV: adds detection_class_names')
    parser.add_argument('--score_threshold', type=_threshold,
                        help='keep only detections scoring at least this; "card": per class, '
                        'the threshold that maximised F1 on the validation set (metrics.json)')
    parser.add_argument('--draw_dir', help=f'write each image with its boxes as PNG here '
                        f'(boxes >= --score_threshold, else >= {DRAW_THRESHOLD})')
    parser.add_argument('--batch_size', type=int, default=16, help='images per model call')
