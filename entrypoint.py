"""Container entrypoint: the AI Platform built-in image object detection
algorithm's command line. Flags are checked before TensorFlow is imported."""

import gc
import os

from absl import app, flags

from object_detection_algo import logs
from object_detection_algo.training import cli


def main(argv):
    del argv  # parsed by cli.parse
    logs.configure(flags.FLAGS.verbosity)  # absl's --verbosity / -v
    # TensorFlow's gs:// filesystem logs its retries only at this verbosity.
    os.environ.setdefault('TF_CPP_VMODULE', 'retrying_utils=1')
    from object_detection_algo.training import job  # imports TensorFlow
    settings, dirs = cli.resolved()
    status = job.run(settings, dirs)
    # A collective that failed (a task of the cluster lost) leaves TensorFlow's thread pool in
    # a reference cycle; collected now, its finalizer runs cleanly, not noisily at exit.
    gc.collect()
    return status


if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse)
