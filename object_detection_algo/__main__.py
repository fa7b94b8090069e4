"""`python -m object_detection_algo COMMAND`: the project's helper commands.

  demo         make the synthetic dataset, train on it, predict once
  synthetic    write the synthetic dataset as TFRecords
  predict      answer images with an exported model (AI Platform JSON)
  evaluate     COCO metrics of an exported model on a TFRecord glob
  flags-table  print the flag table of docs/flags.md (from flag_table.py)
  validate     check TFRecords before training (exit 0: no errors, 1: errors)
  convert      Pascal VOC / COCO / YOLO / CSV to TFRecords and a label map
"""

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog='python -m object_detection_algo',
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('-v', '--verbosity', type=int, default=0,
                        help='1: also the libraries\' log lines (TensorFlow, Model Garden)')
    sub = parser.add_subparsers(dest='command', required=True)
    demo = sub.add_parser('demo', help='train on the bundled synthetic dataset')
    demo.add_argument('--out', default='demo_output', help='folder for data and job outputs')
    demo.add_argument('flags', nargs='*', help='extra entrypoint flags, after --')
    syn = sub.add_parser('synthetic', help='write the synthetic dataset')
    syn.add_argument('--out', required=True)
    syn.add_argument('--num_train', type=int, default=512)
    syn.add_argument('--num_val', type=int, default=128)
    syn.add_argument('--size', type=int, default=128)
    syn.add_argument('--seed', type=int, default=0)
    sub.add_parser('flags-table', help='print the flag table as Markdown')
    from object_detection_algo.data import commands as data_commands
    from object_detection_algo.serving import evaluate, predict
    predict.add_arguments(sub.add_parser('predict', help='predict with an exported model'))
    evaluate.add_arguments(sub.add_parser('evaluate', help='COCO metrics of an exported model'))
    data_commands.add_parsers(sub)
    args = parser.parse_args(argv)
    from object_detection_algo import logs
    logs.configure(args.verbosity)  # before TensorFlow is imported

    if args.command in ('predict', 'evaluate'):
        return {'predict': predict, 'evaluate': evaluate}[args.command].run(args)
    if args.command in ('validate', 'convert'):
        return data_commands.run(args)

    if args.command == 'flags-table':
        from object_detection_algo.training import flag_table
        sys.stdout.write(flag_table.markdown_table())
        return 0
    if args.command == 'synthetic':
        from object_detection_algo.data import synthetic
        globs = synthetic.write_dataset(args.out, args.num_train, args.num_val,
                                        args.size, args.seed)
        print(f'train: {globs["train"]}\nvalidation: {globs["val"]}')
        return 0
    from object_detection_algo import demo as demo_lib
    return demo_lib.run(args.out, args.flags)


if __name__ == '__main__':
    sys.exit(main())
