"""Model Garden's COCO evaluator, with per class AP, AP50, AP75 and the score
threshold that maximises F1 (with its precision and recall). Model Garden's own
per-category numbers need a `COCOeval.category_stats` that pycocotools' COCOeval
does not have, so it reports none.

Model Garden internals touched: `COCOEvaluator._retrieve_per_category_metrics`,
which `evaluate()` calls with the accumulated `COCOeval` when per-category
metrics are on (tests/test_adapters.py fails if it goes away), and the
constructor arguments `RetinaNetTask.build_metrics` passes (restated in
adapters/retinanet_task.py).
"""

from official.vision.evaluation import coco_evaluator

from object_detection_algo.adapters import coco_metrics


class COCOEvaluator(coco_evaluator.COCOEvaluator):

    def _retrieve_per_category_metrics(self, coco_eval, prefix=''):
        found = super()._retrieve_per_category_metrics(coco_eval, prefix)
        if not prefix:  # boxes (not masks or keypoints)
            found.update(coco_metrics.per_class_outputs(coco_eval))
        return found
