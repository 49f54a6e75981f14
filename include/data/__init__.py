"""COCO-format data: the one image preprocessing, the dataset reader, the synthetic dataset.

    from include.data import open_dataset
    from include.data.preprocess import preprocess
    ds = open_dataset("data/shapes", split="val")
    x = preprocess(ds.load_image(ds.image_ids[0]), 320)     # float32 [320, 320, 3] in [-1, 1]
    t = ds.targets(ds.image_ids[0])                          # boxes (yxyx, 0..1), classes, is_crowd

The preprocessing functions are deliberately not re-exported here: a package attribute named
`preprocess` would hide the submodule `include.data.preprocess`. The names below load on first
use, so importing `include.data.commands` (the CLI) or this package costs nothing; nothing in this
package needs TensorFlow.
"""
from __future__ import annotations

import importlib

_LAZY = {
    "CocoDataset": ("include.data.coco", "CocoDataset"),
    "open_dataset": ("include.data.coco", "open_dataset"),
    "synthesize": ("include.data.synth", "synthesize"),
    "SYNTH_CATEGORIES": ("include.data.synth", "CATEGORIES"),
}

__all__ = list(_LAZY)


def __getattr__(name):
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'include.data' has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
