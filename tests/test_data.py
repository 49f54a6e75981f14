"""The data layer: preprocessing, the COCO reader, the synthetic dataset."""
from __future__ import annotations

import argparse
import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from include.data import coco, preprocess as pp, synth
from include.data.coco import open_dataset
from include.errors import ConfigError, DataError

# COCO 2017's 80 categories with their real, non-contiguous ids (1..90, ten gaps).
COCO_NAMES = (
    "person bicycle car motorcycle airplane bus train truck boat traffic_light fire_hydrant "
    "stop_sign parking_meter bench bird cat dog horse sheep cow elephant bear zebra giraffe "
    "backpack umbrella handbag tie suitcase frisbee skis snowboard sports_ball kite "
    "baseball_bat baseball_glove skateboard surfboard tennis_racket bottle wine_glass cup fork "
    "knife spoon bowl banana apple sandwich orange broccoli carrot hot_dog pizza donut cake "
    "chair couch potted_plant bed dining_table toilet tv laptop mouse remote keyboard "
    "cell_phone microwave oven toaster sink refrigerator book clock vase scissors teddy_bear "
    "hair_drier toothbrush").split()
COCO_GAPS = {12, 26, 29, 30, 45, 66, 68, 69, 71, 83}
COCO_IDS = [i for i in range(1, 91) if i not in COCO_GAPS]
assert len(COCO_IDS) == len(COCO_NAMES) == 80


def _save(path: Path, array: np.ndarray, mode: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(array, mode) if mode else Image.fromarray(array)).save(path, **kw)
    return path


def _rgb(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ============================================================================ preprocessing
def _check_model_input(x, size):
    assert x.shape == (size, size, 3)
    assert x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() <= 1.0


def test_normalize_endpoints():
    out = pp.normalize(np.array([0, 127.5, 255], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, [-1.0, 0.0, 1.0])


def test_grayscale_png(tmp_path):
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (40, 1))   # 40 x 64
    path = _save(tmp_path / "g.png", gray, "L")
    img = pp.load_image(path)
    assert img.shape == (40, 64, 3) and img.dtype == np.uint8
    assert (img[..., 0] == gray).all() and (img[..., 1] == gray).all() and (img[..., 2] == gray).all()
    x = pp.preprocess(path, 32)
    _check_model_input(x, 32)
    assert np.allclose(x[..., 0], x[..., 2])
    assert x[:, 0].mean() < -0.9 and x[:, -1].mean() > 0.9    # dark left, bright right kept


def test_rgba_and_palette(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 10, 200, 30, 0  # fully transparent
    img = pp.load_image(_save(tmp_path / "a.png", rgba, "RGBA"))
    assert img.shape == (20, 30, 3)
    assert (img == [10, 200, 30]).all()                       # alpha dropped, colour kept
    _check_model_input(pp.preprocess(tmp_path / "a.png", 64), 64)

    pal = Image.fromarray(_rgb(16, 16)).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    img = pp.load_image(tmp_path / "p.png")
    assert img.shape == (16, 16, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img, np.asarray(pal.convert("RGB")))


def test_sixteen_bit_png(tmp_path):
    a = np.array([[0, 257 * 100, 65535]], np.uint16)
    path = _save(tmp_path / "16.png", a)
    assert Image.open(path).mode.startswith("I")
    img = pp.load_image(path)
    assert img.dtype == np.uint8 and img.shape == (1, 3, 3)
    assert img[0, :, 0].tolist() == [0, 100, 255]


def test_jpeg_and_no_exif_rotation(tmp_path):
    im = Image.fromarray(_rgb(30, 50))
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    im.save(tmp_path / "e.jpg", quality=95, exif=exif)
    img = pp.load_image(tmp_path / "e.jpg")
    assert img.shape == (30, 50, 3)          # raw pixel grid, as COCO annotations assume
    _check_model_input(pp.preprocess(tmp_path / "e.jpg", 32), 32)


def test_non_square_resize_stretches():
    img = np.zeros((60, 90, 3), np.uint8)
    img[:, 45:] = 255                        # right half white
    r = pp.resize_image(img, 32)
    assert r.shape == (32, 32, 3) and r.dtype == np.float32
    assert r.min() >= 0 and r.max() <= 255
    assert (r[:, :15] == 0).all() and (r[:, 17:] == 255).all()   # the edge stays in the middle
    x = pp.preprocess(img, 32)
    _check_model_input(x, 32)
    assert x.min() == -1.0 and x.max() == 1.0


def test_preprocess_one_implementation(tmp_path):
    arr = _rgb(45, 70, seed=3)
    path = _save(tmp_path / "x.png", arr)
    a, b = pp.preprocess(arr, 32), pp.preprocess(path, 32)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(pp.normalize(pp.preprocess_uint8(arr, 32)), a)
    np.testing.assert_array_equal(pp.preprocess(arr, 32), a)           # deterministic
    batch = pp.preprocess_batch([arr, path, arr[..., 0]], 32)
    assert batch.shape == (3, 32, 32, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[1], a)
    assert pp.preprocess_batch([], 32).shape == (0, 32, 32, 3)
    with pytest.raises(DataError, match="uint8"):
        pp.preprocess(arr.astype(np.float32), 32)


def test_bad_image_files(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="broken.png.*will not decode"):
        pp.load_image(bad)
    good = _save(tmp_path / "cut.png", _rgb(64, 64))
    cut = tmp_path / "cut2.png"
    cut.write_bytes(good.read_bytes()[:300])
    with pytest.raises(DataError, match="cut2.png.*will not decode"):
        pp.load_image(cut)
    with pytest.raises(DataError, match="nothere.png.*not found"):
        pp.load_image(tmp_path / "nothere.png")


# ============================================================================ COCO reader
def _coco_like(root: Path, split="val2017") -> Path:
    """A small file shaped like COCO's real instances_val2017.json, with its images."""
    sizes = {101: (640, 480), 102: (427, 640), 103: (500, 375)}
    images = []
    for iid, (w, h) in sizes.items():
        name = f"{iid:012d}.jpg"
        _save(root / split / name, _rgb(h, w, seed=iid), quality=80)
        images.append({"license": 1, "file_name": name, "coco_url": "http://x", "height": h,
                       "width": w, "date_captured": "2013-11-14 17:02:52", "id": iid})
    anns = [
        {"segmentation": [[64, 48, 384, 48, 384, 288, 64, 288]], "area": 76800.0, "iscrowd": 0,
         "image_id": 101, "bbox": [64.0, 48.0, 320.0, 240.0], "category_id": 1, "id": 1},
        {"segmentation": [[600, 400, 640, 400, 640, 480]], "area": 800.0, "iscrowd": 0,
         "image_id": 101, "bbox": [600.0, 400.0, 100.0, 100.0], "category_id": 90, "id": 2},
        {"segmentation": [[10, 10, 10, 20]], "area": 0.0, "iscrowd": 0,
         "image_id": 101, "bbox": [10.0, 10.0, 0.0, 10.0], "category_id": 13, "id": 3},
        # a crowd region with an uncompressed RLE mask, as COCO stores crowds
        # (column-major runs: 100 columns of zeros, 50 of ones, 277 of zeros, 640 rows each)
        {"segmentation": {"counts": [640 * 100, 640 * 50, 640 * 277], "size": [640, 427]},
         "area": 32000.0, "iscrowd": 1, "image_id": 102, "bbox": [100.0, 0.0, 50.0, 640.0],
         "category_id": 1, "id": 4},
        {"segmentation": [[1, 1, 50, 1, 50, 30]], "area": 700.0, "iscrowd": 0,
         "image_id": 102, "bbox": [1.0, 1.0, 49.0, 29.0], "category_id": 13, "id": 5},
    ]
    doc = {"info": {"description": "COCO 2017 Dataset", "year": 2017},
           "licenses": [{"url": "http://x", "id": 1, "name": "CC"}],
           "images": images, "annotations": anns,
           "categories": [{"supercategory": "thing", "id": i, "name": n}
                          for i, n in zip(COCO_IDS, COCO_NAMES)][::-1]}   # any order in file
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def test_real_coco_like_file(tmp_path):
    path = _coco_like(tmp_path)
    ds = open_dataset(path)
    assert ds.split == "val2017" and ds.image_dir == tmp_path / "val2017"
    assert len(ds) == 3 and ds.image_ids == [101, 102, 103]
    assert ds.num_classes == 80 and ds.class_names[:2] == ["person", "bicycle"]
    assert ds.class_names[-1] == "toothbrush" and ds.label_map[79] == "toothbrush"
    assert ds.category_id_to_class(1) == 0
    assert ds.category_id_to_class(13) == 11          # id 12 is one of COCO's gaps
    assert ds.category_id_to_class(90) == 79
    for cls in range(80):
        assert ds.category_id_to_class(ds.class_to_category_id(cls)) == cls
    assert [ds.class_to_category_id(c) for c in range(80)] == COCO_IDS
    with pytest.raises(DataError, match="category id 12 is not among"):
        ds.category_id_to_class(12)
    with pytest.raises(DataError, match="class index 80 is out of range"):
        ds.class_to_category_id(80)
    assert ds.check_files() == 3
    img = ds.load_image(102)
    assert img.shape == (640, 427, 3) and img.dtype == np.uint8

    t = ds.targets(101)        # 640 x 480
    assert t["boxes"].dtype == np.float32 and t["classes"].dtype == np.int32
    np.testing.assert_allclose(t["boxes"], [[48 / 480, 64 / 640, 288 / 480, 384 / 640],
                                            [400 / 480, 600 / 640, 1.0, 1.0]], rtol=1e-6)
    assert t["classes"].tolist() == [0, 79]            # zero-width box (id 3) dropped
    assert t["is_crowd"].tolist() == [False, False]
    assert len(ds.annotations_for(101)) == 3           # raw annotations keep everything

    t = ds.targets(102)        # 427 x 640, holds the crowd region
    np.testing.assert_allclose(t["boxes"], [[0.0, 100 / 427, 1.0, 150 / 427],
                                            [1 / 640, 1 / 427, 30 / 640, 50 / 427]], rtol=1e-6)
    assert t["classes"].tolist() == [0, 11] and t["is_crowd"].tolist() == [True, False]
    t = ds.targets(103)
    assert t["boxes"].shape == (0, 4) and t["classes"].shape == (0,)

    from pycocotools.coco import COCO
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(path))
    assert len(gt.getCatIds()) == 80
    mask = gt.annToMask(gt.anns[4])
    assert mask.shape == (640, 427) and mask.sum() == 640 * 50


def test_fingerprint_and_sample(tmp_path):
    path = _coco_like(tmp_path)
    ds = open_dataset(path)
    fp = ds.fingerprint()
    assert len(fp) == 64 and fp == open_dataset(path).fingerprint()
    _save(tmp_path / "val2017" / "000000000103.jpg", _rgb(375, 500, seed=9), quality=30)
    assert open_dataset(path).fingerprint() != fp
    s = ds.sample_image_ids(2, seed=0)
    assert s == ds.sample_image_ids(2, seed=0) and len(set(s)) == 2 and set(s) <= {101, 102, 103}
    assert ds.sample_image_ids(10) == [101, 102, 103]


def test_dataset_layouts(tmp_path):
    # (a) json next to its images
    flat = tmp_path / "flat"
    p = _coco_like(flat, "mini")
    moved = flat / "instances_mini.json"
    p.rename(moved)
    for f in (flat / "mini").iterdir():
        f.rename(flat / f.name)
    (flat / "mini").rmdir()
    assert open_dataset(moved).image_dir == flat
    # (b) <root>/images/<split>/
    nested = tmp_path / "nested"
    _coco_like(nested, "train")
    (nested / "images").mkdir()
    (nested / "train").rename(nested / "images" / "train")
    ds = open_dataset(nested)                                   # one split: taken
    assert ds.split == "train" and ds.image_dir == nested / "images" / "train"
    ds.check_files()
    # (c) a folder with several splits needs the split named
    _coco_like(nested, "val")
    with pytest.raises(DataError, match=r"nested: the dataset has several splits \(train, val\)"):
        open_dataset(nested)
    assert open_dataset(nested, split="val").image_dir == nested / "val"
    with pytest.raises(DataError, match="no split 'test'; available: train, val"):
        open_dataset(nested, split="test")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no COCO annotation file"):
        open_dataset(empty)
    with pytest.raises(DataError, match="dataset path not found"):
        open_dataset(tmp_path / "nope")


def _write(tmp_path, doc, name="instances_x.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return p


def _minimal():
    return {"images": [{"id": 1, "file_name": "a.png", "width": 10, "height": 10}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 2, "bbox": [1, 1, 3, 3],
                             "iscrowd": 0, "area": 9}],
            "categories": [{"id": 2, "name": "thing"}]}


@pytest.mark.parametrize("mutate, pattern", [
    (lambda d: d.pop("annotations"), r"missing top-level key\(s\) 'annotations'"),
    (lambda d: (d.pop("images"), d.pop("categories")),
     r"missing top-level key\(s\) 'images', 'categories'"),
    (lambda d: d["annotations"][0].update(category_id=5),
     r"annotation id 7 has category_id 5, which is not in 'categories'"),
    (lambda d: d["annotations"][0].update(image_id=3),
     r"annotation id 7 refers to image id 3, which has no image record"),
    (lambda d: d["annotations"][0].update(bbox=[1, 2]), r"annotation id 7 has bbox"),
    (lambda d: d["annotations"][0].update(bbox=[1, "2", 3, 4]), r"annotation id 7 has bbox"),
    (lambda d: d["annotations"][0].pop("bbox"), r"annotations\[0\] \(id 7\) lacks 'bbox'"),
    (lambda d: d["annotations"].append(dict(d["annotations"][0])),
     r"annotation id 7 appears twice"),
    (lambda d: d["images"][0].pop("width"), r"lacks 'width'"),
    (lambda d: d["categories"].clear(), r"'categories' is empty"),
])
def test_bad_annotation_files(tmp_path, mutate, pattern):
    doc = _minimal()
    mutate(doc)
    path = _write(tmp_path, doc)
    with pytest.raises(DataError, match=pattern) as err:
        open_dataset(path)
    assert str(path) in str(err.value) and "Fix:" in str(err.value)


def test_not_json_and_missing_file(tmp_path):
    path = _write(tmp_path, "{ this is not json")
    with pytest.raises(DataError, match=r"instances_x.json: annotation file is not valid JSON"):
        open_dataset(path)
    path = _write(tmp_path, "[1, 2]", "instances_y.json")
    with pytest.raises(DataError, match=r"instances_y.json: annotation file holds a JSON list"):
        open_dataset(path)
    with pytest.raises(DataError, match="not found"):
        coco.CocoDataset.load(tmp_path / "instances_z.json", tmp_path)


def test_missing_and_broken_images(tmp_path):
    doc = _minimal()
    doc["images"].append({"id": 2, "file_name": "b.png", "width": 10, "height": 10})
    doc["images"].append({"id": 3, "file_name": "c.png", "width": 12, "height": 10})
    path = _write(tmp_path, doc)
    ds = open_dataset(path)                      # loading checks nothing on disk: lazy
    assert ds.image_dir == tmp_path
    with pytest.raises(DataError, match=r"3 of 3 image files are missing: .*a\.png"):
        ds.check_files()
    with pytest.raises(DataError, match=r"a\.png: image file of image id 1 not found"):
        ds.load_image(1)
    _save(tmp_path / "a.png", _rgb(10, 10))
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    _save(tmp_path / "c.png", _rgb(10, 10))
    with pytest.raises(DataError, match=r"b\.png: image will not decode"):
        ds.load_image(2)
    with pytest.raises(DataError, match=r"b\.png: image will not decode"):
        ds.check_files(decode=True)
    with pytest.raises(DataError, match=r"c\.png: image is 10x10 pixels but its record"):
        ds.load_image(3)
    assert ds.load_image(1).shape == (10, 10, 3)
    with pytest.raises(DataError, match="no image with id 99"):
        ds.targets(99)


# ============================================================================ synthetic data
@pytest.fixture(scope="module")
def synth_pair(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    a = synth.synthesize(base / "a", 24, size=64, seed=0)
    b = synth.synthesize(base / "b", 24, size=64, seed=0)
    c = synth.synthesize(base / "c", 24, size=64, seed=1)
    return base, a, b, c


def _files(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_synth_determinism(synth_pair):
    base, a, b, c = synth_pair
    fa, fb, fc = _files(base / "a"), _files(base / "b"), _files(base / "c")
    assert len(fa) == 24 + 3
    assert fa == fb                                              # byte-identical
    assert fa["annotations/instances_train.json"] != fc["annotations/instances_train.json"]
    common = set(fa) & set(fc)
    assert sum(fa[k] != fc[k] for k in common) >= len(common) - 3
    assert {k: v for k, v in a.items() if k not in ("out", "annotation_files")} == \
        {k: v for k, v in b.items() if k not in ("out", "annotation_files")}


def test_synth_content(synth_pair):
    base, summary, _, _ = synth_pair
    assert summary["images"] == {"train": 19, "val": 5}
    cat_ids = {c["id"] for c in synth.CATEGORIES}
    assert cat_ids == {1, 3, 4, 7, 10}
    modes, exts, shapes = set(), set(), set()
    for split in ("train", "val"):
        ds = open_dataset(base / "a", split=split)
        assert ds.image_dir == base / "a" / split
        assert ds.check_files(decode=True) == summary["images"][split]
        assert ds.class_names == ["circle", "square", "triangle", "cross", "ring"]
        assert len(ds.annotations) == summary["annotations"][split]
        for rec in ds.images:
            anns = ds.annotations_for(rec["id"])
            assert anns, "every synthetic image holds at least one object"
            for a in anns:
                x, y, w, h = a["bbox"]
                assert a["category_id"] in cat_ids
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= rec["width"] and y + h <= rec["height"]
                assert 0 < a["area"] <= w * h
            t = ds.targets(rec["id"])
            assert len(t["boxes"]) == len(anns)
            assert (t["boxes"] >= 0).all() and (t["boxes"] <= 1).all()
            with Image.open(ds.image_path(rec["id"])) as im:
                modes.add(im.mode)
                exts.add(ds.image_path(rec["id"]).suffix)
                shapes.add(im.width / im.height)
    assert modes == {"RGB", "L"} and exts == {".png", ".jpg"}
    assert {1.0, 1.5} <= {round(s, 2) for s in shapes} and min(shapes) < 0.7


def test_synth_sizes_and_crowds():
    """Object sizes span ~6%..60% of the image side; some crowd regions are present."""
    sides, crowd, total, per_image = [], 0, 0, []
    for index in range(60):
        img, objects, _ = synth.render_image(0, index, 128)
        per_image.append(sum(not o["iscrowd"] for o in objects))
        for o in objects:
            total += 1
            crowd += o["iscrowd"]
            if not o["iscrowd"]:
                sides.append(max(o["bbox"][2:]) / min(img.size))
    assert 1 <= min(per_image) and max(per_image) <= 6
    assert min(sides) < 0.12 and max(sides) > 0.45
    assert 0 < crowd < 0.1 * total


def test_synth_pycocotools(synth_pair):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    base = synth_pair[0]
    crowds = 0
    for split in ("train", "val"):
        path = base / "a" / "annotations" / f"instances_{split}.json"
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(path))
        assert sorted(gt.getCatIds()) == [1, 3, 4, 7, 10]
        crowd = [a for a in gt.anns.values() if a["iscrowd"]]
        crowds += len(crowd)
        for a in crowd:
            assert gt.annToMask(a).sum() == a["area"]          # the RLE mask matches its area
            t = open_dataset(path).targets(a["image_id"])
            assert t["is_crowd"].sum() == 1
        # Perfect detections of the objects, plus a detection on each crowd region: the crowd
        # detections are ignored by pycocotools, so AP stays 1.0.
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": 0.95 if a["iscrowd"] else 0.9} for a in gt.anns.values()]
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(dets), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        assert ev.stats[0] == pytest.approx(1.0)
    assert crowds >= 1, "seed 0 has crowd regions in its first 24 images"


def test_synth_crowd_rle_with_pycocotools():
    """The crowd masks are uncompressed COCO RLE that pycocotools decodes back exactly."""
    from pycocotools import mask as mask_util

    m = np.zeros((7, 5), np.uint8)
    m[2:5, 1:3] = 1
    rle = synth.rle_encode(m)
    assert sum(rle["counts"]) == 35 and rle["size"] == [7, 5]
    back = mask_util.decode(mask_util.frPyObjects(rle, 7, 5))
    np.testing.assert_array_equal(back, m)
    m[0, 0] = 1
    np.testing.assert_array_equal(
        mask_util.decode(mask_util.frPyObjects(synth.rle_encode(m), 7, 5)), m)


def test_synth_output_folder_rules(tmp_path):
    out = tmp_path / "ds"
    synth.synthesize(out, 3, size=48, seed=0, val_fraction=0.0)
    assert len(open_dataset(out, split="train")) == 3 and len(open_dataset(out, split="val")) == 0
    synth.synthesize(out, 2, size=48)                     # an earlier synthetic dataset: replaced
    assert len(list((out / "train").iterdir())) + len(list((out / "val").iterdir())) == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no leftovers
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        synth.synthesize(other, 2)
    with pytest.raises(ConfigError, match="--images"):
        synth.synthesize(tmp_path / "z", 0)
    with pytest.raises(ConfigError, match="--val-fraction"):
        synth.synthesize(tmp_path / "z", 5, val_fraction=1.0)


def test_cli_data_synth_and_check(tmp_path, capsys):
    from include.data import commands

    parser = argparse.ArgumentParser(prog="mobiledet")
    sub = parser.add_subparsers(dest="command")
    commands.register(sub)
    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "d"), "--images", "5",
                              "--size", "64", "--seed", "3", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == {"train": 4, "val": 1} and out["out"] == str(tmp_path / "d")
    assert [c["name"] for c in out["categories"]][0] == "circle"
    assert out["annotations"]["train"] >= 4

    args = parser.parse_args(["data", "check", str(tmp_path / "d"), "--split", "val", "--json"])
    assert args.func(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["images"] == 1 and len(out["fingerprint"]) == 64

    args = parser.parse_args(["data", "synth", "--out", str(tmp_path / "e"), "--images", "3",
                              "--size", "64"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert "split" in text and "train" in text and "circle" in text


def test_data_check_counts_boxes_of_negative_size(tmp_path, capsys):
    """A COCO box with a negative or zero width or height is dropped by training and
    evaluation; `data check` used to say OK about it."""
    from include.data import commands
    from include.data.synth import synthesize

    synthesize(tmp_path / "d", 6, size=64, seed=0, val_fraction=0.5)
    ann = tmp_path / "d" / "annotations" / "instances_val.json"
    doc = json.loads(ann.read_text())
    doc["annotations"][0]["bbox"][2] = -5.0
    doc["annotations"][1]["bbox"][3] = 0
    ann.write_text(json.dumps(doc))
    parser = argparse.ArgumentParser(prog="mobiledet")
    sub = parser.add_subparsers(dest="command")
    commands.register(sub)
    args = parser.parse_args(["data", "check", str(tmp_path / "d"), "--split", "val"])
    assert args.func(args) == 0
    text = capsys.readouterr().out
    bad = [doc["annotations"][0]["id"], doc["annotations"][1]["id"]]
    assert ": OK" not in text and "2 annotation(s) have a box of zero or negative" in text
    assert f"annotation ids {bad[0]}, {bad[1]}" in text and "Fix:" in text
    args = parser.parse_args(["data", "check", str(tmp_path / "d"), "--split", "val", "--json"])
    args.func(args)
    out = json.loads(capsys.readouterr().out)
    assert out["degenerate_boxes"] == 2 and out["degenerate_annotation_ids"] == bad
