"""Checking TFRecords against the record format (docs/contract.md, "The data")
before any compute is spent.

`check_example` applies the per-record rules to one parsed tf.train.Example
(cheap to test one rule at a time); `Validator` streams files through it and
adds what needs the whole set: duplicate source_ids, 0-based labels, the class
histogram, box sizes and the anchor coverage (anchor_coverage.py: will each box
get an anchor with IoU >= the matcher's threshold?). `Report` prints the
summary, gives the job its log lines and holds the full JSON.

Records are numbered from 0 within each file.
"""

import collections
import dataclasses
import functools
import re
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from object_detection_algo.data import anchor_coverage

ERROR, WARNING, INFO = 'error', 'warning', 'info'

# Boxes without an anchor at IoU >= the threshold still train on their best
# anchor (Model Garden force-matches each box), so a few do little harm; a
# class with one box in twenty or more left to that weak match is worth a warning.
COVERAGE_WARN_BELOW = 0.95

# Every rule: code -> (severity, what it means). The table in docs/data.md comes from
# here (`rules_table`; tests/test_record_checks.py keeps them in step).
RULES = {
    'unreadable_file': (ERROR, 'the TFRecord file cannot be read to the end (corrupt or truncated)'),
    'not_an_example': (ERROR, 'a record that is not a serialized tf.train.Example'),
    'missing_key': (ERROR, 'a required key is absent'),
    'wrong_type': (ERROR, 'a key holds the wrong type (e.g. float labels) or several images'),
    'undecodable_image': (ERROR, 'image/encoded does not decode as an image, decoded as '
                                 'training decodes it'),
    'length_mismatch': (ERROR, 'box coordinate, label (and is_crowd) lists of different lengths'),
    'box_outside': (ERROR, 'a box coordinate outside [0, 1]'),
    'box_min_ge_max': (ERROR, 'a box with xmin > xmax or ymin > ymax'),
    'zero_area_box': (ERROR, 'a box with xmin == xmax or ymin == ymax'),
    'label_out_of_range': (ERROR, 'a label outside 1..num_classes'),
    'zero_based_labels': (ERROR, 'labels run 0..num_classes-1: they look 0-based; add 1 to '
                                 'every label'),
    'size_mismatch': (ERROR, 'image/height or image/width disagree with the decoded image'),
    'duplicate_source_id': (ERROR, 'two records with the same image/source_id, both '
                                   'named'),
    'no_records': (ERROR, 'the files hold no records at all (e.g. 0-byte files)'),
    'no_boxes_in_set': (ERROR, 'no record holds a box: nothing to learn from or score'),
    'low_anchor_coverage': (WARNING, f'under {COVERAGE_WARN_BELOW:.0%} of a class\'s boxes have '
                                     'an anchor with IoU >= the matcher\'s threshold at '
                                     'image_size'),
    'too_many_boxes': (WARNING, 'more boxes than max_num_bboxes_in_training: the rest are dropped'),
    'tiny_image': (WARNING, 'an image under 16 px on a side'),
    'no_boxes': (INFO, 'an image without boxes (a valid negative example)'),
}


def rules_table() -> str:
    """The rule table of docs/data.md, generated from RULES."""
    rows = ['| Rule | Severity | Meaning |', '|---|---|---|']
    rows += [f'| `{code}` | {severity} | {meaning} |' for code, (severity, meaning) in RULES.items()]
    return '\n'.join(rows) + '\n'


TINY_IMAGE = 16  # px; a smaller side is warned about
UNCOVERED_LISTED = 1000  # uncovered boxes the JSON report lists, at most

# Problems of a whole file or set: skipping single records does not fix them.
SET_ERRORS = ('unreadable_file', 'duplicate_source_id', 'zero_based_labels', 'no_records',
              'no_boxes_in_set')

BOX_KEYS = ('image/object/bbox/ymin', 'image/object/bbox/xmin',
            'image/object/bbox/ymax', 'image/object/bbox/xmax')
LABEL_KEY = 'image/object/class/label'
CROWD_KEY = 'image/object/is_crowd'  # optional; when given, one per box
# key -> protobuf list kind it must hold
REQUIRED = {'image/encoded': 'bytes_list', LABEL_KEY: 'int64_list',
            **{k: 'float_list' for k in BOX_KEYS}}
OPTIONAL = {'image/height': 'int64_list', 'image/width': 'int64_list',
            'image/source_id': 'bytes_list', 'image/filename': 'bytes_list',
            'image/object/class/text': 'bytes_list', CROWD_KEY: 'int64_list'}


@functools.lru_cache(maxsize=None)
def model_garden_defaults() -> Tuple[int, float]:
    """(anchor scales per level, matcher threshold): no flag sets them, so the
    job has Model Garden's defaults."""
    from official.vision.configs import retinanet
    return retinanet.Anchor().num_scales, retinanet.Parser().match_threshold


@dataclasses.dataclass(frozen=True)
class CheckSettings:
    num_classes: int
    image_size: Tuple[int, int] = (640, 640)  # --image_size, height first
    anchor_size: float = 4.0
    min_level: int = 3
    max_boxes: int = 100  # the job keeps this many per image (--max_num_bboxes_in_training)
    max_level: int = 7
    aspect_ratios: Tuple[float, ...] = (1.0, 2.0, 0.5)
    num_scales: int = dataclasses.field(default_factory=lambda: model_garden_defaults()[0])
    match_threshold: float = dataclasses.field(
        default_factory=lambda: model_garden_defaults()[1])

    def anchors(self) -> anchor_coverage.AnchorSettings:
        return anchor_coverage.AnchorSettings(
            image_size=tuple(self.image_size), min_level=self.min_level,
            max_level=self.max_level, anchor_size=self.anchor_size,
            aspect_ratios=tuple(self.aspect_ratios), num_scales=self.num_scales,
            match_threshold=self.match_threshold)

    @property
    def input_size(self) -> Tuple[int, int]:
        """The model input: image_size padded to a multiple of 2^max_level."""
        return self.anchors().input_size


@dataclasses.dataclass
class RecordFacts:
    """What one record holds, for the set-wide checks and statistics."""
    source_id: str = ''
    filename: str = ''
    labels: List[int] = dataclasses.field(default_factory=list)
    texts: List[str] = dataclasses.field(default_factory=list)
    # The valid boxes training keeps (crowd boxes are skipped), when the image
    # decoded: (box index, normalized [ymin, xmin, ymax, xmax], label).
    boxes: List[Tuple[int, Tuple[float, ...], int]] = dataclasses.field(default_factory=list)
    image_hw: Tuple[int, int] = (0, 0)  # the decoded image's height, width


def _values(feature):
    kind = feature.WhichOneof('kind')
    return kind, (list(getattr(feature, kind).value) if kind else [])


def _text(value: bytes) -> str:
    return value.decode('utf-8', 'replace')


def image_size(encoded: bytes) -> Tuple[int, int]:
    """(height, width) of the decoded image, decoded as the training input
    decodes it (tf.io.decode_image); ValueError if it does not decode."""
    import tensorflow as tf
    try:
        shape = tf.io.decode_image(encoded, channels=3, expand_animations=False).shape
    except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError) as e:
        # Keep TensorFlow's reason, without its op and device decorations.
        reason = re.sub(r'\{\{.*?\}\}\s*|\s*\[Op:\w+\]', '', e.message or str(e)).strip()
        raise ValueError(reason) from None
    return int(shape[0]), int(shape[1])


def check_example(example, settings: CheckSettings, decode: bool = True
                  ) -> Tuple[List[Tuple[str, str]], RecordFacts]:
    """The per-record rules on a parsed tf.train.Example.

    Returns ([(code, message), ...], facts). Messages say what is wrong and
    with which values; the caller adds which record it is.
    """
    features = example.features.feature
    problems: List[Tuple[str, str]] = []
    facts = RecordFacts()
    lists = {}
    for key, kind in {**REQUIRED, **OPTIONAL}.items():
        if key not in features:
            if key in REQUIRED:
                problems.append(('missing_key', f'required key {key} is missing'))
            continue
        got, values = _values(features[key])
        if got != kind and not (got is None and key != 'image/encoded'):
            problems.append(('wrong_type', f'{key} holds {got or "nothing"}, '
                                           f'expected {kind}'))
            continue
        lists[key] = values
    if 'image/source_id' in lists and lists['image/source_id']:
        facts.source_id = _text(lists['image/source_id'][0])
    if 'image/filename' in lists and lists['image/filename']:
        facts.filename = _text(lists['image/filename'][0])
    facts.texts = [_text(t) for t in lists.get('image/object/class/text', [])]

    decoded = None
    encoded = lists.get('image/encoded')
    if encoded is not None:
        if len(encoded) != 1:
            problems.append(('wrong_type', f'image/encoded holds {len(encoded)} values, '
                                           'expected one image'))
        elif decode:
            try:
                decoded = image_size(encoded[0])
            except ValueError as e:
                problems.append(('undecodable_image',
                                 f'image/encoded ({len(encoded[0])} bytes) does not decode: {e}'))
    if decoded is not None:
        if min(decoded) < TINY_IMAGE:
            problems.append(('tiny_image', f'the image is {decoded[1]}x{decoded[0]} px (width x '
                                           'height): scaled to the model input it shows almost '
                                           'nothing'))
        for key, actual in zip(('image/height', 'image/width'), decoded):
            given = lists.get(key)
            if given and given[0] != actual:
                problems.append(('size_mismatch', f'{key}={given[0]} but the image is '
                                                  f'{decoded[1]}x{decoded[0]} (width x height)'))

    if any(k not in lists for k in (*BOX_KEYS, LABEL_KEY)):
        return problems, facts
    lengths = {k: len(lists[k]) for k in (*BOX_KEYS, LABEL_KEY)}
    if lists.get(CROWD_KEY):  # empty means no crowd boxes, as Model Garden reads it
        lengths[CROWD_KEY] = len(lists[CROWD_KEY])
    if len(set(lengths.values())) > 1:
        problems.append(('length_mismatch', 'lists of different lengths: ' + ', '.join(
            f'{k.rsplit("/", 1)[1]} {n}' for k, n in lengths.items())))
        return problems, facts

    labels = lists[LABEL_KEY]
    facts.labels = labels
    if not labels:
        problems.append(('no_boxes', 'no boxes (a negative example)'))
    if len(labels) > settings.max_boxes:
        problems.append(('too_many_boxes', f'{len(labels)} boxes; training keeps the first '
                                           f'{settings.max_boxes} (--max_num_bboxes_in_training'
                                           f'={settings.max_boxes})'))
    for i, label in enumerate(labels):
        if not 1 <= label <= settings.num_classes:
            hint = ' (0 is the background class)' if label == 0 else ''
            problems.append(('label_out_of_range', f'box {i}: label {label} is outside '
                                                   f'1..{settings.num_classes}{hint}'))
    if decoded is not None:
        facts.image_hw = decoded
    crowd = lists.get(CROWD_KEY) or [0] * len(labels)
    for i, (ymin, xmin, ymax, xmax) in enumerate(zip(*(lists[k] for k in BOX_KEYS))):
        shown = f'box {i} [ymin {ymin:.6g}, xmin {xmin:.6g}, ymax {ymax:.6g}, xmax {xmax:.6g}]'
        coords = (ymin, xmin, ymax, xmax)
        if not all(0.0 <= c <= 1.0 for c in coords):  # also catches NaN
            problems.append(('box_outside', f'{shown}: outside [0, 1]'))
        elif xmin > xmax or ymin > ymax:
            problems.append(('box_min_ge_max', f'{shown}: min > max'))
        elif xmin == xmax or ymin == ymax:
            problems.append(('zero_area_box', f'{shown}: zero area'))
        elif decoded is not None and not crowd[i]:  # training skips crowd boxes
            facts.boxes.append((i, coords, labels[i]))
    return problems, facts


@dataclasses.dataclass
class Issue:
    code: str
    file: str  # '' for an issue of the whole set
    index: int  # record number in the file, from 0; -1 for the whole file/set
    source_id: str
    filename: str
    message: str

    @property
    def severity(self) -> str:
        return RULES[self.code][0]

    def where(self) -> str:
        if self.index < 0:
            return self.file
        return record_name(self.file, self.index, self.source_id, self.filename)

    def line(self) -> str:
        where = self.where()
        return f'{where}: {self.message}' if where else self.message


def record_name(file: str, index: int, source_id: str, filename: str) -> str:
    names = ', '.join(x for x in (f'source_id {source_id!r}' if source_id else '', filename) if x)
    return f'{file} record {index}' + (f' ({names})' if names else '')


@dataclasses.dataclass(frozen=True)
class BoxRef:
    """Where a box the coverage measured comes from."""
    file: str
    index: int  # record number in the file
    source_id: str
    filename: str
    box: int  # box number in the record


class Report:
    """Issues plus statistics over the records checked."""

    def __init__(self, settings: CheckSettings):
        self.settings = settings
        self.issues: List[Issue] = []
        self.files: List[str] = []
        self.records = 0
        self.complete = True  # every record of every file checked
        self.sample_note = ''
        self.seconds = 0.0
        self.histogram: Dict[int, int] = collections.Counter()
        self.class_text: Dict[int, str] = {}
        # The boxes training keeps, for their sizes and the anchor coverage.
        self.box_coords: List[Tuple[float, ...]] = []
        self.box_image_hw: List[Tuple[int, int]] = []
        self.box_labels: List[int] = []
        self.box_refs: List[BoxRef] = []
        self.coverage: Optional[anchor_coverage.Coverage] = None  # set by Validator.finish
        # Fingerprints of the records with an error of their own (see `fingerprint`).
        self.bad_records: List[int] = []

    def count(self, severity: str) -> int:
        return sum(1 for i in self.issues if i.severity == severity)

    @property
    def ok(self) -> bool:
        return self.count(ERROR) == 0

    def set_errors(self) -> List[Issue]:
        return [i for i in self.issues if i.code in SET_ERRORS]

    def counts(self) -> Dict[str, int]:
        return dict(sorted(collections.Counter(i.code for i in self.issues).items()))

    def boxes(self) -> anchor_coverage.Boxes:
        return anchor_coverage.Boxes.of(self.box_coords, self.box_image_hw, self.box_labels)

    def class_name(self, label: int) -> str:
        return f'{label} {self.class_text.get(label, "")}'.strip()

    def box_stats(self) -> Dict[str, float]:
        """Box sides (sqrt of area) at the model input, in pixels."""
        if not self.coverage or not self.coverage.total:
            return {'count': 0}
        sides = np.sort(np.sqrt(np.prod(self.coverage.sizes, axis=1)))
        return {'count': len(sides), 'min': float(sides[0]),
                'median': float(sides[len(sides) // 2]), 'max': float(sides[-1])}

    def low_coverage_classes(self) -> Dict[int, Tuple[int, int]]:
        """{label: (covered, boxes)} of the classes under COVERAGE_WARN_BELOW."""
        if not self.coverage:
            return {}
        return {k: (c, n) for k, (c, n) in self.coverage.by_class().items()
                if c / n < COVERAGE_WARN_BELOW}

    def uncovered_examples(self, limit: int) -> List[dict]:
        """The first `limit` boxes without a covering anchor, in set order."""
        cov = self.coverage
        found = []
        for i in (cov.uncovered()[:limit] if cov else []):
            width, height = cov.sizes[i]
            found.append({**dataclasses.asdict(self.box_refs[i]), 'label': int(cov.labels[i]),
                          'kind': cov.kinds[i], 'width': round(float(width), 1),
                          'height': round(float(height), 1),
                          'best_iou': round(float(cov.best[i]), 3)})
        return found

    def coverage_dict(self) -> Optional[dict]:
        cov = self.coverage
        if not cov:
            return None
        return {
            'image_size': list(cov.anchors.input_size),
            'anchors': dataclasses.asdict(cov.anchors),
            'match_threshold': cov.anchors.match_threshold,
            'warn_below': COVERAGE_WARN_BELOW,
            'boxes': cov.total, 'covered': cov.covered, 'share': round(cov.share, 4),
            'by_class': {str(k): {'text': self.class_text.get(k, ''), 'boxes': n, 'covered': c,
                                  'share': round(c / n, 4)}
                         for k, (c, n) in cov.by_class().items()},
            'uncovered_by_kind': cov.by_kind(),
            'uncovered': self.uncovered_examples(UNCOVERED_LISTED),
            'suggestions': [dataclasses.asdict(s) for s in cov.suggestions],
            'suggestions_measured_on': cov.measured_on,
        }

    def as_dict(self) -> dict:
        return {
            'ok': self.ok, 'files': self.files, 'records_checked': self.records,
            'all_records_checked': self.complete, 'sample': self.sample_note,
            'seconds': round(self.seconds, 3),
            'settings': dataclasses.asdict(self.settings),
            'counts': {sev: self.count(sev) for sev in (ERROR, WARNING, INFO)},
            'counts_by_rule': self.counts(),
            'records_with_errors': len(self.bad_records),
            'class_histogram': {str(k): {'count': v, 'text': self.class_text.get(k, '')}
                                for k, v in sorted(self.histogram.items())},
            'box_size_at_model_input': self.box_stats(),
            'anchor_coverage': self.coverage_dict(),
            'issues': [{'severity': i.severity, **dataclasses.asdict(i)} for i in self.issues],
        }

    # --- text ------------------------------------------------------------------

    def _histogram_text(self) -> str:
        return ', '.join(f'{self.class_name(k)}: {v}' for k, v in sorted(self.histogram.items()))

    def _suggestions_text(self) -> str:
        cov = self.coverage
        if not cov.suggestions:
            return 'no single-flag change tried covers more'
        sampled = (f' (measured on {cov.measured_on} of {cov.total} boxes)'
                   if cov.measured_on < cov.total else '')
        return ', '.join(s.text(self.class_text, len(cov.by_class()))
                         for s in cov.suggestions) + sampled

    def _coverage_headline(self) -> str:
        cov = self.coverage
        anchors = cov.anchors
        h, w = anchors.input_size
        padded = ('' if tuple(anchors.image_size) == (h, w) else
                  f' (--image_size={anchors.image_size[0]},{anchors.image_size[1]} padded to '
                  f'a multiple of 2^{anchors.max_level})')
        return (f'Anchor coverage at image_size {h},{w}{padded}: {cov.covered} of {cov.total} '
                f'boxes ({anchor_coverage.percent(cov.share)}) have an anchor with IoU >= '
                f'{anchors.match_threshold:g}')

    def coverage_warning(self) -> str:
        """The low_anchor_coverage message: the classes under the bar, why, what to try."""
        cov = self.coverage
        low = ', '.join(f'{self.class_name(k)}: {c} of {n} boxes '
                        f'({anchor_coverage.percent(c / n)})'
                        for k, (c, n) in self.low_coverage_classes().items())
        h, w = cov.anchors.input_size
        return (f'{low} have an anchor with IoU >= {cov.anchors.match_threshold:g} at '
                f'image_size {h},{w}: under {COVERAGE_WARN_BELOW:.0%} (all classes: '
                f'{anchor_coverage.percent(cov.share)}; not covered: '
                f'{anchor_coverage.kinds_text(cov.by_kind())}). Measured single-flag changes: '
                f'{self._suggestions_text()}.')

    def coverage_lines(self, examples: int) -> List[str]:
        cov = self.coverage
        lines = [f'{self._coverage_headline()}; {cov.anchors.describe()}.']
        if not cov.total or cov.covered == cov.total:
            return lines
        classes = sorted(cov.by_class().items(), key=lambda kv: (kv[1][0] / kv[1][1], kv[0]))
        lines.append('  By class, least covered first: ' + ', '.join(
            f'{self.class_name(k)} {c} of {n} ({anchor_coverage.percent(c / n)})'
            for k, (c, n) in classes) + '.')
        lines.append('  Not covered: ' + ', '.join(
            f'{n} {kind.replace("_", " ")} ({anchor_coverage.kind_definition(kind, cov.anchors)})'
            for kind, n in cov.by_kind().items()) + ':')
        for box in self.uncovered_examples(examples):
            where = record_name(box['file'], box['index'], box['source_id'], box['filename'])
            lines.append(f'    {box["kind"].replace("_", " ")}: {where}: box {box["box"]} '
                         f'({self.class_name(box["label"])}), {box["width"]:.0f}x'
                         f'{box["height"]:.0f} px, best IoU {box["best_iou"]:.2f}')
        if len(cov.uncovered()) > examples:
            lines.append(f'    ... {len(cov.uncovered()) - examples} more in the JSON report')
        lines.append(f'  Single-flag changes that cover more, measured: '
                     f'{self._suggestions_text()}.')
        return lines

    def summary(self, examples: int = 3) -> str:
        rate = self.records / self.seconds if self.seconds else 0.0
        what = 'all records' if self.complete else f'a sample: {self.sample_note}'
        lines = [f'Checked {self.records} records in {len(self.files)} file(s) ({what}) in '
                 f'{self.seconds:.1f} s ({rate:.0f} records/s).']
        by_code = self._by_code()
        for severity, title in ((ERROR, 'Errors'), (WARNING, 'Warnings'), (INFO, 'Info')):
            codes = [c for c in RULES if RULES[c][0] == severity and c in by_code]
            lines.append(f'{title}: {self.count(severity)}' + (':' if codes else '.'))
            for code in codes:
                found = by_code[code]
                lines.append(f'  {code} ({RULES[code][1]}): {len(found)}')
                lines.extend(f'    {i.line()}' for i in found[:examples])
                if len(found) > examples:
                    lines.append(f'    ... {len(found) - examples} more in the JSON report')
        lines.append(f'Classes (label text: boxes): {self._histogram_text() or "no boxes"}')
        stats = self.box_stats()
        if stats['count']:
            h, w = self.settings.input_size
            lines.append(f'Box size at image_size {h},{w} (sqrt of area, px): min '
                         f'{stats["min"]:.1f}, median {stats["median"]:.1f}, max '
                         f'{stats["max"]:.1f}.')
            lines.extend(self.coverage_lines(examples))
        lines.append('Result: ' + ('OK' if self.ok else f'{self.count(ERROR)} error(s)'))
        return '\n'.join(lines)

    def _by_code(self) -> Dict[str, List[Issue]]:
        by_code = collections.defaultdict(list)
        for issue in self.issues:
            by_code[issue.code].append(issue)
        return by_code

    def one_line(self) -> str:
        """The check in one line: what was read, the counts, classes, box sizes
        and anchor coverage (the training job's log line for a set)."""
        read = 'all read' if self.complete else f'a sample: {self.sample_note}'
        counts = [plural(self.count(ERROR), 'error'), plural(self.count(WARNING), 'warning')]
        info = [f'{c} {len(found)}' for c, found in self._by_code().items()
                if RULES[c][0] == INFO]
        if info:
            counts.append('info: ' + ', '.join(info))
        parts = [f'{self.records} records in {len(self.files)} file(s) ({read}, '
                 f'{self.seconds:.1f} s): {", ".join(counts)}',
                 f'classes {self._histogram_text() or "none"}']
        stats = self.box_stats()
        if stats['count']:
            parts.append(f'boxes {stats["min"]:.0f}-{stats["max"]:.0f} px (median '
                         f'{stats["median"]:.0f})')
            parts.append(f'anchor coverage {anchor_coverage.percent(self.coverage.share)}')
        return '; '.join(parts) + '.'

    def problem_lines(self, examples: int = 3) -> List[Tuple[str, str]]:
        """(severity, line) for each kind of error or warning found, errors
        first: its count and meaning; examples for errors only (the full list
        is in the JSON report); a problem of the whole set with its message."""
        by_code = self._by_code()
        lines = []
        for severity in (ERROR, WARNING):
            for code in (c for c in RULES if RULES[c][0] == severity and c in by_code):
                found = by_code[code]
                line = f'{len(found)} {code} ({RULES[code][1]})'
                if all(i.index < 0 and not i.file for i in found):  # of the whole set
                    line = f'{code}: ' + '; '.join(i.message for i in found)
                elif severity == ERROR:
                    line += ': ' + '; '.join(i.line() for i in found[:examples])
                    if len(found) > examples:
                        line += f'; {len(found) - examples} more in the JSON report'
                lines.append((severity, line))
        return lines


def plural(n: int, noun: str) -> str:
    """'no errors', '1 error', '2 errors'."""
    return f'{n or "no"} {noun}' + ('' if n == 1 else 's')


def fingerprint(serialized):
    """A 62-bit hash of a serialized record, the same in Python (bytes) and in a
    tf.data pipeline (string tensor): how the job skips the records listed here."""
    import tensorflow as tf
    return tf.strings.to_hash_bucket_fast(serialized, 2 ** 62)


class Validator:
    """Streams records through check_example and the set-wide rules."""

    def __init__(self, settings: CheckSettings, decode: bool = True):
        self.report = Report(settings)
        self.decode = decode
        self._ids: Dict[str, str] = {}  # source_id -> where it was first seen
        self._label_zero: Optional[Issue] = None

    def add(self, raw: bytes, path: str, index: int) -> None:
        import tensorflow as tf
        report = self.report
        report.records += 1
        try:
            example = tf.train.Example.FromString(raw)
        except Exception as e:  # protobuf's DecodeError
            issue = Issue('not_an_example', path, index, '', '', f'not a tf.train.Example ({e})')
            report.issues.append(issue)
            report.bad_records.append(int(fingerprint(raw)))
            return
        problems, facts = check_example(example, report.settings, self.decode)
        for code, message in problems:
            issue = Issue(code, path, index, facts.source_id, facts.filename, message)
            report.issues.append(issue)
            if code == 'label_out_of_range' and ' label 0 ' in message and not self._label_zero:
                self._label_zero = issue
        if any(RULES[code][0] == ERROR for code, _ in problems):
            report.bad_records.append(int(fingerprint(raw)))
        for i, label in enumerate(facts.labels):
            report.histogram[label] += 1
            if i < len(facts.texts):
                report.class_text.setdefault(label, facts.texts[i])
        for box, coords, label in facts.boxes:
            report.box_coords.append(coords)
            report.box_image_hw.append(facts.image_hw)
            report.box_labels.append(label)
            report.box_refs.append(BoxRef(path, index, facts.source_id, facts.filename, box))
        if facts.source_id:
            here = Issue('duplicate_source_id', path, index, facts.source_id, facts.filename, '')
            if facts.source_id in self._ids:
                here.message = f'source_id also used by {self._ids[facts.source_id]}'
                report.issues.append(here)
            else:
                self._ids[facts.source_id] = here.where()

    def add_file(self, path: str, limit: Optional[int] = None) -> None:
        """Checks the records of one file, the first `limit` when given."""
        import tensorflow as tf
        self.report.files.append(path)
        index = 0
        try:
            for raw in tf.data.TFRecordDataset(path):
                if limit is not None and index >= limit:
                    self.report.complete = False
                    break
                self.add(raw.numpy(), path, index)
                index += 1
        except (tf.errors.DataLossError, tf.errors.OutOfRangeError,
                tf.errors.InvalidArgumentError) as e:
            self.report.issues.append(Issue(
                'unreadable_file', path, -1, '', '',
                f'cannot read past record {index - 1} ({index} read): {e.message}'))

    def finish(self) -> Report:
        report = self.report
        n = report.settings.num_classes
        unreadable = any(i.code == 'unreadable_file' for i in report.issues)
        if report.files and not report.records and not unreadable:
            report.issues.append(Issue(
                'no_records', report.files[0], -1, '', '',
                f'the {len(report.files)} file(s) read hold no records (0-byte or empty '
                'TFRecord files): nothing to train or evaluate on. Check the glob and how the '
                'files were written.'))
        elif report.records and not report.histogram:
            report.issues.append(Issue(
                'no_boxes_in_set', report.files[0], -1, '', '',
                f'none of the {report.records} records read holds a box: the model would '
                'learn no object (and COCO AP needs boxes to score). Check the box and label '
                'keys the converter wrote; a few images without boxes are fine.'))
        labels = [k for k in report.histogram]
        if self._label_zero and max(labels) <= n - 1:
            first = self._label_zero
            report.issues.append(Issue(
                'zero_based_labels', first.file, first.index, first.source_id, first.filename,
                f'labels look 0-based: they run {min(labels)}..{max(labels)} with '
                f'--num_classes={n}, but labels are 1..num_classes (0 is the background). '
                'Add 1 to every label (reconvert the data); this record is the first with '
                'label 0.'))
        self._measure_coverage()
        return report

    def _measure_coverage(self) -> None:
        """The anchor coverage of the boxes read, and a warning for the classes it leaves short."""
        report = self.report
        if not report.box_labels:
            return
        report.coverage = anchor_coverage.measure(report.boxes(), report.settings.anchors())
        if report.low_coverage_classes():
            report.issues.append(Issue('low_anchor_coverage', '', -1, '', '',
                                       report.coverage_warning()))


def spread(files: Sequence[str], max_records: Optional[int]) -> Tuple[List[str], Optional[int]]:
    """Which files to read and how many records of each for a bounded sample:
    at most max_records in all, spread evenly over the files."""
    if max_records is None:
        return list(files), None
    chosen = list(files)
    if len(files) > max_records:
        step = len(files) / max_records
        chosen = [files[int(i * step)] for i in range(max_records)]
    return chosen, max(1, max_records // len(chosen))


def validate(files: Sequence[str], settings: CheckSettings,
             max_records: Optional[int] = None) -> Report:
    """Checks every record of `files`, or a bounded sample of at most
    max_records (the first records of each file, spread over the files)."""
    start = time.time()
    chosen, per_file = spread(files, max_records)
    validator = Validator(settings)
    for path in chosen:
        validator.add_file(path, per_file)
    report = validator.finish()
    if len(chosen) < len(files):
        report.complete = False
    if not report.complete:
        report.sample_note = (f'up to {per_file} records from each of {len(chosen)} of '
                              f'{len(files)} files')
    report.seconds = time.time() - start
    return report
