"""Will each box get a positive anchor? The anchor coverage of a set of boxes:
the share whose best IoU with any anchor reaches the matcher's threshold (the
idea Ultralytics calls the best possible recall of the anchors), which boxes
miss and why, and which single flag change would cover more of them, measured.

Model Garden's anchors (official/vision/ops/anchor.py): level l cuts the model
input into ceil(H / 2^l) x ceil(W / 2^l) cells and centres one anchor of each
shape on every cell; a shape is a scale 2^(i / num_scales) and an aspect ratio
r (width / height): width anchor_size * 2^l * scale * sqrt(r), height the same
divided by sqrt(r). The training parser first resizes the image, keeping its
aspect ratio, to fit the model input (the job's --image_size padded up to a
multiple of 2^fpn_max_level), so boxes are measured there, in pixels.

The IoU of a box with the anchors of one shape depends on how far their centres
are apart in x and in y, each on its own, and falls as either distance grows.
So the best anchor of a shape is the one whose centre is nearest the box centre
in x and, independently, in y: a box needs levels x scales x ratios IoUs, not
one per anchor. Pure numpy: no TensorFlow.
"""

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

# The kinds of boxes no anchor covers, in the order a box is classed (first that applies).
KINDS = {
    'too_small': 'area under threshold x the smallest anchor\'s: no anchor reaches the '
                 'threshold wherever it is (IoU <= smaller area / larger area)',
    'too_large': 'area over the largest anchor\'s / threshold: likewise',
    'too_elongated': 'width/height differs from every anchor aspect ratio by more than '
                     '((1 + threshold) / (2 x threshold))^2 (2.25 at 0.5): no anchor of those '
                     'ratios reaches the threshold at any size or place',
    'between_anchors': 'none of the above, but the anchor sizes or centres nearest the box '
                       'are too far apart for any to reach the threshold',
}
BOXES_PER_CHUNK = 20000  # bounds the memory of the box x shape arrays


@dataclasses.dataclass(frozen=True)
class AnchorSettings:
    """The job's anchors and matcher, as its flags and Model Garden set them."""
    image_size: Tuple[int, int]  # --image_size, height first
    min_level: int
    max_level: int
    anchor_size: float
    aspect_ratios: Tuple[float, ...]
    num_scales: int
    match_threshold: float

    @property
    def input_size(self) -> Tuple[int, int]:
        """The model input: image_size padded up to a multiple of 2^max_level."""
        stride = 2 ** self.max_level
        return tuple(int(math.ceil(s / stride) * stride) for s in self.image_size)

    def sides(self) -> np.ndarray:
        """Side of the square anchor of each level and scale, smallest first."""
        return np.array([self.anchor_size * 2 ** level * 2 ** (i / self.num_scales)
                         for level in range(self.min_level, self.max_level + 1)
                         for i in range(self.num_scales)])

    def describe(self) -> str:
        sides = self.sides()
        ratios = ', '.join(f'{r:g}' for r in self.aspect_ratios)
        return (f'anchors {sides[0]:.0f}-{sides[-1]:.0f} px (anchor_size {self.anchor_size:g} '
                f'x 2^{self.min_level}..2^{self.max_level}, {self.num_scales} scales), aspect '
                f'ratios {ratios}')


@dataclasses.dataclass(frozen=True)
class Boxes:
    """Boxes as the records hold them: normalized [ymin, xmin, ymax, xmax], the
    size of their image (so they can be placed at any model input size) and
    their labels."""
    normalized: np.ndarray  # (N, 4)
    image_hw: np.ndarray  # (N, 2) height, width of each box's image in pixels
    labels: np.ndarray  # (N,)

    @classmethod
    def of(cls, normalized: Sequence, image_hw: Sequence, labels: Sequence) -> 'Boxes':
        return cls(np.asarray(normalized, np.float64).reshape(-1, 4),
                   np.asarray(image_hw, np.float64).reshape(-1, 2),
                   np.asarray(labels, np.int64).reshape(-1))

    def __len__(self) -> int:
        return len(self.normalized)

    def at_input(self, input_size: Tuple[int, int]) -> np.ndarray:
        """(N, 4) pixel boxes in a model input of input_size after the parser's
        aspect-preserving resize (Model Garden rounds the resized image's sides)."""
        hw = self.image_hw.astype(np.float64)
        scale = np.minimum(input_size[0] / hw[:, 0], input_size[1] / hw[:, 1])
        resized = np.round(hw * scale[:, None])
        return self.normalized * np.concatenate([resized, resized], axis=1)

    def subset(self, index) -> 'Boxes':
        return Boxes(self.normalized[index], self.image_hw[index], self.labels[index])


def anchor_shapes(anchors: AnchorSettings) -> Dict[str, np.ndarray]:
    """One entry per anchor shape (level x scale x ratio): width, height, and
    the grid its centres lie on (stride and number of cells in y and x)."""
    rows = []
    height, width = anchors.input_size
    for level in range(anchors.min_level, anchors.max_level + 1):
        cells_y, cells_x = math.ceil(height / 2 ** level), math.ceil(width / 2 ** level)
        for i in range(anchors.num_scales):
            side = anchors.anchor_size * 2 ** level * 2 ** (i / anchors.num_scales)
            for ratio in anchors.aspect_ratios:
                rows.append((side * ratio ** 0.5, side / ratio ** 0.5, height / cells_y,
                             width / cells_x, cells_y, cells_x))
    table = np.array(rows, dtype=np.float64)
    return dict(zip(('width', 'height', 'stride_y', 'stride_x', 'cells_y', 'cells_x'),
                    table.T))


def _nearest_centre(centre, stride, cells):
    """Centre of the grid cell nearest `centre`: cells are centred on (k + 1/2) stride."""
    k = np.clip(np.floor(centre / stride), 0, cells - 1)
    return (k + 0.5) * stride


def _overlap(lo, hi, centre, size):
    """1-D overlap of [lo, hi] with the interval of `size` around `centre`."""
    return np.clip(np.minimum(hi, centre + size / 2) - np.maximum(lo, centre - size / 2), 0, None)


def best_ious(pixel_boxes: np.ndarray, anchors: AnchorSettings) -> np.ndarray:
    """Each box's best IoU with any anchor; pixel_boxes (N, 4) [ymin, xmin,
    ymax, xmax] in model-input pixels."""
    shapes = anchor_shapes(anchors)
    best = np.zeros(len(pixel_boxes))
    for start in range(0, len(pixel_boxes), BOXES_PER_CHUNK):
        ymin, xmin, ymax, xmax = (c[:, None] for c in
                                  pixel_boxes[start:start + BOXES_PER_CHUNK].T)
        cy = _nearest_centre((ymin + ymax) / 2, shapes['stride_y'], shapes['cells_y'])
        cx = _nearest_centre((xmin + xmax) / 2, shapes['stride_x'], shapes['cells_x'])
        inter = (_overlap(ymin, ymax, cy, shapes['height']) *
                 _overlap(xmin, xmax, cx, shapes['width']))
        union = (ymax - ymin) * (xmax - xmin) + shapes['height'] * shapes['width'] - inter
        best[start:start + BOXES_PER_CHUNK] = (inter / union).max(axis=1)
    return best


def elongation_limit(threshold: float) -> float:
    """The most a box's width/height may differ (as a factor) from an anchor's
    and still reach IoU `threshold` with an anchor of that ratio: the best IoU
    at a factor q, over every size and place, is 1 / (2 sqrt(q) - 1)."""
    return ((1 + threshold) / (2 * threshold)) ** 2


def uncovered_kinds(pixel_boxes: np.ndarray, best: np.ndarray,
                    anchors: AnchorSettings) -> np.ndarray:
    """Each box's kind from KINDS, or '' where its best IoU reaches the threshold."""
    t = anchors.match_threshold
    height = pixel_boxes[:, 2] - pixel_boxes[:, 0]
    width = pixel_boxes[:, 3] - pixel_boxes[:, 1]
    area = height * width
    sides = anchors.sides()
    ratios = np.array(anchors.aspect_ratios)
    mismatch = np.abs(np.log((width / height)[:, None] / ratios[None, :])).min(axis=1)
    kinds = np.full(len(pixel_boxes), '', dtype=object)
    uncovered = best < t
    kinds[uncovered] = 'between_anchors'
    kinds[uncovered & (mismatch > math.log(elongation_limit(t)))] = 'too_elongated'
    kinds[uncovered & (area > sides[-1] ** 2 / t)] = 'too_large'
    kinds[uncovered & (area < t * sides[0] ** 2)] = 'too_small'
    return kinds


def covered(boxes: Boxes, anchors: AnchorSettings) -> np.ndarray:
    """Whether each box has an anchor with IoU >= the matcher's threshold."""
    return best_ious(boxes.at_input(anchors.input_size), anchors) >= anchors.match_threshold


def by_class(is_covered: np.ndarray, labels: np.ndarray) -> Dict[int, Tuple[int, int]]:
    """{label: (boxes covered, boxes)}."""
    return {int(label): (int(np.sum(is_covered[labels == label])), int(np.sum(labels == label)))
            for label in np.unique(labels)}


def least_covered_class(is_covered: np.ndarray, labels: np.ndarray) -> Tuple[int, float]:
    """(label, share) of the class with the lowest share covered."""
    shares = {k: c / n for k, (c, n) in by_class(is_covered, labels).items()}
    label = min(shares, key=lambda k: (shares[k], k))
    return label, shares[label]


# --- measured suggestions ------------------------------------------------------

ANCHOR_SIZES = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 8.0)
EXTRA_RATIOS = (0.25, 0.33, 0.5, 2.0, 3.0, 4.0)
IMAGE_SCALES = (0.5, 0.75, 1.25, 1.5, 2.0)
LEVELS = range(3, 8)  # the flags' fpn_min_level / fpn_max_level range
SUGGESTION_SAMPLE = 20000  # boxes the candidates are measured on, at most


@dataclasses.dataclass(frozen=True)
class Suggestion:
    flag: str
    value: str  # as it would be typed
    share: float  # of all boxes covered with this one change
    least_class: int  # the class least covered with it,
    least_share: float  # and its share

    def text(self, class_names: Optional[Dict[int, str]] = None, classes: int = 1) -> str:
        """'--flag=value: 99.0%', with the least covered class when there are several."""
        text = f'--{self.flag}={self.value}: {percent(self.share)}'
        if classes > 1 and self.least_share < self.share:
            name = f'{self.least_class} {(class_names or {}).get(self.least_class, "")}'.strip()
            text += f' (least: {name} {percent(self.least_share)})'
        return text


def candidates(anchors: AnchorSettings) -> List[Tuple[str, str, AnchorSettings]]:
    """Single-flag changes to try: (flag, value as typed, the anchors it gives)."""
    change = lambda **kw: dataclasses.replace(anchors, **kw)
    found = [('anchor_size', f'{a:g}', change(anchor_size=a))
             for a in ANCHOR_SIZES if a != anchors.anchor_size]
    for ratio in EXTRA_RATIOS:
        if not any(math.isclose(ratio, r, rel_tol=0.02) for r in anchors.aspect_ratios):
            ratios = tuple(anchors.aspect_ratios) + (ratio,)
            found.append(('bbox_aspect_ratios', ','.join(f'{r:g}' for r in ratios),
                          change(aspect_ratios=ratios)))
    stride = 2 ** anchors.max_level
    seen = {anchors.input_size}
    for factor in IMAGE_SCALES:
        size = tuple(max(stride, int(round(s * factor / stride)) * stride)
                     for s in anchors.image_size)
        if size not in seen:
            seen.add(size)
            found.append(('image_size', f'{size[0]},{size[1]}', change(image_size=size)))
    for level in LEVELS:
        if level != anchors.min_level and level <= anchors.max_level:
            found.append(('fpn_min_level', str(level), change(min_level=level)))
        if (level != anchors.max_level and level >= anchors.min_level
                and min(anchors.image_size) >= 2 ** level):  # the flags' own limit
            found.append(('fpn_max_level', str(level), change(max_level=level)))
    return found


def sample(boxes: Boxes, limit: int = SUGGESTION_SAMPLE) -> Boxes:
    """At most `limit` boxes, evenly spaced through the set (deterministic)."""
    if len(boxes) <= limit:
        return boxes
    return boxes.subset(np.linspace(0, len(boxes) - 1, limit).astype(int))


def suggest(boxes: Boxes, anchors: AnchorSettings, count: int = 3
            ) -> Tuple[List[Suggestion], int]:
    """Up to `count` single-flag changes that cover most, the best value of
    each flag, each measured on (a sample of) the boxes; and the number of boxes
    measured on. Ranked by the share of the least covered class, then of all
    boxes: a change that covers one class at the cost of another is no cure.
    Only changes that beat the current anchors on that ranking are kept."""
    measured = sample(boxes)

    def rank(changed):
        hit = covered(measured, changed)
        label, least = least_covered_class(hit, measured.labels)
        return (least, float(np.mean(hit))), label

    now, _ = rank(anchors)
    best_of_flag = {}
    for flag, value, changed in candidates(anchors):
        key, label = rank(changed)
        if key > now and (flag not in best_of_flag or key > best_of_flag[flag][0]):
            best_of_flag[flag] = (key, Suggestion(flag, value, key[1], label, key[0]))
    ranked = sorted(best_of_flag.values(), key=lambda pair: pair[0], reverse=True)
    return [s for _, s in ranked[:count]], len(measured)


# --- the whole measure ---------------------------------------------------------

@dataclasses.dataclass
class Coverage:
    anchors: AnchorSettings
    labels: np.ndarray  # each box's label
    best: np.ndarray  # each box's best IoU
    kinds: np.ndarray  # each box's KINDS code, '' if covered
    sizes: np.ndarray  # (N, 2) width, height at the model input
    suggestions: List[Suggestion]
    measured_on: int  # boxes the suggestions were measured on

    @property
    def total(self) -> int:
        return len(self.best)

    @property
    def covered(self) -> int:
        return int(np.sum(self.kinds == ''))

    @property
    def share(self) -> float:
        return self.covered / self.total if self.total else 1.0

    def by_class(self) -> Dict[int, Tuple[int, int]]:
        return by_class(self.kinds == '', self.labels)

    def by_kind(self) -> Dict[str, int]:
        return {k: int(np.sum(self.kinds == k)) for k in KINDS if np.any(self.kinds == k)}

    def uncovered(self) -> np.ndarray:
        """Indices of the boxes not covered, in set order."""
        return np.flatnonzero(self.kinds != '')


def kind_definition(kind: str, anchors: AnchorSettings) -> str:
    """What a kind of uncovered box means with these anchors, in numbers."""
    t = anchors.match_threshold
    sides = anchors.sides()
    return {
        'too_small': f'area under {t:g} x the smallest anchor\'s, {sides[0]:.0f}x{sides[0]:.0f} px',
        'too_large': f'area over the largest anchor\'s, {sides[-1]:.0f}x{sides[-1]:.0f} px, / '
                     f'{t:g}',
        'too_elongated': f'width/height off every anchor ratio by more than '
                         f'{elongation_limit(t):.2f}x',
        'between_anchors': 'no anchor near enough in size and place',
    }[kind]


def kinds_text(by_kind: Dict[str, int]) -> str:
    return ', '.join(f'{n} {kind.replace("_", " ")}' for kind, n in by_kind.items())


def percent(share: float) -> str:
    """A share as a percentage that says 100% only when it is whole."""
    if share < 1 and round(100 * share, 1) == 100:
        return '99.9%'
    return f'{100 * share:.1f}%'.replace('100.0%', '100%')


def measure(boxes: Boxes, anchors: AnchorSettings, suggestions: bool = True) -> Coverage:
    """Coverage of `boxes`, the kind of each uncovered one, and (when some are
    not covered) the single-flag changes that would cover more."""
    pixels = boxes.at_input(anchors.input_size)
    best = best_ious(pixels, anchors)
    kinds = uncovered_kinds(pixels, best, anchors)
    sizes = np.stack([pixels[:, 3] - pixels[:, 1], pixels[:, 2] - pixels[:, 0]], axis=1)
    found, measured_on = [], 0
    if suggestions and np.any(kinds != ''):
        found, measured_on = suggest(boxes, anchors)
    return Coverage(anchors, boxes.labels, best, kinds, sizes, found, measured_on)
