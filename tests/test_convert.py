"""The converters, each driven through the real `convert` command on small
generated datasets: round trips back to the source boxes (to 1e-6), class
names and the label map, the seeded split, byte-identical reruns, and bad
inputs reported by file and line."""

import json
import os
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import tensorflow as tf

from object_detection_algo import __main__ as cli_main
from object_detection_algo.data import label_map, record_checks, synthetic

NAMES = ('circle', 'square', 'triangle')  # synthetic's labels 1..3


@pytest.fixture(scope='module')
def source(tmp_path_factory):
    """Six images of three sizes (one PNG, one without boxes) with pixel boxes
    [ymin, xmin, ymax, xmax] and class names: the truth every format is made from."""
    root = tmp_path_factory.mktemp('source')
    rng = np.random.RandomState(5)
    images = []
    for i, (height, width) in enumerate([(96, 128), (128, 96), (80, 80)] * 2):
        picture, boxes, labels = synthetic.draw_image(rng, size=max(height, width))
        scale_y, scale_x = height / picture.height, width / picture.width
        picture = picture.resize((width, height))
        fmt = 'png' if i == 4 else 'jpeg'
        filename = f'img_{i}.{"png" if fmt == "png" else "jpg"}'
        (root / filename).write_bytes(synthetic.encode(picture, fmt))
        boxes = [] if i == 3 else [(y0 * scale_y + 0.25, x0 * scale_x + 0.5, y1 * scale_y,
                                    x1 * scale_x) for y0, x0, y1, x1 in boxes]
        names = [] if i == 3 else [NAMES[label - 1] for label in labels]
        images.append({'filename': filename, 'height': height, 'width': width,
                       'boxes': boxes, 'names': names, 'format': fmt})
    return root, images


def convert(*args):
    """Runs `python -m object_detection_algo convert ...` in this process."""
    return cli_main.main(['convert', *map(str, args)])


def read_output(out_dir):
    """{filename: parsed record fields} over all train-*, val-* and test-* files."""
    found = {}
    for split in ('train', 'val', 'test'):
        for path in sorted(tf.io.gfile.glob(f'{out_dir}/{split}-*.tfrecord')):
            for raw in tf.data.TFRecordDataset(path):
                f = tf.train.Example.FromString(raw.numpy()).features.feature
                record = {
                    'split': split,
                    'boxes': list(zip(*(f[k].float_list.value for k in record_checks.BOX_KEYS))),
                    'labels': list(f['image/object/class/label'].int64_list.value),
                    'text': [t.decode() for t in f['image/object/class/text'].bytes_list.value],
                    'format': f['image/format'].bytes_list.value[0].decode(),
                    'size': (f['image/height'].int64_list.value[0],
                             f['image/width'].int64_list.value[0]),
                    'source_id': f['image/source_id'].bytes_list.value[0].decode(),
                    'encoded': f['image/encoded'].bytes_list.value[0],
                }
                found[f['image/filename'].bytes_list.value[0].decode()] = record
    return found


def check_round_trip(source, out_dir, class_names):
    root, images = source
    records = read_output(out_dir)
    assert set(records) == {image['filename'] for image in images}
    names = label_map.read(os.path.join(out_dir, 'label_map.csv'))
    assert list(names.values()) == list(class_names)
    for image in images:
        record = records[image['filename']]
        h, w = image['height'], image['width']
        expected = [(y0 / h, x0 / w, y1 / h, x1 / w) for y0, x0, y1, x1 in image['boxes']]
        assert len(record['boxes']) == len(expected)
        for got, want in zip(record['boxes'], expected):
            assert got == pytest.approx(want, abs=1e-6), image['filename']
        assert [names[label] for label in record['labels']] == image['names']
        assert record['text'] == image['names']
        assert record['size'] == (h, w) and record['format'] == image['format']
        assert record['encoded'] == (root / image['filename']).read_bytes()  # not re-encoded
    assert len({r['source_id'] for r in records.values()}) == len(images)
    report = record_checks.validate(tf.io.gfile.glob(f'{out_dir}/*.tfrecord'),
                                 record_checks.CheckSettings(len(class_names), (128, 128)))
    assert report.ok, report.summary()
    return records


def write_voc(source, folder, objects=None):
    root, images = source
    folder.mkdir()
    for image in images:
        annotation = ET.Element('annotation')
        ET.SubElement(annotation, 'filename').text = image['filename']
        size = ET.SubElement(annotation, 'size')
        ET.SubElement(size, 'width').text = str(image['width'])
        ET.SubElement(size, 'height').text = str(image['height'])
        for (y0, x0, y1, x1), name in (objects or {}).get(image['filename'],
                                                         zip(image['boxes'], image['names'])):
            obj = ET.SubElement(annotation, 'object')
            ET.SubElement(obj, 'name').text = name
            box = ET.SubElement(obj, 'bndbox')
            for key, value in (('xmin', x0), ('ymin', y0), ('xmax', x1), ('ymax', y1)):
                ET.SubElement(box, key).text = repr(value)
        ET.indent(annotation)
        stem = image['filename'].rsplit('.', 1)[0]
        ET.ElementTree(annotation).write(folder / f'{stem}.xml')
    return folder


def test_voc_round_trip_and_split_lists(source, tmp_path, capsys):
    root, images = source
    annotations = write_voc(source, tmp_path / 'xml')
    (tmp_path / 'train.txt').write_text('img_0\nimg_1\nimg_2\nimg_3\n')
    (tmp_path / 'val.txt').write_text('img_4\nimg_5\n')
    out = tmp_path / 'out'
    assert convert('voc', f'--annotations_dir={annotations}', f'--images_dir={root}',
                   f'--train_list={tmp_path / "train.txt"}', f'--val_list={tmp_path / "val.txt"}',
                   f'--out={out}', '--num_shards=3') == 0
    printed = capsys.readouterr().out
    records = check_round_trip(source, out, sorted(NAMES))
    assert {f: r['split'] for f, r in records.items()} == {
        'img_0.jpg': 'train', 'img_1.jpg': 'train', 'img_2.jpg': 'train', 'img_3.jpg': 'train',
        'img_4.png': 'val', 'img_5.jpg': 'val'}
    assert len(tf.io.gfile.glob(f'{out}/train-*-of-00003.tfrecord')) == 3
    assert len(tf.io.gfile.glob(f'{out}/val-*-of-00002.tfrecord')) == 2  # no more shards than records
    assert 'Wrote 4 train records, 2 val records' in printed
    assert 'Dropped records: 0.' in printed and 'Dropped boxes: 0.' in printed


def write_coco(path, images, coco_ids, first_id=100):
    """An instances JSON of `images` (ids from first_id) with the categories
    {name: coco id}; boxes of other classes are left out."""
    annotations = []
    for image_id, image in enumerate(images, first_id):
        for (y0, x0, y1, x1), name in zip(image['boxes'], image['names']):
            if name in coco_ids:
                annotations.append({'id': len(annotations) + 1, 'image_id': image_id,
                                    'category_id': coco_ids[name],
                                    'bbox': [x0, y0, x1 - x0, y1 - y0],
                                    'iscrowd': 0, 'area': (x1 - x0) * (y1 - y0)})
    instances = {'images': [{'id': i, 'file_name': image['filename'], 'height': image['height'],
                             'width': image['width']} for i, image in enumerate(images, first_id)],
                 'annotations': annotations,
                 'categories': [{'id': i, 'name': n} for n, i in coco_ids.items()]}
    path.write_text(json.dumps(instances))
    return path


COCO_IDS = {'square': 9, 'circle': 12, 'triangle': 2}  # sparse and out of name order


def test_coco_round_trip_remaps_category_ids(source, tmp_path, capsys):
    root, images = source
    write_coco(tmp_path / 'instances.json', images, COCO_IDS)
    out = tmp_path / 'out'
    assert convert('coco', f'--instances={tmp_path / "instances.json"}', f'--images_dir={root}',
                   f'--out={out}', '--val_fraction=0.5', '--seed=3') == 0
    # Ids 1..N in COCO id order: triangle (2), square (9), circle (12).
    records = check_round_trip(source, out, ['triangle', 'square', 'circle'])
    assert (out / 'coco_category_ids.csv').read_text() == (
        'id,coco_id,name\n1,2,triangle\n2,9,square\n3,12,circle\n')
    assert sorted(r['source_id'] for r in records.values()) == [str(i) for i in range(100, 106)]
    assert sorted(r['split'] for r in records.values()) == ['train'] * 3 + ['val'] * 3
    assert 'COCO category ids -> 1..3' in capsys.readouterr().out


def copy_images(source, folder, indices):
    root, images = source
    folder.mkdir(parents=True)
    for i in indices:
        shutil.copy(root / images[i]['filename'], folder)
    return folder


@pytest.mark.parametrize('first_val_id', [200, 0])
def test_coco_train_and_val_files(source, tmp_path, capsys, first_val_id):
    """COCO's own layout: train and val JSONs and folders become train-* and val-*.
    Triangles are only in val: the ids still come from the union, in COCO id
    order, so triangle (COCO 2) is 1 in both splits. Val image ids from 0, as
    exporters number each file, repeat the train ones: source_ids become 1..N."""
    root, images = source
    train = [dict(image, boxes=[b for b, n in zip(image['boxes'], image['names'])
                                if n != 'triangle'],
                  names=[n for n in image['names'] if n != 'triangle']) for image in images[:4]]
    val = images[4:]
    assert 'triangle' in val[0]['names'] and not any('triangle' in i['names'] for i in train)
    write_coco(tmp_path / 'instances_train.json', train,
               {'square': 9, 'circle': 12}, first_id=0)
    write_coco(tmp_path / 'instances_val.json', val, COCO_IDS, first_id=first_val_id)
    out = tmp_path / 'out'
    assert convert('coco', f'--instances={tmp_path / "instances_train.json"}',
                   f'--images_dir={copy_images(source, tmp_path / "train2017", range(4))}',
                   f'--val_instances={tmp_path / "instances_val.json"}',
                   f'--val_images_dir={copy_images(source, tmp_path / "val2017", [4, 5])}',
                   f'--out={out}') == 0
    printed = capsys.readouterr().out
    records = check_round_trip((root, train + val), out, ['triangle', 'square', 'circle'])
    assert {f: r['split'] for f, r in records.items()} == {
        'img_0.jpg': 'train', 'img_1.jpg': 'train', 'img_2.jpg': 'train', 'img_3.jpg': 'train',
        'img_4.png': 'val', 'img_5.jpg': 'val'}
    assert records['img_4.png']['labels'] == [2, 1]  # square, triangle
    assert records['img_0.jpg']['labels'] == [3, 2]  # circle, square (its triangle is not in train)
    assert (out / 'coco_category_ids.csv').read_text() == (
        'id,coco_id,name\n1,2,triangle\n2,9,square\n3,12,circle\n')
    assert 'Wrote 4 train records, 2 val records (6 images, 10 boxes)' in printed
    assert ('Note: COCO categories: the union of instances_train.json (2) and '
            'instances_val.json (3), 3 in all, ids 1..3 in COCO id order; not in '
            'instances_train.json: triangle.') in printed
    source_ids = [records[f'img_{i}.{"png" if i == 4 else "jpg"}']['source_id'] for i in range(6)]
    if first_val_id:
        assert source_ids == ['0', '1', '2', '3', '200', '201']  # the COCO image ids
    else:
        assert source_ids == ['1', '2', '3', '4', '5', '6']
        assert 'source_ids are 1..6 in file-name order, not the COCO image ids' in printed


def test_coco_train_and_val_files_refused(source, tmp_path, capsys):
    root, images = source
    train = write_coco(tmp_path / 'train.json', images[:4], COCO_IDS)
    val = write_coco(tmp_path / 'val.json', images[4:], {'circle': 9, 'square': 12}, 200)
    common = [f'--instances={train}', f'--images_dir={root}', f'--out={tmp_path / "out"}']
    assert convert('coco', *common, '--val_fraction=1') == 2
    assert ('A validation set of its own is given with --val_instances (coco)'
            in capsys.readouterr().err)
    assert convert('coco', *common, f'--val_instances={val}', f'--val_images_dir={root}',
                   '--val_fraction=0.2') == 2
    assert ('--val_fraction and --val_instances both given: --val_instances gives the '
            'validation set') in capsys.readouterr().err
    assert convert('coco', *common, f'--val_instances={val}') == 2
    assert '--val_instances and --val_images_dir go together' in capsys.readouterr().err
    assert convert('coco', *common, f'--val_instances={val}', f'--val_images_dir={root}') == 2
    assert (f"{val}: category id 9 is 'circle', but {train} calls it 'square'; the files must "
            'share their category ids.') in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_coco_crowd_boxes_keep_their_flag(source, tmp_path, capsys):
    """An iscrowd=1 box is written with image/object/is_crowd=1, and the job's
    decoder hands it to training and evaluation as a crowd box."""
    from object_detection_algo.adapters.record_decoder import RecordDecoder
    root, images = source
    image = images[0]
    (y0, x0, y1, x1), name = image['boxes'][0], image['names'][0]
    instances = {'images': [{'id': 1, 'file_name': image['filename'], 'height': image['height'],
                             'width': image['width']}],
                 'annotations': [{'id': 1, 'image_id': 1, 'category_id': 1, 'iscrowd': 0,
                                  'bbox': [x0, y0, x1 - x0, y1 - y0]},
                                 {'id': 2, 'image_id': 1, 'category_id': 1, 'iscrowd': 1,
                                  'bbox': [0, 0, 40, 30], 'segmentation': {'counts': [], 'size': [
                                      image['height'], image['width']]}}],
                 'categories': [{'id': 1, 'name': name}]}
    (tmp_path / 'instances.json').write_text(json.dumps(instances))
    out = tmp_path / 'out'
    assert convert('coco', f'--instances={tmp_path / "instances.json"}', f'--images_dir={root}',
                   f'--out={out}', '--val_fraction=0') == 0
    assert 'Crowd boxes (iscrowd=1) among them: 1, written with image/object/is_crowd=1.' in \
        capsys.readouterr().out
    [path] = tf.io.gfile.glob(f'{out}/train-*.tfrecord')
    raw = next(iter(tf.data.TFRecordDataset(path)))
    decoded = RecordDecoder().decode(raw)
    assert decoded['groundtruth_is_crowd'].numpy().tolist() == [False, True]
    assert decoded['groundtruth_boxes'].numpy()[1].tolist() == pytest.approx(
        [0, 0, 30 / image['height'], 40 / image['width']], abs=1e-6)


def yolo_lines(image):
    """`class cx cy w h` per box, classes from 0 in NAMES order."""
    h, w = image['height'], image['width']
    return ''.join(f'{NAMES.index(name)} {(x0 + x1) / 2 / w!r} {(y0 + y1) / 2 / h!r} '
                   f'{(x1 - x0) / w!r} {(y1 - y0) / h!r}\n'
                   for (y0, x0, y1, x1), name in zip(image['boxes'], image['names']))


def write_yolo(source, folder):
    """<stem>.txt per image with boxes (none for the negative, as YOLO tools do) and obj.names."""
    root, images = source
    folder.mkdir()
    for image in images:
        if image['boxes']:
            stem = image['filename'].rsplit('.', 1)[0]
            (folder / f'{stem}.txt').write_text(yolo_lines(image))
    (folder / 'obj.names').write_text('\n'.join(NAMES) + '\n')
    return folder


def write_ultralytics(source, folder, splits):
    """Ultralytics' layout, images/<split>/ and labels/<split>/, of {split: image indices}."""
    root, images = source
    for split, indices in splits.items():
        copy_images(source, folder / 'images' / split, indices)
        (folder / 'labels' / split).mkdir(parents=True)
        for i in indices:
            if images[i]['boxes']:
                stem = images[i]['filename'].rsplit('.', 1)[0]
                (folder / 'labels' / split / f'{stem}.txt').write_text(yolo_lines(images[i]))
    return folder


def test_yolo_round_trip(source, tmp_path):
    root, images = source
    labels_dir = write_yolo(source, tmp_path / 'labels')
    out = tmp_path / 'out'
    assert convert('yolo', f'--images_dir={root}', f'--labels_dir={labels_dir}',
                   f'--names={labels_dir / "obj.names"}', f'--out={out}') == 0
    check_round_trip(source, out, NAMES)


def test_yolo_data_yaml_with_names_dict(source, tmp_path, capsys):
    """data.yaml beside images/ and labels/, `path: .`, names as a dict: train-*
    and val-* as the folders say, class k as label k+1. The same folders given
    by flags convert to the same bytes."""
    dataset = write_ultralytics(source, tmp_path / 'dataset', {'train': [0, 1, 2, 3],
                                                               'val': [4, 5]})
    (dataset / 'data.yaml').write_text('path: .\ntrain: images/train\nval: images/val\n'
                                       'names:\n  0: circle\n  1: square\n  2: triangle\n')
    out = tmp_path / 'out'
    assert convert('yolo', f'--data={dataset / "data.yaml"}', f'--out={out}') == 0
    printed = capsys.readouterr().out
    records = check_round_trip(source, out, NAMES)
    assert (out / 'label_map.csv').read_text() == '1,circle\n2,square\n3,triangle\n'
    assert records['img_0.jpg']['labels'] == [1, 3, 2]  # YOLO 0, 2, 1
    assert {f: r['split'] for f, r in records.items()} == {
        'img_0.jpg': 'train', 'img_1.jpg': 'train', 'img_2.jpg': 'train', 'img_3.jpg': 'train',
        'img_4.png': 'val', 'img_5.jpg': 'val'}
    assert 'Wrote 4 train records, 2 val records (6 images, 13 boxes)' in printed
    assert f'dataset folder {dataset}; train: 4 images; val: 2 images' in printed

    (tmp_path / 'obj.names').write_text('\n'.join(NAMES) + '\n')
    by_flags = tmp_path / 'by_flags'
    assert convert('yolo', f'--images_dir={dataset}/images/train',
                   f'--labels_dir={dataset}/labels/train', f'--val_images_dir={dataset}/images/val',
                   f'--val_labels_dir={dataset}/labels/val', f'--names={tmp_path / "obj.names"}',
                   f'--out={by_flags}') == 0
    for path in sorted(out.glob('*.tfrecord')) + [out / 'label_map.csv']:
        assert (by_flags / path.name).read_bytes() == path.read_bytes(), path.name


def test_yolo_data_yaml_with_names_list_and_lists(source, tmp_path, capsys):
    """The YAML elsewhere with a relative `path`, names as a list, train as two
    folders, val as a .txt list of images, and a test folder: written to test-*."""
    dataset = write_ultralytics(source, tmp_path / 'yolo', {
        'train_a': [0, 1], 'train_b': [2, 3], 'val': [4], 'test': [5]})
    (dataset / 'val.txt').write_text('./images/val/img_4.png\n')
    (tmp_path / 'configs').mkdir()
    (tmp_path / 'configs' / 'data.yaml').write_text(
        'path: ../yolo\ntrain: [images/train_a, images/train_b]\nval: val.txt\n'
        'test: images/test\nnames: [circle, square, triangle]\n')
    out = tmp_path / 'out'
    assert convert('yolo', f'--data={tmp_path / "configs" / "data.yaml"}', f'--out={out}') == 0
    assert 'Wrote 4 train records, 1 val records, 1 test records' in capsys.readouterr().out
    records = check_round_trip(source, out, NAMES)
    assert [records[f'img_{i}.jpg']['split'] for i in (0, 1, 2, 3, 5)] == ['train'] * 4 + ['test']
    assert records['img_4.png']['split'] == 'val'


def test_yolo_data_yaml_errors_name_the_file(source, tmp_path, capsys):
    dataset = write_ultralytics(source, tmp_path / 'dataset', {'train': [0, 1], 'val': [4]})
    yaml_path = dataset / 'data.yaml'

    def refused(text, *flags):
        yaml_path.write_text(text)
        assert convert('yolo', f'--data={yaml_path}', f'--out={tmp_path / "out"}', *flags) == 2
        return capsys.readouterr().err

    assert f'{yaml_path}: no val. A data.yaml needs train and val' in refused(
        'train: images/train\nnames: [circle]\n')
    assert (f'{yaml_path}: val: images/valid is {dataset}/images/valid, which does not exist; '
            f'fix `val` or `path` (the dataset folder, from the folder of the YAML file: '
            f'{dataset})') in refused(
        'train: images/train\nval: images/valid\nnames: [circle, square, triangle]\n')
    assert f'{yaml_path}: `names` has 2 classes but not index 1; give every index 0..1 a name' \
        in refused('path: .\ntrain: images/train\nval: images/val\n'
                   'names: {0: circle, 2: triangle}\n')
    (dataset / 'labels' / 'train' / 'img_0.txt').write_text(
        '0 0.5 0.5 0.2 0.2\n5 0.5 0.5 0.1 0.1\n')
    assert (f'{yaml_path}: `names` covers classes 0..2, but labels/train/img_0.txt line 2 uses '
            'class index 5 (1 box(es) use classes past the names); add the missing names to '
            '`names` or fix the labels.') in refused(
        'train: images/train\nval: images/val\nnames: [circle, square, triangle]\n')
    assert '--val_fraction and --data both given' in refused(
        'train: images/train\nval: images/val\nnames: [circle]\n', '--val_fraction=0.1')
    assert not (tmp_path / 'out').exists()


def test_from_and_to_gs(source, gcs, tmp_path, capsys):
    """Images, annotations and output in a bucket, through TensorFlow's own gs://
    filesystem (the test emulator behind its TLS proxy, tests/gcs_harness.py);
    then `validate` reads the records from gs://."""
    root, images = source
    gcs.bucket('convert')
    gcs.upload_dir(str(root), 'convert', 'images')
    gcs.upload_dir(str(write_voc(source, tmp_path / 'xml')), 'convert', 'voc')
    gcs.upload_dir(str(write_yolo(source, tmp_path / 'labels')), 'convert', 'yolo')
    assert convert('voc', '--annotations_dir=gs://convert/voc', '--images_dir=gs://convert/images',
                   '--out=gs://convert/out_voc', '--num_shards=2') == 0
    check_round_trip(source, 'gs://convert/out_voc', sorted(NAMES))
    assert convert('yolo', '--images_dir=gs://convert/images', '--labels_dir=gs://convert/yolo',
                   '--names=gs://convert/yolo/obj.names', '--out=gs://convert/out_yolo') == 0
    check_round_trip(source, 'gs://convert/out_yolo', NAMES)
    capsys.readouterr()
    assert cli_main.main(['validate', '--data_path=gs://convert/out_voc/*.tfrecord',
                          '--num_classes=3', '--image_size=128,128']) == 0
    assert 'Checked 6 records in 3 file(s)' in capsys.readouterr().out
    assert 'out_voc/conversion_report.json' in gcs.objects('convert', 'out_voc/')


@pytest.mark.parametrize('normalized', [False, True])
def test_csv_round_trip_with_column_order(source, tmp_path, normalized):
    root, images = source
    rows = ['name,cell_type,x_min,x_max,y_min,y_max,comment']
    for image in images:
        h, w = (image['height'], image['width']) if normalized else (1, 1)
        for (y0, x0, y1, x1), name in zip(image['boxes'], image['names']):
            rows.append(f'{image["filename"]},{name},{x0 / w!r},{x1 / w!r},{y0 / h!r},{y1 / h!r},ok')
        if not image['boxes']:
            rows.append(f'{image["filename"]},,,,,,no boxes')
    (tmp_path / 'boxes.csv').write_text('\n'.join(rows) + '\n')
    (tmp_path / 'names.txt').write_text('triangle\ncircle\nsquare\n')
    out = tmp_path / 'out'
    assert convert('csv', f'--csv={tmp_path / "boxes.csv"}', f'--images_dir={root}',
                   '--columns=filename,label,xmin,xmax,ymin,ymax,-',
                   f'--class_names={tmp_path / "names.txt"}', f'--out={out}',
                   *(['--normalized'] if normalized else [])) == 0
    check_round_trip(source, out, ['triangle', 'circle', 'square'])


def test_same_input_same_bytes_and_seeded_split(source, tmp_path):
    root, _ = source
    annotations = write_voc(source, tmp_path / 'xml')

    def run(name, seed):
        out = tmp_path / name
        assert convert('voc', f'--annotations_dir={annotations}', f'--images_dir={root}',
                       f'--out={out}', f'--seed={seed}', '--val_fraction=0.5') == 0
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())
                if p.name != 'conversion_report.json'}  # that one names the folder

    assert run('a', 7) == run('b', 7)
    validation_sets = set()
    for seed in (8, 9, 10):
        run(f'seed{seed}', seed)
        validation_sets.add(frozenset(f for f, r in read_output(tmp_path / f'seed{seed}').items()
                                      if r['split'] == 'val'))
    assert len(validation_sets) > 1  # the seed picks the split


def test_bad_inputs_are_reported_by_file_and_line(source, tmp_path, capsys):
    root, images = source
    objects = {
        'img_0.jpg': [((10, 10, 50, 50), 'circle'), ((10, 10, 50, 200), 'square'),
                      ((5, 5, 30, 30), 'hexagon'), ((20, 20, 20, 20), 'circle')],
        'img_1.jpg': [((10, 10, 40, 40), 'circle')],
    }
    annotations = write_voc(source, tmp_path / 'xml', objects)
    (annotations / 'img_1.xml').write_text(
        (annotations / 'img_1.xml').read_text().replace('img_1.jpg', 'gone.jpg'))
    (annotations / 'broken.xml').write_text('<annotation><filename>x.jpg</filename>')
    (tmp_path / 'names.txt').write_text('\n'.join(NAMES) + '\n')
    out = tmp_path / 'out'
    assert convert('voc', f'--annotations_dir={annotations}', f'--images_dir={root}',
                   f'--class_names={tmp_path / "names.txt"}', f'--out={out}') == 0
    printed = capsys.readouterr().out
    assert 'Wrote 4 train records, 1 val records (5 images, ' in printed
    assert 'Dropped records: 2:' in printed
    assert '1 bad annotation: broken.xml: not valid XML' in printed
    assert f'1 missing image: img_1.xml: {root}/gone.jpg not found' in printed
    assert 'Dropped boxes: 3:' in printed
    # write_voc indents: the <object> elements start on lines 7, 16, 25, 34 of img_0.xml.
    assert ('1 box outside the image: img_0.xml line 16 (object 2) (xmin=10, ymin=10, '
            'xmax=200, ymax=50; pixels, image 128x96)') in printed
    assert ("1 unknown class: img_0.xml line 25 (object 3): class 'hexagon' is not in the "
            'class names (circle, square, triangle)') in printed
    assert '1 zero-area box: img_0.xml line 34 (object 4)' in printed
    report = json.loads((out / 'conversion_report.json').read_text())
    assert report['records_written'] == {'train': 4, 'val': 1}
    assert report['boxes_dropped']['unknown class']['count'] == 1
    assert read_output(out)['img_0.jpg']['text'] == ['circle']


def test_yolo_and_csv_bad_lines(source, tmp_path, capsys):
    root, images = source
    (tmp_path / 'labels').mkdir()
    (tmp_path / 'labels' / 'img_0.txt').write_text('0 0.5 0.5 0.2 0.2\n7 0.5 0.5 0.2 0.2\n'
                                                    '1 0.5 0.5\n2 0.95 0.5 0.2 0.2\n')
    (tmp_path / 'obj.names').write_text('\n'.join(NAMES) + '\n')
    assert convert('yolo', f'--images_dir={root}', f'--labels_dir={tmp_path / "labels"}',
                   f'--names={tmp_path / "obj.names"}', f'--out={tmp_path / "y"}') == 0
    printed = capsys.readouterr().out
    assert "1 unknown class: img_0.txt line 2: class 'index 7' is not in the class names" in printed
    assert "1 bad line: img_0.txt line 3: '1 0.5 0.5' is not \"class cx cy w h\"" in printed
    assert ('1 box outside the image: img_0.txt line 4 (xmin=0.85, ymin=0.4, xmax=1.05, '
            'ymax=0.6; normalized)') in printed

    (tmp_path / 'b.csv').write_text('img_0.jpg,circle,1,2,30,40\nnothere.jpg,circle,1,2,3,4\n'
                                    'img_1.jpg,circle,1,2,x,4\n')
    assert convert('csv', f'--csv={tmp_path / "b.csv"}', f'--images_dir={root}',
                   f'--out={tmp_path / "c"}') == 0
    printed = capsys.readouterr().out
    assert f'1 missing image: b.csv line 2: {root}/nothere.jpg not found' in printed
    assert "1 bad row: b.csv line 3: box ['2', '1', '4', 'x'] is not four numbers" in printed
    assert 'Wrote 1 train records, 0 val records (1 images, 1 boxes)' in printed
