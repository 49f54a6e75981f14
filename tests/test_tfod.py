"""TFOD pipeline.config (text-format parser, reader, writer) and graph sources (open_graph)."""
from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

import include  # noqa: F401
from include.convert.tfod import (EnumValue, TextProtoError, first, format_label_map,
                                  format_text_proto, has, parse_text_proto, read_label_map,
                                  read_pipeline_config, values, write_pipeline_config)
from include.errors import CheckpointError, ConfigError
from include.mobiledet.spec import VARIANTS, ModelSpec

FIXTURES = Path(__file__).parent / "fixtures" / "tfod"
SAMPLES = {v: FIXTURES / f"ssdlite_mobiledet_{v}_320x320_coco_sync_4x4.config" for v in VARIANTS}
QAT_SAMPLES = {"edgetpu", "dsp"}


def _load_make_bundle():
    name = "tfod_make_bundle"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FIXTURES / "make_bundle.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def mb():
    return _load_make_bundle()


# ====================================================================== text-format parser
@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.config")
                                        if "malformed" not in p.name))
def test_every_wellformed_fixture_parses(name):
    raw = parse_text_proto((FIXTURES / name).read_text())
    assert set(raw) >= {"model", "train_config", "eval_config"}
    # the header comment is gone, nested messages are dicts
    assert isinstance(first(raw, "model.ssd.feature_extractor"), dict)
    # repeated messages keep their order
    augs = values(raw, "train_config.data_augmentation_options")
    assert [next(iter(a)) for a in augs] == ["random_horizontal_flip", "ssd_random_crop"]
    assert augs[0]["random_horizontal_flip"] == [{}]
    # repeated scalars and the [...] list syntax give the same list
    assert values(raw, "model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios") == \
        [1.0, 2.0, 0.5, 3.0, 0.3333]
    # trailing commas / semicolons as separators; enums; bools; negative floats; 1e-8
    assert first(raw, "model.ssd.box_predictor.convolutional_box_predictor.conv_hyperparams."
                      "batch_norm.epsilon") == 0.001
    assert first(raw, "model.ssd.post_processing.score_converter") == "SIGMOID"
    assert isinstance(first(raw, "model.ssd.post_processing.score_converter"), EnumValue)
    assert first(raw, "model.ssd.matcher.argmax_matcher.force_match_for_each_row") is True
    assert first(raw, "model.ssd.box_predictor.convolutional_box_predictor."
                      "class_prediction_bias_init") == -4.6
    assert first(raw, "model.ssd.post_processing.batch_non_max_suppression.score_threshold") == 1e-8
    assert first(raw, "model.ssd.matcher.argmax_matcher.unmatched_threshold") == 0.5
    # ints stay ints, floats stay floats
    assert first(raw, "train_config.num_steps") == 400000
    assert isinstance(first(raw, "model.ssd.num_classes"), int)
    assert isinstance(first(raw, "model.ssd.feature_extractor.depth_multiplier"), float)


def test_parser_quotes_and_escapes():
    gpu = parse_text_proto(SAMPLES["gpu"].read_text())
    assert first(gpu, "eval_config.visualization_export_dir") == 'exports\t"gpu"\\runAB'
    edgetpu = parse_text_proto(SAMPLES["edgetpu"].read_text())
    assert first(edgetpu, "model.ssd.feature_extractor.type") == "ssd_mobiledet_edgetpu"
    raw = parse_text_proto(r'''
        a: "tab\there" b: 'it\'s' c: "\u00e9\303\251" d: "con" 'cat' "enated"
        e: "#not a comment"  # a comment
        f: "\x41\102\n"
    ''')
    assert raw == {"a": ["tab\there"], "b": ["it's"], "c": ["éé"], "d": ["concatenated"],
                   "e": ["#not a comment"], "f": ["AB\n"]}


def test_parser_other_syntax():
    raw = parse_text_proto("""
        angle < x: 1 inner < y: true > >
        empty_list: []
        msgs: [ { k: 1 }, { k: 2 } ]
        nums: [1, -2.5, 0x1F, 1.5f, -inf, nan]
        colon_msg: { z: FOO }, after: 3;
    """)
    assert raw["angle"] == [{"x": [1], "inner": [{"y": [True]}]}]
    assert "empty_list" in raw and raw["empty_list"] == []
    assert raw["msgs"] == [{"k": [1]}, {"k": [2]}]
    n = raw["nums"]
    assert n[:4] == [1, -2.5, 31, 1.5] and n[4] == -math.inf and math.isnan(n[5])
    assert raw["colon_msg"] == [{"z": ["FOO"]}] and raw["after"] == [3]
    assert has(raw, "angle.inner.y") and not has(raw, "angle.nope")
    assert first(raw, "angle.nope", None) is None
    with pytest.raises(KeyError):
        first(raw, "angle.nope")


@pytest.mark.parametrize("text, line, col, words", [
    ("a {\n  b: 1\n", 1, 3, ["'{' of 'a' is never closed"]),
    ("a { b: 1 }\n}", 2, 1, ["closes nothing"]),
    ("a: 1\nb 2", 2, 3, ["expected ':' or '{'", "'b'"]),
    ('a: "open\nb: 1', 1, 4, ["not closed on its line"]),
    ("a: [1, 2 }", 1, 10, ["expected ',' or ']'"]),
    ("a: 1\n  @b: 2", 2, 3, ["unexpected character '@'"]),
    ("a < b: 1 }", 1, 10, ["does not close '<'"]),
    ('a: "bad \\q"', 1, 9, ["unknown escape"]),
    ("a:", 1, 3, ["expected a value for 'a'"]),
])
def test_parser_errors_name_line_and_column(text, line, col, words):
    with pytest.raises(TextProtoError) as info:
        parse_text_proto(text, source="x.config")
    err = info.value
    assert isinstance(err, ConfigError)
    assert (err.line, err.column) == (line, col), str(err)
    assert f"x.config, line {line}, column {col}" in str(err)
    for w in words:
        assert w in str(err)


def test_format_text_proto_round_trips_every_fixture():
    for path in SAMPLES.values():
        raw = parse_text_proto(path.read_text())
        assert parse_text_proto(format_text_proto(raw)) == raw
    tricky = {"s": ['q"uote\\ \n\t\x01 é'], "e": [EnumValue("RELU_6")], "f": [1e-8, 2.0, -0.5],
              "b": [True, False], "m": [{}, {"x": [1]}]}
    assert parse_text_proto(format_text_proto(tricky)) == tricky


# ====================================================================== read_pipeline_config
@pytest.mark.parametrize("variant", VARIANTS)
def test_read_sample_configs(variant):
    cfg = read_pipeline_config(SAMPLES[variant])
    assert cfg["variant"] == variant
    assert cfg["feature_extractor_type"] == f"ssd_mobiledet_{variant}"
    assert (cfg["num_classes"], cfg["input_size"], cfg["depth_multiplier"]) == (90, 320, 1.0)
    assert cfg["spec"] == ModelSpec(variant, 90, 320, 1.0)
    assert cfg["qat"] is (variant in QAT_SAMPLES)
    if cfg["qat"]:
        assert cfg["qat_settings"] == {"delay": 0, "weight_bits": 8, "activation_bits": 8,
                                       "symmetric": False}
    else:
        assert cfg["qat_settings"] is None
    assert cfg["postprocess"] == {"score_threshold": 1e-8, "iou_threshold": 0.6,
                                  "max_detections_per_class": 100, "max_total_detections": 100,
                                  "score_converter": "SIGMOID"}
    assert cfg["anchors"]["num_layers"] == 6
    assert (cfg["anchors"]["min_scale"], cfg["anchors"]["max_scale"]) == (0.2, 0.95)
    assert cfg["anchors"]["aspect_ratios"] == [1.0, 2.0, 0.5, 3.0, 0.3333]
    assert cfg["box_coder"]["y_scale"] == 10.0 and cfg["box_coder"]["width_scale"] == 5.0
    assert cfg["label_map_path"] == "PATH_TO_BE_CONFIGURED/mscoco_label_map.pbtxt"
    assert cfg["label_map"] is None
    assert first(cfg["raw"], "train_config.batch_size") == 512


def test_unknown_feature_extractor():
    path = FIXTURES / "unknown_feature_extractor.config"
    with pytest.raises(CheckpointError) as info:
        read_pipeline_config(path)
    msg = str(info.value)
    assert str(path) in msg
    assert "model.ssd.feature_extractor.type" in msg and "'ssd_mobilenet_v2'" in msg
    for t in ("ssd_mobiledet_cpu", "ssd_mobiledet_edgetpu", "ssd_mobiledet_dsp",
              "ssd_mobiledet_gpu"):
        assert t in msg
    assert "Fix:" in msg


def test_malformed_config_names_line_column_and_likely_spot():
    path = FIXTURES / "malformed_unbalanced_brace.config"
    with pytest.raises(CheckpointError) as info:
        read_pipeline_config(path)
    msg = str(info.value)
    assert f"{path}, line 12, column 7" in msg  # the `model {` that never closes
    assert "'model' is never closed" in msg
    assert "'faster_rcnn_box_coder' (line 18)" in msg and "before line 23" in msg
    assert "add the missing '}'" in msg


def test_non_square_resizer():
    path = FIXTURES / "non_square_resizer.config"
    with pytest.raises(CheckpointError) as info:
        read_pipeline_config(path)
    msg = str(info.value)
    assert str(path) in msg and "fixed_shape_resizer" in msg and "320x256" in msg
    assert "height == width" in msg


def _edited(tmp_path, old, new, base="cpu"):
    text = SAMPLES[base].read_text()
    assert old in text
    path = tmp_path / "pipeline.config"
    path.write_text(text.replace(old, new))
    return path


@pytest.mark.parametrize("old, new, words", [
    ("num_classes: 90", "num_classes: 90.5", ["model.ssd.num_classes", "whole number", "90.5"]),
    ("num_classes: 90", "", ["model.ssd.num_classes is missing"]),
    ("fixed_shape_resizer {\n        height: 320\n        width: 320\n      }",
     "keep_aspect_ratio_resizer {\n        min_dimension: 320\n      }",
     ["fixed_shape_resizer", "keep_aspect_ratio_resizer"]),
    ("height: 320\n        width: 320", "height: 300\n        width: 300",
     ["model.ssd.image_resizer.fixed_shape_resizer.height/width", "multiple of 32", "300"]),
    ("type: \"ssd_mobiledet_cpu\"", "type: SSD_MOBILEDET_CPU",
     ["model.ssd.feature_extractor.type must be a quoted string", "SSD_MOBILEDET_CPU"]),
    ("model {\n  ssd {", "model {\n  faster_rcnn {", ["model.ssd is missing", "faster_rcnn"]),
])
def test_bad_config_fields(tmp_path, old, new, words):
    path = _edited(tmp_path, old, new)
    with pytest.raises(CheckpointError) as info:
        read_pipeline_config(path)
    msg = str(info.value)
    assert str(path) in msg and "Fix:" in msg
    for w in words:
        assert w in msg, msg


def test_missing_or_binary_config(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_pipeline_config(tmp_path / "nope.config")
    (tmp_path / "bin.config").write_bytes(b"\x80\x81\x00model")
    with pytest.raises(CheckpointError, match="not UTF-8"):
        read_pipeline_config(tmp_path / "bin.config")


def test_defaults_when_fields_are_absent(tmp_path):
    path = tmp_path / "pipeline.config"
    path.write_text("model { ssd { num_classes: 7 feature_extractor { type: 'ssd_mobiledet_gpu' }"
                    " image_resizer { fixed_shape_resizer { height: 320 width: 320 } } } }\n"
                    "graph_rewriter { quantization { } }\n")
    cfg = read_pipeline_config(path)
    assert cfg["spec"] == ModelSpec("gpu", 7, 320, 1.0)
    assert cfg["qat"] and cfg["qat_settings"]["delay"] == 500000  # the proto's default
    assert cfg["postprocess"] is None and cfg["anchors"] is None and cfg["label_map_path"] is None


# ====================================================================== the schema (text_format)
@pytest.mark.parametrize("old, new, line, words", [
    # closed message: any unknown name is refused, with the nearest valid one
    ("height: 320", "hieght: 320", 54,
     ["'model.ssd.image_resizer.fixed_shape_resizer.hieght'",
      "Did you mean model.ssd.image_resizer.fixed_shape_resizer.height?", "write height"]),
    ("model {", "modle {", 12, ["unknown field 'modle'", "Did you mean model?"]),
    # open message: a near miss of a field this reader needs is refused too
    ("    feature_extractor {", "    feature_extractr {", 93,
     ["'model.ssd.feature_extractr'", "did you mean model.ssd.feature_extractor?"]),
    ("".join(f"        aspect_ratios: {r}\n" for r in (1.0, 2.0, 0.5, 3.0, 0.3333)),
     "        aspect_ratio: 1.0\n", 45,
     ["did you mean model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios?"]),
    # types, enum values, a field twice, two alternatives of a oneof
    ("score_converter: SIGMOID", "score_converter: SIGMOD", 146,
     ["model.ssd.post_processing.score_converter must be one of IDENTITY, SIGMOID, SOFTMAX",
      "got SIGMOD", "Did you mean SIGMOID?"]),
    ("y_scale: 10.0", "y_scale: true", 19,
     ["model.ssd.box_coder.faster_rcnn_box_coder.y_scale must be a number, got true"]),
    ("num_classes: 90", "num_classes: 90\n    num_classes: 91", 17,
     ["model.ssd.num_classes is set more than once"]),
    ("      fixed_shape_resizer {", "      keep_aspect_ratio_resizer { }\n      fixed_shape_resizer {",
     54, ["model.ssd.image_resizer sets both keep_aspect_ratio_resizer and fixed_shape_resizer"]),
])
def test_schema_errors_name_line_field_and_fix(tmp_path, old, new, line, words):
    path = _edited(tmp_path, old, new)
    with pytest.raises(CheckpointError) as info:
        read_pipeline_config(path)
    msg = str(info.value)
    assert f"{path}, line {line}, column" in msg and "Fix:" in msg, msg
    for w in words:
        assert w in msg, msg


def test_tfod_fields_the_reader_does_not_read_are_kept_opaque(tmp_path):
    """Configs from other TFOD versions and fine-tuning set fields this product never reads:
    they load, stay in `raw` as written, and are not interpreted."""
    path = _edited(tmp_path, "  batch_size: 512\n",
                   "  batch_size: 512\n  fine_tune_checkpoint: 'ckpt/model.ckpt-0'\n"
                   "  fine_tune_checkpoint_type: \"detection\"\n  use_bfloat16: false\n"
                   "  some_future_field { nested: [1, 2] deeper { x: FOO } }\n")
    text = path.read_text().replace(
        "    num_classes: 90\n",
        "    num_classes: 90\n    add_background_class: true\n"
        "    explicit_background_class: false\n")
    text = text.replace("      min_depth: 16\n", "      min_depth: 16\n      pad_to_multiple: 1\n"
                        "      use_explicit_padding: false\n")
    text = text.replace("        use_static_shapes: true\n",
                        "        use_static_shapes: true\n        use_class_agnostic_nms: false\n")
    path.write_text(text)
    cfg = read_pipeline_config(path)
    assert cfg["spec"] == ModelSpec("cpu", 90, 320, 1.0)
    raw = cfg["raw"]
    assert first(raw, "train_config.fine_tune_checkpoint") == "ckpt/model.ckpt-0"
    assert first(raw, "train_config.some_future_field.deeper.x") == "FOO"
    assert first(raw, "model.ssd.add_background_class") is True
    assert first(raw, "model.ssd.feature_extractor.pad_to_multiple") == 1
    assert cfg["postprocess"]["max_total_detections"] == 100


def test_typed_message_agrees_with_the_raw_dict():
    from include.convert import tfod_schema
    from include.convert.textproto import parse_message

    for variant, path in SAMPLES.items():
        msg, raw = parse_message(path.read_text(), tfod_schema.TrainEvalPipelineConfig(),
                                 source=path, open_types=tfod_schema.OPEN_TYPES)
        assert raw == parse_text_proto(path.read_text())
        ssd = msg.model.ssd
        assert ssd.num_classes == first(raw, "model.ssd.num_classes")
        assert ssd.feature_extractor.type == f"ssd_mobiledet_{variant}"
        assert list(ssd.anchor_generator.ssd_anchor_generator.aspect_ratios) == \
            values(raw, "model.ssd.anchor_generator.ssd_anchor_generator.aspect_ratios")
        # absent fields read as TFOD's proto2 defaults
        assert ssd.anchor_generator.ssd_anchor_generator.interpolated_scale_aspect_ratio == 1.0
        assert msg.graph_rewriter.HasField("quantization") is (variant in QAT_SAMPLES)
        # opaque messages are kept out of the typed message
        assert not msg.train_config.ListFields() and msg.HasField("train_config")


def test_label_map_against_the_schema(tmp_path):
    bad = tmp_path / "label_map.pbtxt"
    bad.write_text('item {\n  id: 1\n  name: "person"\n}\nitem {\n  id: "two"\n}\n')
    with pytest.raises(CheckpointError) as info:
        read_label_map(bad)
    assert f"{bad}, line 6, column" in str(info.value) and "item.id must be a whole number" in \
        str(info.value)
    bad.write_text('item { id: 1 nmae: "person" }\n')
    with pytest.raises(CheckpointError, match="did you mean item.name"):
        read_label_map(bad)
    bad.write_text('item { id: 1 name: "x" display_name: "Person" frequency: FREQUENT }\n')
    assert read_label_map(bad) == {0: {"name": "Person", "category_id": 1}}
    bad.write_text('item { id: 1 name: "x" ')
    with pytest.raises(CheckpointError, match="label map is not valid text format"):
        read_label_map(bad)


# ====================================================================== write_pipeline_config
LABELS = {0: {"name": "person", "category_id": 1}, 1: {"name": "stop \"sign\"", "category_id": 13},
          "2": {"name": "café", "category_id": 90}}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("qat", [False, True])
def test_write_read_round_trip(tmp_path, variant, qat):
    spec = ModelSpec(variant, 3, 96, 0.25)
    path = write_pipeline_config(tmp_path / "pipeline.config", spec, qat=qat, label_map=LABELS,
                                 steps=1234)
    cfg = read_pipeline_config(path)
    assert cfg["spec"] == spec and cfg["qat"] is qat
    assert cfg["label_map"] == {0: LABELS[0], 1: LABELS[1], 2: LABELS["2"]}
    raw = cfg["raw"]
    assert first(raw, "train_config.num_steps") == 1234
    assert first(raw, "model.ssd.feature_extractor.min_depth") == 16
    assert first(raw, "model.ssd.box_predictor.convolutional_box_predictor."
                      "class_prediction_bias_init") == -4.6
    assert first(raw, "model.ssd.loss.classification_loss.weighted_sigmoid_focal.alpha") == 0.75
    assert first(raw, "model.ssd.feature_extractor.conv_hyperparams.activation") == "RELU_6"
    assert first(raw, "train_config.optimizer.momentum_optimizer.learning_rate."
                      "cosine_decay_learning_rate.total_steps") == 1234
    assert len(values(raw, "train_config.data_augmentation_options")) == 2
    assert cfg["anchors"]["reduce_boxes_in_lowest_layer"] is True
    assert cfg["postprocess"]["score_converter"] == "SIGMOID"
    if qat:
        assert cfg["qat_settings"] == {"delay": 0, "weight_bits": 8, "activation_bits": 8,
                                       "symmetric": False}
    assert not list(tmp_path.glob(".*partial"))


def test_write_rejects_bad_label_map(tmp_path):
    with pytest.raises(ConfigError, match="label map entry"):
        write_pipeline_config(tmp_path / "p.config", ModelSpec(), qat=False,
                              label_map={0: {"name": "x"}}, steps=1)
    assert not (tmp_path / "p.config").exists()


def test_label_map_pbtxt():
    lm = read_label_map(FIXTURES / "label_map.pbtxt")
    assert lm[0] == {"name": "person", "category_id": 1}
    assert lm[12] == {"name": "stop sign", "category_id": 13}  # TFOD: class index = id - 1
    assert len(lm) == 6
    text = format_label_map({0: {"name": "a", "category_id": 5}, 1: {"name": "b", "category_id": 9}})
    assert "id: 1" in text and "category_id 5" in text


# ====================================================================== open_graph
def test_tfod_bundle_float(tmp_path, mb):
    from include.convert.source import open_graph

    labels = {0: {"name": "a", "category_id": 1}, 1: {"name": "b", "category_id": 2}}
    folder = mb.make_tfod_bundle(tmp_path / "b", variant="dsp", num_classes=2, input_size=64,
                                 label_map=labels)
    src = open_graph(folder)
    assert src.kind == "tfod" and src.spec == ModelSpec("dsp", 2, 64, 0.25)
    assert src.qat is False and src.has_fake_quant is False
    assert src.input_name == "normalized_input_image_tensor"
    assert src.input_shape == (1, 64, 64, 3)
    assert src.output_names == ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
                                "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3")
    pp = src.postprocess
    assert pp["num_classes"] == 2 and pp["max_detections"] == 10
    assert pp["nms_iou_threshold"] == 0.6 and pp["nms_score_threshold"] == 1e-8
    assert (pp["y_scale"], pp["x_scale"], pp["h_scale"], pp["w_scale"]) == (10, 10, 5, 5)
    assert pp["use_regular_nms"] is False and pp["_output_quantized"] is True
    assert src.num_anchors == 64 and src.label_map == labels
    assert src.fingerprint == mb.hashlib.sha256(src.graph_path.read_bytes()).hexdigest()
    d = json.loads(json.dumps(src.to_dict()))
    assert d["spec"]["variant"] == "dsp" and d["kind"] == "tfod" and d["input_shape"] == [1, 64, 64, 3]
    # the tflite_graph.pb itself is accepted too
    assert open_graph(src.graph_path).path == folder


def test_tfod_bundle_qat_and_cross_check(tmp_path, mb):
    from include.convert.source import open_graph

    src = open_graph(mb.make_tfod_bundle(tmp_path / "qat", qat=True))
    assert src.qat and src.has_fake_quant and src.fake_quant_nodes == 3 and src.label_map is None

    folder = mb.make_tfod_bundle(tmp_path / "cfg_qat_graph_float", qat=True, graph_qat=False)
    with pytest.raises(CheckpointError) as info:
        open_graph(folder)
    msg = str(info.value)
    assert "pipeline.config declares quantization-aware training" in msg
    assert "no FakeQuantWithMinMax" in msg and "tflite_graph.pb" in msg

    folder = mb.make_tfod_bundle(tmp_path / "cfg_float_graph_qat", qat=False, graph_qat=True)
    with pytest.raises(CheckpointError) as info:
        open_graph(folder)
    msg = str(info.value)
    assert "no graph_rewriter" in msg and "3 FakeQuantWithMinMax" in msg


def test_tfod_bundle_num_classes_disagree(tmp_path, mb):
    from include.convert.source import open_graph

    folder = mb.make_tfod_bundle(tmp_path / "b", num_classes=3, graph_num_classes=5)
    with pytest.raises(CheckpointError) as info:
        open_graph(folder)
    msg = str(info.value)
    assert "num_classes=5" in msg and "model.ssd.num_classes" in msg and "says 3" in msg


def test_tfod_bundle_notes_on_box_coder_mismatch(tmp_path, mb):
    from include.convert.source import open_graph

    folder = mb.make_tfod_bundle(tmp_path / "b", postprocess={"h_scale": 4.0})
    src = open_graph(folder)
    assert any("h_scale=4.0" in n for n in src.notes)


def test_export_folder(tmp_path, mb):
    from include.convert.source import open_graph

    folder = mb.make_export_folder(tmp_path / "e", variant="cpu", num_classes=3, qat=True)
    src = open_graph(folder)
    assert src.kind == "export" and src.spec == ModelSpec("cpu", 3, 64, 0.25) and src.qat
    assert src.label_map[2] == {"name": "class2", "category_id": 3}
    assert src.checkpoint["uri"] == "file:///tmp/ckpt"
    assert src.fingerprint == json.loads((folder / "export.json").read_text())["graph_sha256"]
    assert src.input_shape == (1, 64, 64, 3) and len(src.output_names) == 4
    # without pipeline.config it still opens (export.json is authoritative)
    folder2 = mb.make_export_folder(tmp_path / "e2", with_config=False)
    assert open_graph(folder2).config_path is None


def test_export_folder_disagreements(tmp_path, mb):
    from include.convert.source import open_graph

    folder = mb.make_export_folder(tmp_path / "a", qat=False, export_qat=True)
    with pytest.raises(CheckpointError, match="export.json says qat=true but pipeline.config has no"):
        open_graph(folder)
    (folder / "pipeline.config").unlink()
    with pytest.raises(CheckpointError) as info:
        open_graph(folder)
    assert "export.json says qat=true, but tflite_graph.pb has no FakeQuant" in str(info.value)

    folder = mb.make_export_folder(tmp_path / "b")
    data = (folder / "tflite_graph.pb").read_bytes()
    (folder / "tflite_graph.pb").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="does not match the graph_sha256"):
        open_graph(folder)

    folder = mb.make_export_folder(tmp_path / "c")
    info = json.loads((folder / "export.json").read_text())
    info["spec"]["num_classes"] = 4
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="pipeline.config describes cpu, 3 classes"):
        open_graph(folder)
    (folder / "pipeline.config").unlink()
    with pytest.raises(CheckpointError, match=r"num_classes=3 but export.json \(spec.num_classes\)"):
        open_graph(folder)

    folder = mb.make_export_folder(tmp_path / "d")
    info = json.loads((folder / "export.json").read_text())
    del info["outputs"]
    (folder / "export.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="lacks the field.*outputs"):
        open_graph(folder)
    (folder / "export.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        open_graph(folder)


def test_open_graph_bad_folders(tmp_path, mb):
    from include.convert.source import open_graph

    with pytest.raises(CheckpointError, match="does not exist"):
        open_graph(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointError) as info:
        open_graph(empty)
    msg = str(info.value)
    assert "no tflite_graph.pb" in msg and "export.json" in msg and "pipeline.config" in msg
    assert "export_tflite_ssd_graph.py" in msg

    folder = mb.make_tfod_bundle(tmp_path / "noconfig")
    (folder / "pipeline.config").unlink()
    with pytest.raises(CheckpointError, match="neither export.json nor pipeline.config"):
        open_graph(folder)

    folder = mb.make_tfod_bundle(tmp_path / "truncated")
    data = (folder / "tflite_graph.pb").read_bytes()
    (folder / "tflite_graph.pb").write_bytes(data[: len(data) - 7])
    with pytest.raises(CheckpointError, match="not a readable GraphDef.*truncated"):
        open_graph(folder)

    folder = mb.make_tfod_bundle(tmp_path / "nopp", with_postprocess=False)
    with pytest.raises(CheckpointError) as info:
        open_graph(folder)
    msg = str(info.value)
    assert "no TFLite_Detection_PostProcess node" in msg
    assert "mobiledet export" in msg and "export_tflite_ssd_graph.py" in msg

    folder = mb.make_tfod_bundle(tmp_path / "badcfg", variant="cpu")
    cfg = folder / "pipeline.config"
    cfg.write_text(cfg.read_text().replace("ssd_mobiledet_cpu", "ssd_mobilenet_v2"))
    with pytest.raises(CheckpointError, match="model.ssd.feature_extractor.type"):
        open_graph(folder)


def test_tiny_bundle_converts_and_runs(tmp_path, mb):
    """The tiny TFOD bundle is a real TFLite-ready graph: it converts and the custom op runs."""
    import numpy as np
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from include.convert.source import open_graph

    src = open_graph(mb.make_tfod_bundle(tmp_path / "b", num_classes=3))
    conv = tf.compat.v1.lite.TFLiteConverter.from_frozen_graph(
        str(src.graph_path), [src.input_name], list(src.output_names),
        input_shapes={src.input_name: list(src.input_shape)})
    conv.allow_custom_ops = True
    interp = Interpreter(model_content=conv.convert())
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    assert list(inp["shape"]) == [1, 64, 64, 3]
    interp.set_tensor(inp["index"], np.random.default_rng(0).uniform(-1, 1, (1, 64, 64, 3))
                      .astype(np.float32))
    interp.invoke()
    outs = [interp.get_tensor(o["index"]) for o in interp.get_output_details()]
    assert [list(o.shape) for o in outs] == [[1, 10, 4], [1, 10], [1, 10], [1]]
    boxes, classes, scores, count = outs
    assert 0 < count[0] <= 10 and np.all((classes >= 0) & (classes < 3))
    assert np.all((scores >= 0) & (scores <= 1))
