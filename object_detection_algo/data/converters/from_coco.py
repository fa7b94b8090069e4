"""COCO instances JSON (pixel [x, y, width, height] boxes) to dataset_writer
entries. Category ids are remapped to 1..N in id order; the mapping is
written beside the label map. Crowd annotations keep their flag
(image/object/is_crowd), which training and COCO evaluation honour.

One instances file, split by --val_fraction:

    coco/
      annotations/instances_train.json   --instances
      images/000000000009.jpg ...        --images_dir (each image's file_name in it)

Or train and val as COCO ships them, written to train-* and val-* as they are:

    coco/
      annotations/instances_train2017.json   --instances
      annotations/instances_val2017.json     --val_instances
      train2017/000000000009.jpg ...         --images_dir
      val2017/000000000139.jpg ...           --val_images_dir

With two files, the ids 1..N come from the union of their categories (a
category of one file only still gets its id), and image ids repeated across
the files are given up for source_ids 1..N.
"""

import collections
import json
import posixpath
from typing import Dict, List, Optional, Sequence, Tuple

from object_detection_algo import io_utils
from object_detection_algo.data.dataset_writer import Box, ConversionError, ImageEntry, Summary

CATEGORY_MAP_FILE = 'coco_category_ids.csv'  # id,coco_id,name


def _load(instances_path: str) -> dict:
    import tensorflow as tf
    try:
        with tf.io.gfile.GFile(instances_path) as f:
            data = json.load(f)
    except (tf.errors.NotFoundError, ValueError) as e:
        raise ConversionError(f'{instances_path}: cannot read the COCO JSON ({e})') from None
    for key in ('images', 'annotations', 'categories'):
        if not isinstance(data.get(key), list):
            raise ConversionError(f'{instances_path}: no "{key}" list; is this an instances file?')
    return data


def _category_union(files: Dict[str, dict]) -> Dict[int, str]:
    """{coco id: name} over all files; an id or a name that means different
    things in two files cannot be merged."""
    names, seen_in, ids_of_name = {}, {}, {}
    for path, data in files.items():
        for category in data['categories']:
            coco_id, name = category['id'], str(category['name'])
            if coco_id in names and names[coco_id] != name:
                where = 'this file' if seen_in[coco_id] == path else seen_in[coco_id]
                raise ConversionError(
                    f'{path}: category id {coco_id} is {name!r}, but {where} calls it '
                    f'{names[coco_id]!r}; the files must share their category ids.')
            if ids_of_name.setdefault(name, (coco_id, path))[0] != coco_id:
                first_id, first_path = ids_of_name[name]
                if first_path != path:
                    raise ConversionError(
                        f'{path}: category {name!r} has id {coco_id}, but id {first_id} in '
                        f'{first_path}; the files must share their category ids.')
            names[coco_id] = name
            seen_in.setdefault(coco_id, path)
    return names


def _file_entries(data: dict, instances_path: str, images_dir: str, names: List[str],
                  new_ids: Dict[int, int], summary: Summary) -> List[ImageEntry]:
    """The entries of one instances file; bad annotations are dropped into the summary."""
    name = posixpath.basename(instances_path)
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
    return found


def _note_union(files: Dict[str, dict], names: Dict[int, str], summary: Summary) -> None:
    """Says where the ids came from, and which categories only one file has."""
    per_file = [f'{posixpath.basename(p)} ({len(d["categories"])})' for p, d in files.items()]
    note = (f'COCO categories: the union of {" and ".join(per_file)}, {len(names)} in all, '
            f'ids 1..{len(names)} in COCO id order')
    for path, data in files.items():
        missing = sorted(set(names) - {c['id'] for c in data['categories']})
        if missing:
            note += (f'; not in {posixpath.basename(path)}: '
                     + ', '.join(names[i] for i in missing))
    summary.notes.append(note + '.')


def _unique_source_ids(found: List[ImageEntry], paths: Sequence[str], summary: Summary) -> None:
    """Files that number their images alike (each from 0, as many exporters
    do) cannot keep their image ids as source_ids: the writer numbers them 1..N."""
    ids = [e.source_id for e in found if e.source_id is not None]
    if len(set(ids)) == len(ids):
        return
    for entry in found:
        entry.source_id = None
    summary.notes.append(f'image ids repeat across {" and ".join(paths)}: source_ids are '
                         f'1..{len(found)} in file-name order, not the COCO image ids.')


def entries(instances_path: str, images_dir: str, summary: Summary,
            val_instances: Optional[str] = None, val_images_dir: Optional[str] = None
            ) -> Tuple[List[ImageEntry], List[str], Dict[int, int]]:
    """(entries, class names for ids 1..N, {coco category id: new id}). With
    val_instances, its images are the val split and the others the train split."""
    splits = [(instances_path, images_dir, 'train' if val_instances else None)]
    if val_instances:
        splits.append((val_instances, val_images_dir, 'val'))
    files = {path: _load(path) for path, _, _ in splits}
    if len(files) < len(splits):
        raise ConversionError(f'--instances and --val_instances are the same file '
                              f'({instances_path}): give the validation instances file.')
    categories = _category_union(files)
    new_ids = {coco_id: i for i, coco_id in enumerate(sorted(categories), 1)}
    names = [categories[coco_id] for coco_id in sorted(categories)]
    found = []
    for path, folder, split in splits:
        for entry in _file_entries(files[path], path, folder, names, new_ids, summary):
            entry.split = split
            found.append(entry)
    if val_instances:
        _note_union(files, categories, summary)
        _unique_source_ids(found, list(files), summary)
    return found, names, new_ids


def write_category_map(path: str, names: List[str], new_ids: Dict[int, int]) -> None:
    """id,coco_id,name: how COCO's category ids became 1..N."""
    io_utils.write_csv(path, [['id', 'coco_id', 'name']] + [
        [new_id, coco_id, names[new_id - 1]]
        for coco_id, new_id in sorted(new_ids.items(), key=lambda kv: kv[1])])
