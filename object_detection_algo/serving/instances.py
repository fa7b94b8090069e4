"""Where `predict` gets its images: image files, globs and folders, JSON
instances in AI Platform's form, or TFRecords. Each source streams
`Instance`s; an input that cannot be used becomes an Instance with an error
naming its file or line, so the others are still answered."""

import base64
import binascii
import dataclasses
import json
import posixpath
from typing import Iterator, List, Optional, Sequence

import tensorflow as tf

from object_detection_algo.data import records
from object_detection_algo.errors import UsageError

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp', '.webp')


class InputError(UsageError):
    """An input that names nothing to predict on (empty glob, missing file)."""


@dataclasses.dataclass
class Instance:
    key: str
    image: Optional[bytes]  # None when error is set
    origin: str             # file, or file:line, for messages
    error: Optional[str] = None


def _read_bytes(path: str) -> bytes:
    with tf.io.gfile.GFile(path, 'rb') as f:
        return f.read()


def _must_exist(path: str) -> None:
    if not tf.io.gfile.exists(path):
        raise InputError(f'{path}: no such file.')


def _expand(path: str) -> List[str]:
    """A folder's images, a glob's matches, or the file itself."""
    if tf.io.gfile.isdir(path):
        names = sorted(n for n in tf.io.gfile.listdir(path)
                       if n.lower().endswith(IMAGE_EXTENSIONS))
        if not names:
            raise InputError(f'{path}: the folder holds no images ({", ".join(IMAGE_EXTENSIONS)}).')
        return [posixpath.join(path, n) for n in names]
    if any(c in path for c in '*?['):
        matches = sorted(m for m in tf.io.gfile.glob(path) if not tf.io.gfile.isdir(m))
        if not matches:
            raise InputError(f'{path} matches no files.')
        return matches
    _must_exist(path)
    return [path]


def from_image_paths(paths: Sequence[str]) -> Iterator[Instance]:
    """Keyed by file name for folders and globs, by the path given otherwise."""
    expanded = [(p, _expand(p)) for p in paths]  # fail fast, before any prediction
    for given, files in expanded:
        for path in files:
            key = path if files == [given] else posixpath.basename(path)
            yield Instance(key, _read_bytes(path), path)


def _from_json_instance(instance, origin: str, default_key: str) -> Instance:
    if not isinstance(instance, dict):
        return Instance(default_key, None, origin, 'an instance must be a JSON object with '
                        '"encoded_image": {"b64": ...} and "key".')
    key = str(instance.get('key', default_key))
    payload = instance.get('encoded_image')
    if payload is None:
        return Instance(key, None, origin, 'no "encoded_image" in the instance.')
    if not isinstance(payload, dict) or not isinstance(payload.get('b64'), str):
        return Instance(key, None, origin, '"encoded_image" must be {"b64": "<base64 of the '
                        'image file>"}, as AI Platform sends binary inputs.')
    try:
        image = base64.b64decode(payload['b64'], validate=True)
    except (binascii.Error, ValueError):
        return Instance(key, None, origin, '"encoded_image.b64" is not valid base64.')
    return Instance(key, image, origin)


def from_json_instances(path: str) -> Iterator[Instance]:
    """Newline-delimited JSON, as `gcloud ai-platform predict --json-instances`
    reads it; a missing key defaults to the line number."""
    _must_exist(path)
    with tf.io.gfile.GFile(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            origin = f'{path}:{number}'
            try:
                instance = json.loads(line)
            except json.JSONDecodeError as e:
                yield Instance(str(number), None, origin, f'not JSON: {e.msg}.')
                continue
            yield _from_json_instance(instance, origin, str(number))


def from_json_request(path: str) -> Iterator[Instance]:
    """A request body {"instances": [...]}; a missing key defaults to the index."""
    _must_exist(path)
    with tf.io.gfile.GFile(path) as f:
        try:
            request = json.load(f)
        except json.JSONDecodeError as e:
            raise InputError(f'{path}: not JSON ({e.msg} at line {e.lineno}).') from None
    if not isinstance(request, dict) or not isinstance(request.get('instances'), list):
        raise InputError(f'{path}: a request is {{"instances": [...]}}.')
    for index, instance in enumerate(request['instances']):
        yield _from_json_instance(instance, f'{path}: instances[{index}]', str(index))


def from_tfrecords(pattern: str) -> Iterator[Instance]:
    """Records of the format of docs/contract.md, keyed by image/source_id (else
    image/filename, else file:index)."""
    files = records.match_files(pattern, 'tfrecords')
    features = {name: tf.io.FixedLenFeature((), tf.string, default_value='')
                for name in ('image/encoded', 'image/source_id', 'image/filename')}
    for path in files:
        for index, record in enumerate(tf.data.TFRecordDataset(path)):
            origin = f'{path}:record {index}'
            try:
                parsed = tf.io.parse_single_example(record, features)
            except tf.errors.InvalidArgumentError:
                yield Instance(origin, None, origin, 'not a tf.train.Example with image/encoded.')
                continue
            key = (parsed['image/source_id'].numpy().decode()
                   or parsed['image/filename'].numpy().decode() or f'{path}:{index}')
            image = parsed['image/encoded'].numpy()
            yield (Instance(key, image, origin) if image else
                   Instance(key, None, origin, 'no image/encoded in the record.'))
