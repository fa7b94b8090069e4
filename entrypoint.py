"""Container entrypoint: the AI Platform built-in image object detection
algorithm's command line. Flags are checked before TensorFlow is imported."""

from absl import app

from object_detection_algo import cli


def main(argv):
    del argv  # parsed by cli.parse
    from object_detection_algo import training  # imports TensorFlow
    settings, dirs = cli.resolved()
    return training.run(settings, dirs)


if __name__ == '__main__':
    app.run(main, flags_parser=cli.parse)
