"""The README's bad-input table: one row per input, each with the message a user sees.

Every row runs the code path the pipeline runs for that input (the stage or the reader a task
calls) and asserts the message names the problem and the fix. `python tests/test_bad_input.py`
prints the table as the README shows it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models import make_checkpoint

HERE = Path(__file__).parent
TFOD = HERE / "fixtures" / "tfod"


def _truncated_weights(tmp):
    from include.mobiledet.export import export_checkpoint

    ckpt = make_checkpoint(tmp / "ckpt", variant="edgetpu")
    weights = ckpt / "weights.h5"
    weights.write_bytes(weights.read_bytes()[:4096])
    export_checkpoint(ckpt, tmp / "export")


def _missing_checkpoint_json(tmp):
    from include.pipeline.steps.plan import describe_source

    ckpt = make_checkpoint(tmp / "ckpt", variant="edgetpu")
    (ckpt / "checkpoint.json").unlink()
    describe_source(ckpt)


def _edited_checkpoint_json(tmp, **changes):
    """A checkpoint whose checkpoint.json was edited by hand; the landing watcher and the plan
    read it the same way (include/mobiledet/checkpoint_meta.py)."""
    from include.pipeline.steps.plan import describe_source

    ckpt = make_checkpoint(tmp / "ckpt", variant="edgetpu")
    meta = json.loads((ckpt / "checkpoint.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            meta.pop(key)
        else:
            meta[key] = value
    (ckpt / "checkpoint.json").write_text(json.dumps(meta))
    describe_source(ckpt)


_DROP = object()


def _fingerprint_a_number(tmp):
    _edited_checkpoint_json(tmp, fingerprint=12345678901)


def _fingerprint_missing(tmp):
    _edited_checkpoint_json(tmp, fingerprint=_DROP)


def _num_classes_text(tmp):
    _edited_checkpoint_json(tmp, num_classes="abc")


def _input_size_absurd(tmp):
    _edited_checkpoint_json(tmp, input_size=100000)


def _huge_image(tmp):
    """A 20000 x 20000 PNG (only its header is real): refused before anything is decoded."""
    import struct
    import zlib

    from include.data.preprocess import load_image

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    png = tmp / "panorama.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000,
                                                                        8, 2, 0, 0, 0))
                    + chunk(b"IEND", b""))
    load_image(png)


def _non_coco_json(tmp):
    from include.data.coco import open_dataset

    (tmp / "data" / "annotations").mkdir(parents=True)
    (tmp / "data" / "annotations" / "instances_val.json").write_text(
        json.dumps({"rows": [{"file": "a.jpg", "label": "cat"}]}))
    open_dataset(tmp / "data")


def _undecodable_image(tmp):
    from include.data.preprocess import preprocess

    bad = tmp / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    preprocess(bad, 96)


def _unknown_feature_extractor(tmp):
    from include.convert.tfod import read_pipeline_config

    read_pipeline_config(TFOD / "unknown_feature_extractor.config")


def _integer_output_type(tmp):
    from include.convert.recipes import check_request

    check_request("int8", False, "uint8", True)


def _empty_calibration_folder(tmp):
    from include.convert.calibration import calibration_files

    (tmp / "calibration").mkdir()
    calibration_files(tmp / "calibration", 100)


def _unreachable_store(tmp, monkeypatch):
    from include.store import ArtifactStore
    from s3server import reset_airflow_fs_cache

    monkeypatch.setenv("AIRFLOW_CONN_S3_DOWN", json.dumps({
        "conn_type": "aws", "login": "k", "password": "s",
        "extra": {"endpoint_url": "http://127.0.0.1:9", "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}}))
    reset_airflow_fs_cache()
    ArtifactStore("s3://models/mobiledet", conn_id="s3_down").list("")


def _wrong_credentials(tmp, monkeypatch):
    """A real S3 server that checks credentials (moto with authentication on)."""
    from include.store import ArtifactStore
    from s3server import reset_airflow_fs_cache

    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="0")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                               str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_port(port, 60)
        monkeypatch.setenv("AIRFLOW_CONN_S3_WRONG", json.dumps({
            "conn_type": "aws", "login": "AKIAWRONGWRONGWRONG1", "password": "not-the-secret",
            "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1",
                      "config_kwargs": {"retries": {"max_attempts": 1}}}}))
        reset_airflow_fs_cache()
        ArtifactStore("s3://models/mobiledet", conn_id="s3_wrong").list("")
    finally:
        server.terminate()
        server.wait(timeout=30)


def _dotdot_checkpoint(tmp):
    from include.data.synth import synthesize
    from include.pipeline.steps.plan import plan

    synthesize(tmp / "data", 4, size=64, seed=0, val_fraction=0.5)
    plan({"checkpoints": ["s3://ckpts/landed/../../other-team/ckpt-9"], "data": str(tmp / "data"),
          "store": str(tmp / "store")}, "r")


def _zero_images(tmp):
    from include.data.synth import synthesize
    from include.pipeline.steps.plan import plan

    synthesize(tmp / "data", 4, size=64, seed=0, val_fraction=0.5)
    ann = tmp / "data" / "annotations" / "instances_val.json"
    doc = json.loads(ann.read_text())
    ann.write_text(json.dumps(dict(doc, images=[], annotations=[])))
    ckpt = make_checkpoint(tmp / "ckpt", variant="edgetpu")
    plan({"checkpoints": [str(ckpt)], "data": str(tmp / "data"), "store": str(tmp / "store")},
         "r")


_TFOD_CACHE: list = []


def _tfod_training_folder(tmp) -> Path:
    """A small TFOD EdgeTPU float training folder written by TF1's Saver (written once per
    process, copied per row)."""
    import tempfile

    from include.mobiledet.spec import ModelSpec
    from tfod_tf1 import write_checkpoint

    if not _TFOD_CACHE:
        root = Path(tempfile.mkdtemp(prefix="mobiledet-bad-tfod-")) / "train"
        write_checkpoint(root, ModelSpec("edgetpu", 3, 64, 0.25), step=1000)
        _TFOD_CACHE.append(root)
    folder = tmp / "train"
    shutil.copytree(_TFOD_CACHE[0], folder)
    return folder


def _tfod_other_architecture(tmp):
    """An ssd_mobilenet_v2 training checkpoint (TF1 Saver, its variable names) given with a
    MobileDet config."""
    import numpy as np
    import tensorflow as tf

    from include.mobiledet.spec import ModelSpec
    from include.tfod.importer import check_tfod
    from tfod_tf1 import tfod_config

    v1 = tf.compat.v1
    (tmp / "train").mkdir()
    with tf.Graph().as_default() as g:
        for name, shape in (("FeatureExtractor/MobilenetV2/Conv/weights", (3, 3, 3, 32)),
                            ("FeatureExtractor/MobilenetV2/Conv/BatchNorm/gamma", (32,)),
                            ("FeatureExtractor/MobilenetV2/expanded_conv/depthwise/"
                             "depthwise_weights", (3, 3, 32, 1)),
                            ("FeatureExtractor/MobilenetV2/layer_19_1_Conv2d_2_1x1_256/weights",
                             (1, 1, 1280, 256)),
                            ("BoxPredictor_0/BoxEncodingPredictor/weights", (1, 1, 576, 12))):
            v1.get_variable(name, initializer=np.zeros(shape, np.float32))
        v1.train.get_or_create_global_step()
        with v1.Session(graph=g) as sess:
            sess.run(v1.global_variables_initializer())
            prefix = v1.train.Saver().save(sess, str(tmp / "train" / "model.ckpt"),
                                           global_step=2000)
    config = tmp / "train" / "pipeline.config"
    config.write_text(tfod_config(ModelSpec("edgetpu", 3, 64, 0.25)))
    check_tfod(prefix, config)


def _tfod_missing_data(tmp):
    from include.tfod.training import import_training_dir

    folder = _tfod_training_folder(tmp)
    (folder / "model.ckpt-1000.data-00000-of-00001").unlink()
    import_training_dir(folder, tmp / "ckpt", step=1000)


def _tfod_truncated_data(tmp):
    from include.tfod.importer import import_tfod

    folder = _tfod_training_folder(tmp)
    data = folder / "model.ckpt-1000.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:4096])
    import_tfod(folder / "model.ckpt-1000", folder / "pipeline.config", tmp / "ckpt")


def _tfod_num_classes(tmp):
    from include.mobiledet.spec import ModelSpec
    from include.tfod.importer import import_tfod
    from tfod_tf1 import tfod_config

    folder = _tfod_training_folder(tmp)
    (folder / "pipeline.config").write_text(tfod_config(ModelSpec("edgetpu", 90, 64, 0.25)))
    import_tfod(folder / "model.ckpt-1000", folder / "pipeline.config", tmp / "ckpt")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, seconds: float) -> None:
    import socket

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"no server on port {port} after {seconds} s")


# (input, how to cause it, exception type name, words the message must hold)
ROWS = [
    ("truncated weights", _truncated_weights, "CheckpointError",
     ["weights.h5", "truncated", "Fix:"]),
    ("missing checkpoint.json", _missing_checkpoint_json, "CheckpointError",
     ["not a complete checkpoint", "checkpoint.json", "Fix:"]),
    ("non-COCO JSON", _non_coco_json, "DataError", ["instances_val.json", "images", "Fix:"]),
    ("an image that will not decode", _undecodable_image, "DataError",
     ["broken.jpg", "will not decode", "Fix:"]),
    ("an unknown feature extractor", _unknown_feature_extractor, "CheckpointError",
     ["ssd_mobilenet_v2", "ssd_mobiledet_edgetpu", "Fix:"]),
    ("an integer output type", _integer_output_type, "ConversionError",
     ["TFLite_Detection_PostProcess", "float32", "Fix:"]),
    ("an empty calibration folder", _empty_calibration_folder, "DataError",
     ["no images", "calibration", "Fix:"]),
    ("an unreachable store", _unreachable_store, "StoreError",
     ["s3://models/mobiledet", "endpoint_url", "Fix:"]),
    ("wrong credentials", _wrong_credentials, "StoreError",
     ["s3://models/mobiledet", "permission denied", "login/password", "Fix:"]),
    ("a checkpoint name with ../", _dotdot_checkpoint, "StoreError",
     ["'..'", "s3://ckpts/landed/../../other-team/ckpt-9", "Fix:"]),
    ("a dataset with 0 images", _zero_images, "DataError",
     ["0 images", "instances_val.json", "Fix:"]),
    ("checkpoint.json: a fingerprint that is a number", _fingerprint_a_number,
     "CheckpointError", ["checkpoint.json", "'fingerprint'", "12345678901", "Fix:"]),
    ("checkpoint.json: no fingerprint", _fingerprint_missing, "CheckpointError",
     ["checkpoint.json has no 'fingerprint'", "Fix:"]),
    ("checkpoint.json: num_classes \"abc\"", _num_classes_text, "CheckpointError",
     ["'num_classes'", "'abc'", "Fix:"]),
    ("checkpoint.json: an absurd input size", _input_size_absurd, "CheckpointError",
     ["'input_size'", "100000", "Fix:"]),
    ("a 20000 x 20000 image", _huge_image, "DataError",
     ["panorama.png", "20000 x 20000", "Mpx", "Fix:"]),
    ("a TFOD checkpoint of another architecture", _tfod_other_architecture, "CheckpointError",
     ["FeatureExtractor/MobilenetV2 (ssd_mobilenet_v2)", "ssd_mobiledet_edgetpu", "Fix:"]),
    ("a TFOD checkpoint without its .data file", _tfod_missing_data, "CheckpointError",
     ["model.ckpt-1000.data-00000-of-00001", "missing", "Fix:"]),
    ("a truncated TFOD .data file", _tfod_truncated_data, "CheckpointError",
     ["model.ckpt-1000.data-00000-of-00001", "truncated", "4096 bytes", "Fix:"]),
    ("num_classes against the TFOD class predictor", _tfod_num_classes, "CheckpointError",
     ["model.ssd.num_classes is 90", "BoxPredictor_0/ClassPredictor/biases", "12 outputs",
      "num_classes: 3", "Fix:"]),
]


def _message(cause, tmp, monkeypatch) -> Exception:
    from include.errors import MobiledetError

    args = (tmp, monkeypatch) if cause.__code__.co_argcount == 2 else (tmp,)
    with pytest.raises(MobiledetError) as info:
        cause(*args)
    return info.value


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input(row, tmp_path, monkeypatch):
    _, cause, kind, words = row
    exc = _message(cause, tmp_path, monkeypatch)
    assert type(exc).__name__ == kind, exc
    text = str(exc)
    for word in words:
        assert word in text, (word, text)


if __name__ == "__main__":  # print the README table
    import tempfile

    class _Env:
        def setenv(self, k, v):
            os.environ[k] = v

    sys.path.insert(0, str(HERE))
    print("| input | what the user sees |\n|---|---|")
    for name, cause, _, _ in ROWS:
        tmp = Path(tempfile.mkdtemp())
        try:
            args = (tmp, _Env()) if cause.__code__.co_argcount == 2 else (tmp,)
            cause(*args)
            text = "(no error!)"
        except Exception as exc:  # noqa: BLE001
            text = f"{type(exc).__name__}: {exc}".replace(str(tmp), "…").replace("|", "\\|")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"| {name} | {text} |")
