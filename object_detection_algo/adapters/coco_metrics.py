"""The 12 COCO numbers, named as Model Garden's COCO evaluator names them, in
the order of pycocotools' `COCOeval.stats`, and what the job and `evaluate`
read per class from an accumulated `COCOeval` (its `eval['precision']` and
`eval['scores']` arrays: [IoU, recall point, class, area, max detections]).

Pure numpy: no TensorFlow."""

from typing import Dict

import numpy as np

COCO_METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'ARmax1', 'ARmax10', 'ARmax100', 'ARs', 'ARm', 'ARl')

# The evaluator outputs per class ('<key>/<class id>'), as TensorBoard shows them.
PER_CLASS_KEYS = {'AP': 'AP ByCategory', 'AP50': 'AP50 ByCategory', 'AP75': 'AP75 ByCategory',
                  'f1': 'F1 ByCategory', 'score_threshold': 'F1 ScoreThreshold ByCategory',
                  'precision': 'F1 Precision ByCategory', 'recall': 'F1 Recall ByCategory',
                  'num_boxes': 'Boxes ByCategory'}
F1_FIELDS = ('f1', 'score_threshold', 'precision', 'recall')


def _all_areas_100(evaluation, name: str) -> np.ndarray:
    return evaluation.eval[name][:, :, :, 0, -1]  # area 'all', 100 detections


def _iou_index(evaluation, iou: float) -> int:
    return list(np.round(evaluation.params.iouThrs, 2)).index(iou)


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else -1.0


def per_class_ap(evaluation) -> Dict[int, Dict[str, float]]:
    """{class id: {AP, AP50, AP75}}; -1 for a class without ground truth."""
    precision = _all_areas_100(evaluation, 'precision')
    at50, at75 = _iou_index(evaluation, 0.5), _iou_index(evaluation, 0.75)
    return {int(class_id): {'AP': _mean_valid(precision[:, :, k]),
                            'AP50': _mean_valid(precision[at50, :, k]),
                            'AP75': _mean_valid(precision[at75, :, k])}
            for k, class_id in enumerate(evaluation.params.catIds)}


def best_f1(evaluation, iou: float = 0.5) -> Dict[int, Dict[str, float]]:
    """Per class, the operating point that maximises F1 at this IoU, over COCO's
    101 recall points: the score threshold there, and its (interpolated)
    precision and recall. A class the model never finds gets F1 0 and
    threshold 1; one without ground truth, -1 everywhere."""
    index = _iou_index(evaluation, iou)
    precision = _all_areas_100(evaluation, 'precision')[index]
    scores = _all_areas_100(evaluation, 'scores')[index]
    recall = np.asarray(evaluation.params.recThrs)
    points = {}
    for k, class_id in enumerate(evaluation.params.catIds):
        p = precision[:, k]
        if (p < 0).all():
            points[int(class_id)] = {key: -1.0 for key in F1_FIELDS}
            continue
        f1 = np.where(p > 0, 2 * p * recall / np.maximum(p + recall, 1e-12), 0.0)
        best = int(np.argmax(f1))
        if f1[best] <= 0:
            points[int(class_id)] = {'f1': 0.0, 'score_threshold': 1.0, 'precision': 0.0,
                                     'recall': 0.0}
            continue
        points[int(class_id)] = {'f1': float(f1[best]),
                                 'score_threshold': float(scores[best, k]),
                                 'precision': float(p[best]), 'recall': float(recall[best])}
    return points


def true_boxes(evaluation) -> Dict[int, int]:
    """Per class, the true boxes of the images evaluated: what shows that an
    evaluation saw the whole validation set, whatever the model found."""
    truth = evaluation.cocoGt
    return {int(class_id): len(truth.getAnnIds(imgIds=evaluation.params.imgIds,
                                               catIds=[class_id]))
            for class_id in evaluation.params.catIds}


def per_class_outputs(evaluation) -> Dict[str, float]:
    """per_class_ap, best_f1 and true_boxes as evaluator outputs: '<key>/<class id>': value."""
    aps, points, boxes = per_class_ap(evaluation), best_f1(evaluation), true_boxes(evaluation)
    return {f'{PER_CLASS_KEYS[field]}/{class_id}': value
            for class_id in aps
            for field, value in {**aps[class_id], **points[class_id],
                                 'num_boxes': boxes[class_id]}.items()}


def per_class_from_outputs(outputs: Dict) -> Dict[int, Dict[str, float]]:
    """{class id: AP, AP50, AP75, f1, score_threshold, precision, recall, num_boxes}
    from an evaluation's outputs (per_class_outputs' keys)."""
    names = {v: k for k, v in PER_CLASS_KEYS.items()}
    found: Dict[int, Dict[str, float]] = {}
    for key, value in outputs.items():
        prefix, _, class_id = key.rpartition('/')
        if prefix in names and class_id.isdigit():
            field = names[prefix]
            found.setdefault(int(class_id), {})[field] = (int(value) if field == 'num_boxes'
                                                          else float(value))
    return dict(sorted(found.items()))
