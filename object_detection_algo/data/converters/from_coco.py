"""COCO instances JSON (pixel [x, y, width, height] boxes) to dataset_writer
entries. Category ids are remapped to 1..N in id order; the mapping is
written beside the label map. Crowd annotations keep their flag
(image/object/is_crowd), which training and COCO evaluation honour.

    coco/
      annotations/instances_train.json   --instances
      images/000000000009.jpg ...        --images_dir (each image's file_name in it)
"""

import collections
import json
import posixpath
from typing import Dict, List, Tuple

from object_detection_algo import io_utils
from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary

CATEGORY_MAP_FILE = 'coco_category_ids.csv'  # id,coco_id,name


def entries(instances_path: str, images_dir: str, summary: Summary
            ) -> Tuple[List[ImageEntry], List[str], Dict[int, int]]:
    """(entries, class names for ids 1..N, {coco category id: new id})."""
    import tensorflow as tf
    name = posixpath.basename(instances_path)
    try:
        with tf.io.gfile.GFile(instances_path) as f:
            data = json.load(f)
    except (tf.errors.NotFoundError, ValueError) as e:
        raise ConversionError(f'{instances_path}: cannot read the COCO JSON ({e})') from None
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise ConversionError(f'{instances_path}: no "{key}" list; is this an instances file?')
    categories = sorted(data['categories'], key=lambda c: c['id'])
    new_ids = {c['id']: i for i, c in enumerate(categories, 1)}
    names = [str(c['name']) for c in categories]
    by_image = collections.defaultdict(list)
    images = {img['id']: img for img in data['images']}
    for number, ann in enumerate(data['annotations']):
        origin = f'{name} annotations[{number}] (id {ann.get("id")})'
        if ann.get('image_id') not in images:
            summary.drop_box('unknown image_id', f'{origin}: image_id {ann.get("image_id")}')
            continue
        if ann.get('category_id') not in new_ids:
            summary.drop_box('unknown class', f'{origin}: category_id {ann.get("category_id")} '
                             'is not in "categories"')
            continue
        try:
            x, y, w, h = (float(v) for v in ann['bbox'])
        except (KeyError, TypeError, ValueError):
            summary.drop_box('bad bbox', f'{origin}: bbox {ann.get("bbox")!r} is not [x, y, w, h]')
            continue
        class_name = names[new_ids[ann['category_id']] - 1]
        by_image[ann['image_id']].append(Box(y, x, y + h, x + w, class_name, origin,
                                             crowd=bool(ann.get('iscrowd'))))
    found = []
    for image_id, img in sorted(images.items()):
        filename = img.get('file_name', '')
        found.append(ImageEntry(
            image_path=posixpath.join(images_dir, filename), filename=filename,
            origin=f'{name} image id {image_id}', boxes=by_image[image_id], normalized=False,
            source_id=str(image_id) if str(image_id).isdigit() else None))
    return found, names, new_ids


def write_category_map(path: str, names: List[str], new_ids: Dict[int, int]) -> None:
    """id,coco_id,name: how COCO's category ids became 1..N."""
    io_utils.write_csv(path, [['id', 'coco_id', 'name']] + [
        [new_id, coco_id, names[new_id - 1]]
        for coco_id, new_id in sorted(new_ids.items(), key=lambda kv: kv[1])])
