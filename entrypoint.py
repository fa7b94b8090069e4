"""Container entrypoint: the AI Platform built-in image object detection
algorithm's command line. Flags are checked before TensorFlow is imported."""

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
    return job.run(settings, dirs)


if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse)
