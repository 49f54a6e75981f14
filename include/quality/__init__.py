"""Quality checks of converted detector models; each is one function and one CLI verb.

    runner.Detector(model, threads)            the model I/O contract, in one place
    evaluate.evaluate(model, data, ...)        COCO mAP (pycocotools), drop and agreement vs a reference
    evaluate.coco_eval(gt, detections, ids)    pycocotools' 12 metrics for hand-made detections
    validate.validate(model, ...)              the output contract, checked with Great Expectations
    benchmark.benchmark(model, ...)            latency / init time / memory, in a fresh subprocess
    visualize.visualize(model, image, out)     detections drawn on the original image

Heavy libraries (LiteRT, pycocotools, Great Expectations) are imported inside the functions.
"""
