"""Datasets and labels the way COCO and TFOD users hold them.

* `--data instances_x.json --images some_images` (a public subset's layout) evaluates exactly as
  the same data in the project's layout (annotations/instances_val.json beside val/);
* `--labels label_map.pbtxt` / `labels.txt` name the classes of a model without a label map
  (a .tflite whose conversion report is gone) in `visualize` and `evaluate`;
* bad combinations fail with the problem and the fix.

The model is the session's tiny untrained detector (tests/models.py); its detections are
random-looking but deterministic, which is all a comparison of two layouts needs.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from include.errors import ConfigError, DataError

try:
    from models import make_tflite
except ImportError:  # pragma: no cover - when tests/ becomes a package
    from tests.models import make_tflite


def _cli(argv, capsys):
    import include.cli as cli

    rc = cli.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same val split twice: the project's layout (proj/) and a public subset's
    (subset/instances_x.json + subset/some_images/). subset/ itself holds decoys: other images
    under the same names, which is what a run reads if --images is not honoured."""
    from include.data.synth import synthesize

    root = tmp_path_factory.mktemp("layouts")
    synthesize(root / "proj", 12, size=64, seed=0, val_fraction=0.5)
    subset = root / "subset"
    subset.mkdir()
    shutil.copy(root / "proj" / "annotations" / "instances_val.json", subset / "instances_x.json")
    shutil.copytree(root / "proj" / "val", subset / "some_images")
    rng = np.random.default_rng(1)
    for f in sorted((subset / "some_images").iterdir()):
        with Image.open(f) as im:
            w, h = im.size
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(subset / f.name)
    return {"proj": root / "proj", "json": subset / "instances_x.json",
            "images": subset / "some_images", "subset": subset}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The tiny float model with its conversion report (label map circle/square/triangle), and
    the same .tflite alone (metadata stripped: no label map anywhere)."""
    work = tmp_path_factory.mktemp("layout-models")
    model = make_tflite(work)
    bare = work / "bare" / "detector.tflite"
    bare.parent.mkdir()
    shutil.copy(model, bare)
    return {"model": model, "bare": bare}


def _evaluate_cli(capsys, model, *args):
    rc, out, err = _cli(["evaluate", "--model", str(model), "--threads", "1", "--json",
                         *map(str, args)], capsys)
    assert rc == 0, err
    return json.loads(out)


# ============================================================================ --data FILE --images
def test_annotation_file_and_image_folder_evaluate_as_the_project_layout(layouts, models,
                                                                         tmp_path, capsys):
    proj = _evaluate_cli(capsys, models["model"], "--data", layouts["proj"], "--split", "val",
                         "--out", tmp_path / "proj.json")
    subset = _evaluate_cli(capsys, models["model"], "--data", layouts["json"],
                           "--images", layouts["images"], "--out", tmp_path / "subset.json")
    assert subset["image_dir"] == str(layouts["images"])
    assert subset["images"] == proj["images"] == 6
    assert subset["metrics"] == proj["metrics"]
    assert subset["per_category"] == proj["per_category"]
    dets = json.loads((tmp_path / "proj.json").read_text())
    assert dets and json.loads((tmp_path / "subset.json").read_text()) == dets
    # without --images the decoys beside the json are read: the comparison above can tell
    decoy = _evaluate_cli(capsys, models["model"], "--data", layouts["json"],
                          "--out", tmp_path / "decoy.json")
    assert decoy["image_dir"] == str(layouts["subset"])
    assert json.loads((tmp_path / "decoy.json").read_text()) != dets


def test_run_images_gives_the_dag_a_dataset_folder_that_reads_the_given_images(
        layouts, models, tmp_path, capsys, monkeypatch):
    """`mobiledet run --data FILE --images DIR`: the DAG takes one dataset path, so the CLI
    hands it a folder in the project's layout whose links point at FILE and DIR; the DAG's
    readers (open_dataset on that folder, the evaluation) then see exactly the subset."""
    from include.data.coco import open_dataset
    from include.deploy.run_commands import run_data

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert run_data(str(layouts["proj"]), None) == str(layouts["proj"])   # as given
    view = run_data(str(layouts["json"]), str(layouts["images"]))
    assert view.startswith(str(tmp_path / "cache" / "mobiledet" / "datasets"))
    assert run_data(str(layouts["json"]), str(layouts["images"])) == view  # reused
    ds = open_dataset(view)
    assert ds.image_dir.resolve() == layouts["images"].resolve()
    proj = _evaluate_cli(capsys, models["model"], "--data", layouts["proj"], "--split", "val",
                         "--out", tmp_path / "proj.json")
    through = _evaluate_cli(capsys, models["model"], "--data", view,
                            "--out", tmp_path / "view.json")
    assert through["metrics"] == proj["metrics"]
    assert json.loads((tmp_path / "view.json").read_text()) == \
        json.loads((tmp_path / "proj.json").read_text())
    # checked up front, before any run starts; store URIs are refused with the fix
    with pytest.raises(DataError, match="missing"):
        run_data(str(layouts["json"]), str(tmp_path))
    with pytest.raises(DataError, match="local paths"):
        run_data("s3://bucket/data/instances_x.json", str(layouts["images"]))
    rc, _, err = _cli(["run", "--checkpoint", "x", "--data", str(layouts["json"]),
                       "--images", str(tmp_path / "nowhere")], capsys)
    assert rc != 0 and "image folder not found" in err


def test_library_code_that_opens_the_dataset_itself_reads_the_given_folder(layouts):
    """train, the recipe search, quant-debug and validate open `--data` themselves
    (open_dataset, calibration_files); inside dataset_arguments they get --images."""
    from include.convert.calibration import calibration_files
    from include.data.coco import dataset_arguments, open_dataset
    from include.mobiledet.train import open_split

    with dataset_arguments(layouts["json"], layouts["images"]) as ann:
        assert ann == layouts["json"]
        assert open_dataset(layouts["json"]).image_dir == layouts["images"]
        assert open_split(layouts["json"], "train").image_dir == layouts["images"]
        files = calibration_files(layouts["json"], count=3)
        assert len(files) == 3 and all(f.parent == layouts["images"] for f in files)
    assert open_dataset(layouts["json"]).image_dir == layouts["subset"]   # unbound again
    with dataset_arguments(layouts["proj"]) as ann:   # the folder form: untouched
        assert ann is None
    assert open_dataset(layouts["proj"], split="val").image_dir == layouts["proj"] / "val"


def test_data_check_with_images(layouts, capsys):
    rc, out, err = _cli(["data", "check", str(layouts["json"]), "--images",
                         str(layouts["images"]), "--json"], capsys)
    assert rc == 0, err
    summary = json.loads(out)
    assert summary["image_dir"] == str(layouts["images"]) and summary["images"] == 6


# ============================================================================ bad combinations
def test_images_folder_missing(layouts, models, tmp_path, capsys):
    nope = tmp_path / "nope"
    rc, _, err = _cli(["evaluate", "--model", str(models["model"]), "--data",
                       str(layouts["json"]), "--images", str(nope)], capsys)
    assert rc == 2
    assert f"--images {nope}: image folder not found" in err and "Fix:" in err


def test_images_not_in_the_given_folder(layouts, models, tmp_path, capsys):
    empty = tmp_path / "elsewhere"
    empty.mkdir()
    first = json.loads(layouts["json"].read_text())["images"][0]["file_name"]
    rc, _, err = _cli(["evaluate", "--model", str(models["model"]), "--data",
                       str(layouts["json"]), "--images", str(empty)], capsys)
    assert rc == 2
    assert "6 of 6 image files are missing" in err and first in err
    assert "(the folder given as --images)" in err
    # the fix names the folder next to the annotation file that holds them
    assert f"Fix: pass --images {layouts['subset']}" in err
    # a train run checks before it starts
    rc, _, err = _cli(["train", "--variant", "edgetpu", "--data", str(layouts["json"]),
                       "--images", str(empty), "--out", str(tmp_path / "ckpt"), "--steps", "1"],
                      capsys)
    assert rc == 2 and "6 of 6 image files are missing" in err
    assert not (tmp_path / "ckpt").exists()


def test_images_with_a_dataset_folder(layouts, models, capsys):
    rc, _, err = _cli(["evaluate", "--model", str(models["model"]), "--data",
                       str(layouts["proj"]), "--images", str(layouts["images"])], capsys)
    assert rc == 2
    assert "--images goes with an annotation file, and --data is a folder" in err
    assert "instances_" in err.split("Fix:")[1]


def test_eval_split_with_an_annotation_file(layouts, tmp_path):
    import include.cli as cli
    from include.mobiledet.train_commands import cmd_train

    args = cli.build_parser().parse_args(
        ["train", "--variant", "edgetpu", "--data", str(layouts["json"]), "--images",
         str(layouts["images"]), "--out", str(tmp_path / "ckpt"), "--steps", "1",
         "--eval-split", "val"])
    with pytest.raises(ConfigError, match="evaluation would run on the training images"):
        cmd_train(args)


# ============================================================================ --labels
PBTXT = """# a TFOD label map; COCO's names items by Freebase id and shows display_name
item { id: 1 name: "/m/0aaa" display_name: "alpha" }
item {
  id: 2
  name: "beta"
  frequency: FREQUENT
}
item { id: 3 name: "gamma" }
"""


def _visualize(capsys, model, image, out, labels=None):
    rc, stdout, err = _cli(["visualize", "--model", str(model), "--image", str(image),
                            "--threshold", "0", "--out", str(out), "--json"]
                           + (["--labels", str(labels)] if labels else []), capsys)
    assert rc == 0, err
    return json.loads(stdout)


@pytest.fixture
def picture(tmp_path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8)).save(
        tmp_path / "in.png")
    return tmp_path / "in.png"


def test_visualize_names_from_a_label_map_pbtxt(models, picture, tmp_path, capsys):
    labels = tmp_path / "label_map.pbtxt"
    labels.write_text(PBTXT)
    names = {0: "alpha", 1: "beta", 2: "gamma"}
    for model in (models["bare"], models["model"]):   # --labels beats the model's own names
        r = _visualize(capsys, model, picture, tmp_path / "out.png", labels)
        assert r["labels_source"] == str(labels) and r["labels_format"] == "label_map.pbtxt"
        assert r["detections"]
        assert all(d["name"] == names[d["class"]] for d in r["detections"])
    bare = _visualize(capsys, models["bare"], picture, tmp_path / "plain.png")
    assert bare["labels_source"] == "class indices"
    assert all(d["name"] == f"class {d['class']}" for d in bare["detections"])
    # the text output prints the names too
    rc, stdout, err = _cli(["visualize", "--model", str(models["bare"]), "--image",
                            str(picture), "--threshold", "0", "--out", str(tmp_path / "t.png"),
                            "--labels", str(labels)], capsys)
    assert rc == 0, err
    assert f"(names: {labels})" in stdout
    assert {line.split()[0] for line in stdout.splitlines()[1:]} <= set(names.values())
    assert any(n in stdout for n in names.values())


def test_visualize_names_from_labels_txt(models, picture, tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("alpha\n???\ngamma\n\n")   # line N = class N-1; ??? = no class
    r = _visualize(capsys, models["bare"], picture, tmp_path / "out.png", labels)
    assert r["labels_source"] == str(labels) and r["labels_format"] == "labels.txt"
    expected = {0: "alpha", 1: "class 1", 2: "gamma"}
    assert r["detections"]
    assert all(d["name"] == expected[d["class"]] for d in r["detections"])


def test_evaluate_with_labels_on_a_model_without_a_label_map(layouts, models, tmp_path,
                                                             capsys):
    """Names are matched to the dataset's categories: a labels.txt that lists the model's
    classes in another order than the dataset's ids moves every detection to that category."""
    labels = tmp_path / "labels.txt"
    labels.write_text("square\ncircle\ntriangle\n")
    plain = _evaluate_cli(capsys, models["bare"], "--data", layouts["json"], "--images",
                          layouts["images"], "--out", tmp_path / "plain.json")
    assert plain["class_mapping"] == "dataset categories in id order"
    named = _evaluate_cli(capsys, models["bare"], "--data", layouts["json"], "--images",
                          layouts["images"], "--labels", labels, "--out", tmp_path / "named.json")
    assert named["labels_source"] == f"--labels {labels}"
    assert "matched by category name: 3 of 3" in named["class_mapping"]
    swap = {1: 3, 3: 1, 4: 4}   # circle(1) <-> square(3), triangle(4) stays
    moved = [{**d, "category_id": swap[d["category_id"]]}
             for d in json.loads((tmp_path / "plain.json").read_text())]
    assert moved and json.loads((tmp_path / "named.json").read_text()) == moved
    # a TFOD label map whose names are not the dataset's: its ids are taken as category ids
    pbtxt = tmp_path / "ids.pbtxt"
    pbtxt.write_text('item { id: 3 name: "x" }\nitem { id: 2 name: "y" }\n')
    by_id = _evaluate_cli(capsys, models["bare"], "--data", layouts["json"], "--images",
                          layouts["images"], "--labels", pbtxt)
    assert "label ids taken as category ids: 1 of 2" in by_id["class_mapping"]
    assert by_id["category_ids"] == [3]   # id 2 is no category of the data: only id 3 is


@pytest.mark.parametrize("text, message", [
    ('item { id: 1 name: "a" \n', r"not valid protobuf text format: .*never closed"),
    ('item { id: 1 name: "a" colour: "red" }\n', r"field 'colour'"),
    ('item { id: 1 name: "a" }\nitem { id: 1 name: "b" }\n',
     r"id 1 appears twice: items 1 and 2"),
    ('item { name: "a" }\n', r"item 1 \(a\) has no id"),
    ('item { id: 1 nmae: "a" }\n', r"nmae.*did you mean"),
])
def test_bad_label_map(text, message, tmp_path):
    from include.data.labels import read_labels

    path = tmp_path / "label_map.pbtxt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as exc:
        read_labels(path)
    assert str(path) in str(exc.value) and "Fix:" in str(exc.value)


@pytest.mark.parametrize("text, message", [
    ("alpha\nbeta\nalpha\n", r"'alpha' is on lines 1 and 3"),
    ("background\nalpha\n", r"line 1 is 'background'.*no background line"),
    ("alpha\n\nbeta\n", r"line 2 is empty"),
    ("\n\n", r"empty"),
])
def test_bad_labels_txt(text, message, tmp_path):
    from include.data.labels import read_labels

    path = tmp_path / "labels.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as exc:
        read_labels(path)
    assert "Fix:" in str(exc.value)


def test_labels_that_match_nothing(layouts, models, tmp_path, capsys):
    labels = tmp_path / "labels.pbtxt"
    labels.write_text('item { id: 50 name: "zebra" }\n')
    rc, _, err = _cli(["evaluate", "--model", str(models["bare"]), "--data",
                       str(layouts["json"]), "--images", str(layouts["images"]),
                       "--labels", str(labels)], capsys)
    assert rc == 2
    assert "no class of --labels" in err and "zebra" in err and "circle" in err
