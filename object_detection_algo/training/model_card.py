"""The best model's card: what a person deploying it needs, written as
R/model/metrics.json beside the SavedModel. The 12 COCO numbers and, per class,
AP, AP50, AP75 and the score threshold that maximised F1 on the validation set
(IoU 0.5) with its precision and recall; the label map; the data it was trained
and evaluated on; the initial weights; the resolved flags; the step and times.

Class names come from the label map beside the training files (the converters
and the synthetic set write `label_map.csv` there), else from the records'
`image/object/class/text` as the data check found them, else `class N`."""

import posixpath
import time
from typing import Any, Dict, List

from object_detection_algo import io_utils
from object_detection_algo.data import label_map
from object_detection_algo.training.settings import Settings

LABEL_MAP_FILE = 'label_map.csv'


def class_names(settings: Settings, preflight: Dict[str, Any]) -> Dict[int, str]:
    """{class id: name} for 1..num_classes."""
    beside = posixpath.join(posixpath.dirname(settings.training_data_path), LABEL_MAP_FILE)
    found: Dict[int, str] = {}
    if io_utils.exists(beside):
        try:
            found = label_map.read(beside)
        except label_map.LabelMapError:
            found = {}
    if not found:
        for report in preflight.values():
            for class_id, entry in report.get('class_histogram', {}).items():
                if entry.get('text'):
                    found.setdefault(int(class_id), entry['text'])
    return {i: found.get(i, f'class {i}') for i in range(1, settings.num_classes + 1)}


def data_used(settings: Settings, preflight: Dict[str, Any], num_eval: int) -> Dict[str, Any]:
    """Per data flag: the glob, its files and records (None when the check read a sample)."""
    used = {}
    for flag, report in preflight.items():
        complete = report.get('all_records_checked')
        used[flag] = {'path': getattr(settings, flag), 'files': len(report.get('files', [])),
                      'records': report.get('records_checked') if complete else None}
    if 'validation_data_path' in used:
        used['validation_data_path']['records_evaluated'] = num_eval
    return used


def per_class_rows(per_class: Dict[int, Dict[str, float]], names: Dict[int, str]
                   ) -> List[Dict[str, Any]]:
    return [{'id': class_id, 'name': names.get(class_id, f'class {class_id}'), **values}
            for class_id, values in per_class.items()]


def card(settings: Settings, step: int, metrics: Dict[str, float],
         per_class: Dict[int, Dict[str, float]], names: Dict[int, str], data: Dict[str, Any],
         extra: Dict[str, Any], started: float) -> Dict[str, Any]:
    """The metrics.json of a new best model. `extra`: data version, initial
    weights, identity (from the job)."""
    return {
        'step': step, 'metrics': metrics, 'per_class': per_class_rows(per_class, names),
        'label_map': {str(k): v for k, v in names.items()}, 'data': data,
        'flags': settings.as_flags(), **extra,
        'exported_at': time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()),
        'seconds_since_start': round(time.time() - started, 1),
    }


def table(card_: Dict[str, Any]) -> List[str]:
    """The per-class lines the job logs at its end."""
    rows = card_.get('per_class', [])
    width = max([len(r['name']) for r in rows] + [5])
    lines = [f'{"class":{width}s}     AP   AP50   AP75 | best F1 at IoU 0.5: score >= '
             'threshold (precision, recall)']
    for r in rows:
        if r['AP'] < 0:
            lines.append(f'{r["name"]:{width}s}  no boxes in the validation set')
            continue
        lines.append(f'{r["name"]:{width}s} {r["AP"]:6.3f} {r["AP50"]:6.3f} {r["AP75"]:6.3f} | '
                     f'F1 {r["f1"]:.2f} at score >= {r["score_threshold"]:.2f} '
                     f'({r["precision"]:.2f}, {r["recall"]:.2f})')
    return lines
