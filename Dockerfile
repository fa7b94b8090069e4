# GPU-capable training image: TensorFlow's own GPU image for the pinned TensorFlow,
# plus the same pins CI installs (requirements.txt). Also runs on CPU-only hosts.
# BASE_IMAGE: another base with Python 3.11 and pip (a registry mirror, or the
# stand-in base of tests/container/test_image.py).
ARG BASE_IMAGE=tensorflow/tensorflow:2.20.0-gpu
FROM ${BASE_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TF_USE_LEGACY_KERAS=1

WORKDIR /opt/object_detection
# hypertune's default file is /tmp/hypertune/output.metrics: writable, as /tmp is, by the
# image's user and by whatever uid `docker run -u` gives.
RUN useradd --create-home --uid 1000 --shell /usr/sbin/nologin trainer \
    && install -d -m 1777 /tmp/hypertune

# Layers from the least to the most often changed: a code change reuses the packages' layer.
COPY requirements.txt constraints.txt ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt \
    && python3 -m pip check

# The ImageNet ResNet-50 for --init_checkpoint=auto, when the build put it there (cloudbuild.yaml).
COPY pretrained/ pretrained/
COPY entrypoint.py .
COPY object_detection_algo/ object_detection_algo/

USER 1000:1000

# AI Platform, Vertex AI and `docker run IMAGE --flag=...` pass flags straight through.
ENTRYPOINT ["python3", "/opt/object_detection/entrypoint.py"]
