"""The 12 COCO numbers, named as Model Garden's COCO evaluator names them, in
the order of pycocotools' `COCOeval.stats`. The job reads these keys from the
evaluator's output; `evaluate` names pycocotools' stats with them."""

COCO_METRICS = ('AP', 'AP50', 'AP75', 'APs', 'APm', 'APl',
                'ARmax1', 'ARmax10', 'ARmax100', 'ARs', 'ARm', 'ARl')
