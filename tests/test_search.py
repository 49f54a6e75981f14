"""The int8 recipe search on the outlier case of test_quant_debug.py, the Edge TPU fallback
rule, and its bad inputs.

The Edge TPU rule (include/convert/search.py): a float layer makes the Edge TPU compiler cut the
graph there, so under `gates.require_edgetpu_mapped` (the default) a float-fallback candidate is
rejected by the search with a verdict naming the cut; with it false the candidate may pass and
its row shows the mapped-op cost.
"""
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

    gate = GateConfig(require_edgetpu_mapped=False)   # accept the Edge TPU cut, show its cost
    out = tmp_path / "int8" / "model.tflite"
    result = search_int8(case["export"], case["calibration"], case["data"], case["reference"],
                         out, gate_config=gate, calibration_count=8, benchmark_runs=5,
                         validate_images=2)
    rows = {r["candidate"]: r for r in result["candidates"]}
    assert [r["candidate"] for r in result["candidates"]] == list(CANDIDATE_NAMES)
    # plain int8 loses far more than the gate allows (0.05 AP50 for int8; measured 0.48)
    plain = rows["plain"]
    assert plain["status"] == "fail" and plain["drop"] > 5 * gate.max_drop("int8"), plain
    assert plain["agreement"] < 1 - 5 * gate.max_drop("int8"), plain
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
    # a clear margin between plain int8 and the choice (measured 0.48 vs 0.02)
    assert plain["drop"] - chosen["drop"] > 4 * gate.max_drop("int8"), (plain, chosen)
    assert chosen["edgetpu"]["cut_layer"] == OUTLIER_LAYER
    # the cut is accepted (require_edgetpu_mapped false) and its cost is in the row
    tpu = chosen["edgetpu"]
    assert tpu["unexpected_on_cpu"] > 100 and tpu["ops_on_tpu"] < 10, tpu
    assert chosen["edgetpu_gate"]["status"] == "off" and chosen["edgetpu_gate"]["value"] > 100
    assert f"Edge TPU cut at {OUTLIER_LAYER}: " in chosen["verdict"]
    assert "require_edgetpu_mapped is false: accepted" in chosen["verdict"]
    assert rows["plain"]["edgetpu_gate"]["status"] == "pass"      # plain int8 maps fully
    assert result["gate"]["require_edgetpu_mapped"] is False
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


def test_search_under_the_default_gate_rejects_the_edgetpu_cut(case, tmp_path, capsys):
    """The CLI with the default gate (require_edgetpu_mapped): the two float layers that fix the
    accuracy leave all but a few ops on the CPU, so no candidate passes; the budget (6: up to
    float-worst-2) leaves float-worst-4 untried; exit code 1, nothing but the table written."""
    from include.cli import main
    from include.config import GateConfig
    from include.convert.search import format_search

    out = tmp_path / "m.tflite"
    rc = main(["convert", "--graph", str(case["export"]), "--precision", "int8", "--search",
               "--calibration", str(case["calibration"]), "--calibration-count", "8",
               "--data", str(case["data"]), "--reference", str(case["reference"]),
               "--budget", "6", "--out", str(out), "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 1 and not result["passed"] and not out.exists()
    assert result["tried"] == 6 and result["gate"]["require_edgetpu_mapped"] is True
    rows = {r["candidate"]: r for r in result["candidates"]}
    assert rows["plain"]["status"] == "fail" and rows["float-worst-4"]["status"] == "not tried"
    assert rows["plain"].get("rejected_by") is None        # plain fails on accuracy
    fw2 = rows["float-worst-2"]
    # within the accuracy gate, rejected only for the cut, and the verdict says so
    assert fw2["drop"] <= GateConfig().max_drop("int8") and fw2["contract"] is True, fw2
    assert fw2["status"] == "fail" and fw2["rejected_by"] == "edgetpu_mapping", fw2
    assert fw2["edgetpu_gate"] == {**fw2["edgetpu_gate"], "status": "fail", "passed": False}
    assert f"Edge TPU cut at {OUTLIER_LAYER}: " in fw2["verdict"]
    assert "require_edgetpu_mapped is true" in fw2["verdict"]
    assert f"{fw2['edgetpu']['unexpected_on_cpu']} op(s) after it on the CPU" in fw2["verdict"]
    assert "rejected for the Edge TPU cut: float-worst-2" in format_search(result)
    assert (tmp_path / "m.search.json").is_file()


def test_edgetpu_mapping_rule_on_counts():
    """The rule the search applies is the gate's own check on the prediction's counts."""
    from include.config import GateConfig
    from include.gates import edgetpu_mapping_check

    full = {"ops_total": 127, "ops_on_tpu": 126, "ops_on_cpu": 1}
    cut = {"ops_total": 129, "ops_on_tpu": 4, "ops_on_cpu": 125}
    assert edgetpu_mapping_check(full, GateConfig()).status == "pass"
    strict = edgetpu_mapping_check(cut, GateConfig())
    assert not strict.passed and strict.value == 124 and "offline prediction" in strict.detail
    relaxed = edgetpu_mapping_check(cut, GateConfig(require_edgetpu_mapped=False))
    assert relaxed.passed and relaxed.status == "off" and relaxed.value == 124
    off = edgetpu_mapping_check(cut, GateConfig(edgetpu="off"))
    assert off.passed and off.status == "off"


def test_the_regate_reason_says_a_candidate_was_turned_down_for_the_edge_tpu_cut():
    """The DAG's rejection reason lists every candidate; one within the accuracy gate but cut
    on the Edge TPU must say so, or the reason reads as if a passing recipe was ignored."""
    from include.pipeline.steps.search import candidates_text

    text = candidates_text({"candidates": [
        {"candidate": "plain", "status": "fail", "drop": 0.442},
        {"candidate": "float-worst-2", "status": "fail", "drop": 0.006,
         "rejected_by": "edgetpu_mapping"},
        {"candidate": "int16-activations", "status": "skipped"}]})
    assert text == ("plain: fail (drop +0.442), float-worst-2: fail (drop +0.006, rejected for "
                    "the Edge TPU cut), int16-activations: skipped")
