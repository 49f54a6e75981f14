"""COCO evaluation of a Keras detector (float or QAT), for checking training.

The reference path of the exported TFLite models lives in include/quality; this helper scores a
checkpoint straight from Keras, with the same post-processing as the export's contract:
sigmoid scores, Faster R-CNN box decoding against the anchors, per-class NMS (IoU 0.6, up to
100 detections), then pycocotools' COCOeval with the model's classes mapped back to the
dataset's category ids.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np

NMS_IOU = 0.6
MAX_DETECTIONS = 100
SCORE_THRESHOLD = 1e-8


def _anchors_for_size(size: int) -> np.ndarray:
    from include.mobiledet import anchors as anchor_gen
    from include.mobiledet.ssd import feature_map_sizes

    return anchor_gen.generate_anchors([(g, g) for g in feature_map_sizes(size)])


def detect(model, images: np.ndarray, anchors: np.ndarray, max_detections: int = MAX_DETECTIONS,
           iou_threshold: float = NMS_IOU, score_threshold: float = SCORE_THRESHOLD):
    """Normalised images [B, S, S, 3] -> (boxes [B, D, 4] yxyx normalised, scores [B, D],
    classes [B, D] 0-based, num [B])."""
    import tensorflow as tf
    from include.mobiledet import box_coder

    codes, logits = model(tf.constant(images), training=False)
    boxes = box_coder.decode(codes, tf.constant(anchors)[None])
    scores = tf.sigmoid(logits)[..., 1:]
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :], scores, max_output_size_per_class=max_detections,
        max_total_size=max_detections, iou_threshold=iou_threshold,
        score_threshold=score_threshold, clip_boxes=True)
    return (nms.nmsed_boxes.numpy(), nms.nmsed_scores.numpy(),
            nms.nmsed_classes.numpy().astype(np.int64), nms.valid_detections.numpy())


def coco_results(dataset, image_ids, boxes, scores, classes, num) -> list[dict]:
    """Detections -> pycocotools result dicts (pixel xywh of the original image)."""
    out = []
    for k, image_id in enumerate(image_ids):
        rec = dataset.image_record(image_id)
        w, h = float(rec["width"]), float(rec["height"])
        for j in range(int(num[k])):
            y0, x0, y1, x1 = (float(v) for v in boxes[k, j])
            out.append({"image_id": int(image_id),
                        "category_id": int(dataset.class_to_category_id(int(classes[k, j]))),
                        "bbox": [x0 * w, y0 * h, (x1 - x0) * w, (y1 - y0) * h],
                        "score": float(scores[k, j])})
    return out


def coco_map(dataset, results: list[dict], image_ids) -> dict:
    """Run pycocotools' bbox evaluation; returns AP (0.5:0.95), AP50, AP75."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(dataset.annotation_file))
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [int(i) for i in image_ids]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"AP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}


def evaluate_keras(model_or_ckpt, data_dir, split: str = "val", max_images: int | None = None,
                   batch: int = 16) -> dict:
    """COCO mAP of a Keras detector (or a checkpoint folder) on a dataset split.

    -> {"AP", "AP50", "AP75", "images", "detections", "seconds"}.
    """
    import time

    import tensorflow as tf
    from include.data.coco import open_dataset
    from include.data.preprocess import preprocess

    t0 = time.perf_counter()
    model = model_or_ckpt
    if isinstance(model_or_ckpt, (str, Path)):
        from include.mobiledet.checkpoint import load_checkpoint
        model, _ = load_checkpoint(model_or_ckpt)
    p = Path(data_dir)
    dataset = open_dataset(p, None if p.is_file() else split)
    ids = dataset.image_ids if max_images is None else dataset.sample_image_ids(max_images)
    size = int(model.input_shape[1])
    anchors = _anchors_for_size(size)
    call = tf.function(lambda x: model(x, training=False))

    class _Model:  # `detect` calls model(x, training=False); keep one traced function
        def __call__(self, x, training=False):
            return call(x)

    results = []
    for start in range(0, len(ids), batch):
        chunk = ids[start:start + batch]
        images = np.stack([preprocess(dataset.load_image(i), size) for i in chunk])
        boxes, scores, classes, num = detect(_Model(), images, anchors)
        results += coco_results(dataset, chunk, boxes, scores, classes, num)
    metrics = coco_map(dataset, results, ids)
    return {**metrics, "images": len(ids), "detections": len(results),
            "seconds": round(time.perf_counter() - t0, 2)}
