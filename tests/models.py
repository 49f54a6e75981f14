"""Tiny real models for tests: checkpoint -> export -> .tflite through the product's own code.

Weights are untrained (random init, with BN statistics made non-trivial so that folding and
quantisation are exercised); training is tested in test_train.py. Sizes are small so a model
builds, exports and converts in a few seconds on 2 cores.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY = dict(num_classes=3, input_size=64, depth_multiplier=0.25)
LABEL_MAP = {0: {"name": "circle", "category_id": 1}, 1: {"name": "square", "category_id": 3},
             2: {"name": "triangle", "category_id": 4}}


def _perturb_batchnorm(model, seed=0):
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            g, b, m, v = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, g.shape), rng.uniform(-0.3, 0.3, b.shape),
                               rng.uniform(-0.3, 0.3, m.shape), rng.uniform(0.5, 2.0, v.shape)])


def make_checkpoint(out_dir, variant="edgetpu", qat=False, seed=0, **spec_overrides):
    """An untrained checkpoint folder written by the product's save_checkpoint."""
    import tensorflow as tf

    from include.mobiledet.checkpoint import save_checkpoint
    from include.mobiledet.spec import ModelSpec
    from include.mobiledet.ssd import build_detector

    spec = ModelSpec(variant=variant, **{**TINY, **spec_overrides})
    label_map = {k: v for k, v in LABEL_MAP.items() if k < spec.num_classes}
    tf.keras.utils.set_random_seed(seed)
    model = build_detector(spec)
    _perturb_batchnorm(model, seed)
    if qat:
        from include.mobiledet.qat import qat_from_float
        model = qat_from_float(model, spec)
        x = np.random.default_rng(seed).uniform(-1, 1, (2, spec.input_size, spec.input_size, 3))
        for _ in range(3):  # let the fake-quant ranges see activations
            model(x.astype(np.float32), training=True)
    save_checkpoint(model, out_dir, spec, qat=qat, label_map=label_map, steps=0,
                    data_fingerprint=None)
    return Path(out_dir)


def make_export(out_dir, variant="edgetpu", qat=False, **kw):
    from include.mobiledet.export import export_checkpoint

    out_dir = Path(out_dir)
    ckpt = make_checkpoint(out_dir / "ckpt", variant=variant, qat=qat, **kw)
    export_checkpoint(ckpt, out_dir / "export")
    return out_dir / "export"


_SHARED: dict = {}
_SHARED_ROOT: list = []


def shared_export(variant="edgetpu", qat=False, **spec_overrides) -> Path:
    """An export built once per test session and shared (read-only!) by every test that needs
    one: QAT exports cost ~30 s each (tfmot's quantize_apply), so tests must not rebuild them.
    The checkpoint it came from is `<export>/../ckpt`."""
    import tempfile

    key = (variant, qat, tuple(sorted(spec_overrides.items())))
    if key not in _SHARED:
        if not _SHARED_ROOT:
            _SHARED_ROOT.append(Path(tempfile.mkdtemp(prefix="mobiledet-shared-exports-")))
        name = f"{variant}-{'qat' if qat else 'float'}-{len(_SHARED)}"
        _SHARED[key] = make_export(_SHARED_ROOT[0] / name, variant=variant, qat=qat,
                                   **spec_overrides)
    return _SHARED[key]


def make_image_folder(out_dir, count=8, size=80, seed=0):
    """A folder of random PNG images (calibration data)."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        arr = rng.integers(0, 256, (size, size + 16, 3), dtype=np.uint8)
        Image.fromarray(arr).save(out_dir / f"img_{i:03d}.png")
    return out_dir


def make_tflite(out_dir, precision="float32", variant="edgetpu", calibration=None, **kw):
    from include.convert.converter import convert

    out_dir = Path(out_dir)
    qat = precision == "uint8"
    export = shared_export(variant=variant, qat=qat, **kw)
    if precision == "int8" and calibration is None:
        calibration = make_image_folder(out_dir / "calib")
    model = out_dir / f"{variant}_{precision}.tflite"
    convert(export, precision, model, calibration=calibration, calibration_count=8)
    return model


def make_tiny_inputs(root, images=10, val_fraction=0.4, variant="edgetpu"):
    """A tiny synthetic COCO dataset (root/data) and a tiny checkpoint (root/<variant>-float):
    what the DAG, stage and stack tests run the pipeline on. Returns (root, checkpoint)."""
    from include.data.synth import synthesize

    root = Path(root)
    synthesize(root / "data", images, size=96, seed=0, val_fraction=val_fraction)
    return root, make_checkpoint(root / f"{variant}-float", variant=variant)
