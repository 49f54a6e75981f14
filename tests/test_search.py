"""The int8 recipe search on the outlier case of test_quant_debug.py, and its bad inputs."""
from __future__ import annotations

import json

import pytest

import include  # noqa: F401  (TF_USE_LEGACY_KERAS before TensorFlow)
from include.errors import ConfigError, ConversionError
from test_quant_debug import CONSUMER_LAYER, OUTLIER_LAYER, _float_only_bundle, outlier_case


@pytest.fixture(scope="module")
def case():
    return outlier_case()


def test_search_finds_a_fallback_that_passes(case, tmp_path):
    from include.config import GateConfig
    from include.convert.recipes import conversion_json_path
    from include.convert.search import CANDIDATE_NAMES, search_int8, search_json_path

    gate = GateConfig()
    out = tmp_path / "int8" / "model.tflite"
    result = search_int8(case["export"], case["calibration"], case["data"], case["reference"],
                         out, gate_config=gate, calibration_count=8, benchmark_runs=5,
                         validate_images=2)
    rows = {r["candidate"]: r for r in result["candidates"]}
    assert [r["candidate"] for r in result["candidates"]] == list(CANDIDATE_NAMES)
    # plain int8 loses far more than the gate allows (0.05 AP50 for int8)
    plain = rows["plain"]
    assert plain["status"] == "fail" and plain["drop"] > 1.6 * gate.max_drop("int8"), plain
    assert rows["int16-activations"]["status"] == "skipped"      # EdgeTPU: 8-bit only
    # calibration changes and per-tensor weights cannot fix an outlier channel
    for name in ("more-calibration", "train-calibration", "per-tensor"):
        assert rows[name]["status"] == "fail", rows[name]
    assert rows["train-calibration"]["calibration"]["source"].endswith("instances_train.json")
    # one float layer is not enough (its consumer still quantizes the outlier), two are
    assert rows["float-worst-1"]["float_layers"] == [OUTLIER_LAYER]
    assert rows["float-worst-2"]["float_layers"] == [OUTLIER_LAYER, CONSUMER_LAYER]
    assert rows["float-worst-2"]["status"] == "pass", rows["float-worst-2"]
    assert result["passed"] and result["chosen"] in ("float-worst-2", "float-worst-4")
    chosen = rows[result["chosen"]]
    assert chosen["drop"] <= gate.max_drop("int8") and chosen["contract"] is True
    assert chosen["edgetpu"]["cut_layer"] == OUTLIER_LAYER
    for r in result["candidates"]:
        if r["status"] in ("pass", "fail"):
            assert r["size_bytes"] > 0 and r["latency_ms"] > 0 and r["edgetpu"]["mapped"]
    assert result["worst_layers"][0]["name"] == OUTLIER_LAYER
    # the published model and its provenance
    saved = json.loads(conversion_json_path(out).read_text())
    assert out.is_file() and saved["search"]["chosen"] == result["chosen"]
    assert [r["candidate"] for r in saved["search"]["candidates"]] == list(CANDIDATE_NAMES)
    assert saved["fallback"]["float_layers"][0]["name"] == OUTLIER_LAYER
    assert json.loads(search_json_path(out).read_text())["chosen"] == result["chosen"]
    json.dumps(result)  # JSON-safe for XCom
    assert not list(out.parent.glob(".*search-*"))   # candidates cleaned up


def test_search_budget_and_bad_input(case, tmp_path):
    from include.convert.search import search_int8

    for budget in (0, -1, True, 1.5):
        with pytest.raises(ConfigError, match="budget"):
            search_int8(case["export"], case["calibration"], case["data"], case["reference"],
                        tmp_path / "m.tflite", budget=budget)
    with pytest.raises(ConfigError, match="objective"):
        search_int8(case["export"], case["calibration"], case["data"], case["reference"],
                    tmp_path / "m.tflite", objective="cheapest")
    bundle = _float_only_bundle(tmp_path / "bundle")
    with pytest.raises(ConversionError):
        search_int8(bundle, case["calibration"], case["data"], case["reference"],
                    tmp_path / "m.tflite", budget=1)
    assert not (tmp_path / "m.tflite").exists()


def test_search_budget_one_lists_the_rest_and_cli_exit_code(case, tmp_path, capsys):
    from include.cli import main

    out = tmp_path / "m.tflite"
    rc = main(["convert", "--graph", str(case["export"]), "--precision", "int8", "--search",
               "--calibration", str(case["calibration"]), "--calibration-count", "8",
               "--data", str(case["data"]), "--reference", str(case["reference"]),
               "--budget", "1", "--max-images", "12", "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1 and not result["passed"] and not out.exists()
    assert result["tried"] == 1
    statuses = {r["candidate"]: r["status"] for r in result["candidates"]}
    assert statuses["plain"] == "fail" and statuses["float-worst-2"] == "not tried"
    assert (tmp_path / "m.search.json").is_file()
