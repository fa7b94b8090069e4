"""`evaluate`: COCO box metrics of an exported model on a TFRecord glob, with
pycocotools as the training job uses it: the 12 standard numbers, AP per
class and precision/recall curves, written to an output dir.

It reads ground truth with the job's own decoder (same source ids, sizes and
areas) and evaluates every image, also those with no detection, so on the
same records it reproduces the job's AP for the same model."""

import contextlib
import io
import posixpath
import sys
import time
from typing import Dict, Iterator, List, Optional

import numpy as np

from object_detection_algo import errors
from object_detection_algo.adapters import coco_metrics
from object_detection_algo.adapters.coco_metrics import COCO_METRICS

IOU_CURVES = {'iou50': 0.5, 'iou75': 0.75}


def ground_truth(files: List[str]) -> Iterator[Dict]:
    """Per record: the encoded image and the ground truth as the job sees it."""
    import tensorflow as tf
    from object_detection_algo.adapters.record_decoder import RecordDecoder
    decoder = RecordDecoder()

    def parse(serialized):
        decoded = decoder.decode(serialized)
        encoded = tf.io.parse_single_example(
            serialized, {'image/encoded': tf.io.FixedLenFeature((), tf.string)})
        keep = ('source_id', 'height', 'width', 'groundtruth_boxes', 'groundtruth_classes',
                'groundtruth_is_crowd', 'groundtruth_area')
        return {'encoded': encoded['image/encoded'], **{k: decoded[k] for k in keep}}

    dataset = tf.data.TFRecordDataset(files).map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    yield from dataset.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


class CocoData:
    """Ground truth and detections in COCO's own JSON layout."""

    def __init__(self):
        self.images: List[Dict] = []
        self.truth: List[Dict] = []
        self.detections: List[Dict] = []
        self.duplicates = 0
        self._ids: set = set()

    def add(self, record: Dict, result: Dict) -> None:
        image_id = int(record['source_id'])
        self.duplicates += image_id in self._ids
        self._ids.add(image_id)
        height, width = int(record['height']), int(record['width'])
        self.images.append({'id': image_id, 'height': height, 'width': width})
        scale = np.array([height, width, height, width], np.float64)
        for box, cls, crowd, area in zip(record['groundtruth_boxes'] * scale,
                                         record['groundtruth_classes'],
                                         record['groundtruth_is_crowd'],
                                         record['groundtruth_area']):
            self.truth.append({'id': len(self.truth) + 1, 'image_id': image_id,
                               'category_id': int(cls), 'iscrowd': int(crowd),
                               'area': float(area), 'bbox': _xywh(box)})
        count = int(result['num_detections'])
        for box, cls, score in zip(result['detection_boxes'][:count] * scale,
                                   result['detection_classes'][:count],
                                   result['detection_scores'][:count]):
            xywh = _xywh(box)
            self.detections.append({'id': len(self.detections) + 1, 'image_id': image_id,
                                    'category_id': int(cls), 'score': float(score),
                                    'bbox': xywh, 'area': xywh[2] * xywh[3], 'iscrowd': 0})


    def drop_classes_outside(self, num_classes: int) -> Dict[int, int]:
        """Leaves out ground truth with labels outside 1..num_classes (the model
        can never detect them); {label: boxes left out}."""
        outside: Dict[int, int] = {}
        for a in self.truth:
            if not 1 <= a['category_id'] <= num_classes:
                outside[a['category_id']] = outside.get(a['category_id'], 0) + 1
        self.truth = [a for a in self.truth if a['category_id'] not in outside]
        return dict(sorted(outside.items()))


def _xywh(box) -> List[float]:
    ymin, xmin, ymax, xmax = (float(v) for v in box)
    return [xmin, ymin, xmax - xmin, ymax - ymin]


def coco_evaluate(data: CocoData):
    """COCOeval over every image; returns it after accumulate/summarize."""
    from pycocotools import coco, cocoeval
    categories = [{'id': c} for c in sorted({a['category_id'] for a in data.truth})]
    truth, found = coco.COCO(), coco.COCO()
    truth.dataset = {'images': data.images, 'annotations': data.truth, 'categories': categories}
    found.dataset = {'images': data.images, 'annotations': data.detections,
                     'categories': categories}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it goes
        truth.createIndex()
        found.createIndex()
        evaluation = cocoeval.COCOeval(truth, found, iouType='bbox')
        evaluation.params.imgIds = [i['id'] for i in data.images]
        evaluation.evaluate()
        evaluation.accumulate()
    summary = io.StringIO()
    with contextlib.redirect_stdout(summary):
        evaluation.summarize()
    return evaluation, summary.getvalue()


def per_class(evaluation, names: Dict[int, str]) -> List[Dict]:
    """Per class: its true boxes, AP, AP50, AP75 and the F1-best score threshold at
    IoU 0.5 (with its precision and recall), as the training job reports them for
    its best model."""
    aps, points = coco_metrics.per_class_ap(evaluation), coco_metrics.best_f1(evaluation)
    boxes = coco_metrics.true_boxes(evaluation)
    return [{'id': class_id, 'name': names.get(class_id, str(class_id)),
             'num_boxes': boxes[class_id], **aps[class_id], **points[class_id]}
            for class_id in aps]


def pr_curves(evaluation, names: Dict[int, str]) -> Dict:
    """Precision at COCO's 101 recall points, per class, at IoU 0.50 and 0.75
    (-1 where the class has no ground truth)."""
    precision = evaluation.eval['precision'][:, :, :, 0, -1]
    thresholds = list(np.round(evaluation.params.iouThrs, 2))
    curves = {'recall': [round(float(r), 2) for r in evaluation.params.recThrs], 'classes': []}
    for k, class_id in enumerate(evaluation.params.catIds):
        entry = {'id': int(class_id), 'name': names.get(class_id, str(class_id))}
        for label, iou in IOU_CURVES.items():
            entry[f'precision_{label}'] = [float(v) for v in
                                           precision[thresholds.index(iou), :, k]]
        curves['classes'].append(entry)
    return curves


def plot_pr_curves(curves: Dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    from matplotlib import pyplot
    import tensorflow as tf
    figure, axes = pyplot.subplots(1, len(IOU_CURVES), figsize=(10, 4.5), sharey=True)
    for axis, (label, iou) in zip(axes, IOU_CURVES.items()):
        for entry in curves['classes']:
            precision = np.array(entry[f'precision_{label}'])
            recall = np.array(curves['recall'])
            valid = precision > -1
            axis.plot(recall[valid], precision[valid], label=entry['name'])
        axis.set_title(f'IoU {iou:.2f}')
        axis.set_xlabel('recall')
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel('precision')
    axes[-1].legend(loc='lower left')
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format='png', dpi=100)
    pyplot.close(figure)
    with tf.io.gfile.GFile(path, 'wb') as f:
        f.write(buffer.getvalue())


def evaluate(serve, files: List[str], batch_size: int, max_images: Optional[int] = None
             ) -> CocoData:
    """Runs the model over the records; an image the model cannot take stops
    the evaluation (its AP would be wrong), naming the record."""
    from object_detection_algo.serving import model_client
    data = CocoData()
    batch: List[Dict] = []
    start = last = time.time()

    def flush():
        results = model_client.predict(serve, [r['encoded'] for r in batch],
                                       [str(r['source_id'].decode()) for r in batch])
        for record, result in zip(batch, results):
            if isinstance(result, model_client.InstanceError):
                raise model_client.InstanceError(
                    f'record with source_id {record["source_id"].decode()}: {result}')
            data.add(record, result)
        batch.clear()

    for record in ground_truth(files):
        batch.append(record)
        if len(batch) == batch_size:
            flush()
            if time.time() - last >= 10:
                last = time.time()
                sys.stderr.write(f'evaluate: {len(data.images)} images, '
                                 f'{len(data.images) / (last - start):.1f} images/s\n')
        if max_images and len(data.images) + len(batch) >= max_images:
            break
    if batch:
        flush()
    return data


def run(args) -> int:
    """The `evaluate` command: exit 0, or 2 when the model, data or label map
    cannot be used (the message names it)."""
    import tensorflow as tf
    from object_detection_algo import io_utils
    from object_detection_algo.data import label_map, records
    from object_detection_algo.serving import model_client
    start = time.time()
    try:
        names = label_map.read(args.label_map) if args.label_map else {}
        serve = model_client.load(args.model_dir)
        files = records.match_files(args.data_path, 'data_path')
        data = evaluate(serve, files, args.batch_size, args.max_images)
    except errors.JobError as e:
        return errors.report(e, errors.EXIT_USAGE)
    except tf.errors.OpError as e:  # a record the job's decoder cannot read
        return errors.report(errors.DataError(
            f'--data_path={args.data_path}: {e.message.splitlines()[0]} '
            '(`python -m object_detection_algo validate` names the record).'), errors.EXIT_USAGE)
    num_classes = model_client.trained_classes(args.model_dir)
    outside = data.drop_classes_outside(num_classes) if num_classes else {}
    if outside:
        sys.stderr.write(
            f'warning: {sum(outside.values())} boxes have labels outside the model\'s classes '
            f'1..{num_classes} (' + ', '.join(f'label {k}: {n}' for k, n in outside.items()) +
            '): left out of the evaluation. Is --data_path the data this model was trained '
            'for?\n')
    if not data.truth:
        return errors.report(errors.DataError(
            f'{args.data_path}: the {len(data.images)} records hold no boxes; COCO AP needs '
            'ground truth.'), errors.EXIT_USAGE)
    if data.duplicates:
        sys.stderr.write(f'warning: {data.duplicates} records repeat an earlier source_id; '
                         'COCO merges their boxes into one image (as the training job does).\n')
    evaluation, summary = coco_evaluate(data)
    metrics = dict(zip(COCO_METRICS, (float(v) for v in evaluation.stats)))
    classes = per_class(evaluation, names)
    curves = pr_curves(evaluation, names)
    seconds = time.time() - start

    tf.io.gfile.makedirs(args.output_dir)
    io_utils.write_json(posixpath.join(args.output_dir, 'metrics.json'), {
        'model_dir': args.model_dir, 'data_path': args.data_path,
        'num_images': len(data.images), 'num_boxes': len(data.truth),
        'num_detections': len(data.detections), 'seconds': round(seconds, 1),
        'metrics': metrics, 'per_class': classes})
    io_utils.write_json(posixpath.join(args.output_dir, 'pr_curves.json'), curves)
    plot_pr_curves(curves, posixpath.join(args.output_dir, 'pr_curves.png'))

    print(f'Evaluated {args.model_dir} on {len(data.images)} images '
          f'({len(data.truth)} boxes) in {seconds:.1f} s.')
    print(summary, end='')
    print(f'\n{"class":20s} {"boxes":>6s} {"AP":>7s} {"AP50":>7s} {"AP75":>7s}   '
          'best F1 at IoU 0.5: score >=  F1 (precision, recall)')
    for row in classes:
        print(f'{row["name"][:20]:20s} {row["num_boxes"]:6d} {row["AP"]:7.3f} '
              f'{row["AP50"]:7.3f} {row["AP75"]:7.3f}   {row["score_threshold"]:27.2f}  '
              f'{row["f1"]:.2f} ({row["precision"]:.2f}, {row["recall"]:.2f})')
    missing = sorted(set(names) - {row['id'] for row in classes})
    if missing:
        print('No ground truth (not in the mean): ' + ', '.join(names[i] for i in missing))
    print(f'\nWritten: {posixpath.join(args.output_dir, "metrics.json")}, pr_curves.json, '
          'pr_curves.png')
    return errors.EXIT_OK


def add_arguments(parser) -> None:
    parser.add_argument('--model_dir', required=True, help='the exported model (R/model)')
    parser.add_argument('--data_path', required=True, help='TFRecord glob (local or gs://)')
    parser.add_argument('--output_dir', required=True, help='where the reports go')
    parser.add_argument('--label_map', help='id,name CSV for class names')
    parser.add_argument('--batch_size', type=int, default=16, help='images per model call')
    parser.add_argument('--max_images', type=int, help='stop after this many records')
