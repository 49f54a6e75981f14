"""Edge TPU: compiler log parser, compiler wrapper (with a stand-in executable), offline analysis.

The real `edgetpu_compiler` cannot be installed here; the stdout/log fixtures under
tests/fixtures/edgetpu/ are hand-written in its recorded format (see the README there), and the
subprocess path is exercised with a small stand-in script that each test writes itself.
"""
from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import include  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow is imported)
from include.edgetpu import commands
from include.edgetpu.analyze import analyze_model, format_report
from include.edgetpu.compiler import HOW_TO_INSTALL, compile_model, find_compiler
from include.edgetpu.logparse import (
    KNOWN_STATUSES, STATUS_MAPPED, STATUS_MORE_THAN_ONE_SUBGRAPH, STATUS_NOT_SUPPORTED,
    STATUS_UNSPECIFIED, STATUS_UNSUPPORTED_DTYPE, STATUS_UNSUPPORTED_RANK, TABLE_HEADER,
    format_operator_table, parse_compiler_output, parse_operation_log, parse_size)
from include.edgetpu.tflite_model import read_model, schema
from include.errors import ConfigError, EdgeTPUError, ModelContractError

FIXTURES = Path(__file__).parent / "fixtures" / "edgetpu"

pytestmark = pytest.mark.filterwarnings(
    "ignore:Statistics for quantized inputs were expected:UserWarning")


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


# =============================================================================== log parser
def test_parse_size_units():
    assert parse_size("0.00B") == 0
    assert parse_size("512.00B") == 512
    assert parse_size("7.75KiB") == 7936
    assert parse_size("4.24MiB") == round(4.24 * 1024 ** 2)
    assert parse_size("1.50GiB") == round(1.5 * 1024 ** 3)
    assert parse_size("lots") is None


def test_fully_mapped_run_has_no_cpu_lines_and_all_ops_on_tpu():
    rep = parse_compiler_output(fixture_text("fully_mapped_stdout.txt"))
    assert "Number of operations that will run" not in fixture_text("fully_mapped_stdout.txt")
    assert rep.compiler_version == "16.0.384591198"
    assert rep.compiled and rep.all_supported
    assert rep.compile_ms == 812
    assert rep.input_model == "ssdlite_mobiledet_edgetpu_320_int8.tflite"
    assert rep.output_model == "ssdlite_mobiledet_edgetpu_320_int8_edgetpu.tflite"
    assert rep.off_chip_memory_used_bytes == 0
    assert rep.subgraphs == 1
    assert (rep.total_ops, rep.ops_on_tpu, rep.ops_on_cpu) == (73, 73, 0)
    assert sum(r.count for r in rep.operators) == 73
    assert all(r.mapped for r in rep.operators)
    assert rep.timeout_timer_s == 180
    assert rep.errors == []


def test_not_all_supported_run_from_the_reference():
    rep = parse_compiler_output(fixture_text("not_all_supported_stdout.txt"),
                                fixture_text("not_all_supported_edgetpu.log"))
    d = rep.to_dict()
    assert d["compiled"] is True and d["all_supported"] is False
    assert (d["total_ops"], d["ops_on_tpu"], d["ops_on_cpu"]) == (267, 264, 3)
    assert d["input_size_bytes"] == round(4.24 * 1024 ** 2)
    assert d["output_size_bytes"] == round(5.57 * 1024 ** 2)
    assert d["on_chip_memory_used_bytes"] == round(4.21 * 1024 ** 2)
    assert d["on_chip_memory_remaining_bytes"] == round(3.29 * 1024 ** 2)
    assert d["compile_ms"] == 1524
    cpu = {(r["operator"], r["status"]): r["count"] for r in d["operators"] if not r["mapped"]}
    assert cpu == {("DEQUANTIZE", STATUS_UNSUPPORTED_DTYPE): 2,
                   ("CUSTOM", STATUS_UNSUPPORTED_DTYPE): 1}
    assert sum(r["count"] for r in d["operators"] if r["mapped"]) == 264
    json.dumps(d)  # JSON-able


def test_segmented_run_sums_segments():
    rep = parse_compiler_output(fixture_text("segmented_stdout.txt"))
    assert rep.compiled
    assert len(rep.segments) == 2
    s0, s1 = rep.segments
    assert s0.input_model == "model_segment_0_of_2.tflite"
    assert s1.output_model == "model_segment_1_of_2_edgetpu.tflite"
    assert (s0.total_ops, s0.ops_on_tpu, s0.ops_on_cpu) == (140, 140, 0)
    assert (s1.total_ops, s1.ops_on_tpu, s1.ops_on_cpu) == (127, 124, 3)
    assert sum(r.count for r in s0.operators) == 140
    assert sum(r.count for r in s1.operators) == 127
    assert (rep.total_ops, rep.ops_on_tpu, rep.ops_on_cpu, rep.subgraphs) == (267, 264, 3, 2)
    assert rep.off_chip_memory_used_bytes == 12800
    assert rep.input_model is None  # one model per segment: see rep.segments
    assert not rep.all_supported


def test_delegate_search_run_keeps_attempt_errors_apart():
    rep = parse_compiler_output(fixture_text("delegate_search_stdout.txt"))
    assert rep.compiled
    assert rep.subgraphs == 2
    assert (rep.total_ops, rep.ops_on_tpu, rep.ops_on_cpu) == (94, 92, 2)
    tries = [a for a in rep.delegate_search if "ops" in a]
    assert [a["ops"] for a in tries] == [96, 94]
    assert [a["compiled"] for a in tries] == [False, True]
    assert tries[0]["errors"]
    assert tries[1]["intermediate_tensors"] == ["model/block_4/hard_swish/mul_1",
                                                "model/block_9/hard_swish/mul_1"]
    assert rep.errors == []
    assert ("HARD_SWISH", STATUS_NOT_SUPPORTED) in {(r.operator, r.status) for r in rep.operators}


@pytest.mark.parametrize("name, needle", [
    ("failed_stdout.txt", "static-sized tensors"),
    ("not_quantized_stdout.txt", "Model not quantized"),
])
def test_failed_compiles(name, needle):
    rep = parse_compiler_output(fixture_text(name))
    assert not rep.compiled and not rep.all_supported
    assert rep.total_ops is None and rep.operators == []
    assert any(needle in e for e in rep.errors)
    assert needle in rep.to_dict()["error"]


def test_operation_log_with_every_status():
    text = fixture_text("all_statuses_edgetpu.log")
    log = parse_operation_log(text)
    assert log["compiler_version"] == "16.0.384591198"
    assert log["input_model"] == "all_statuses.tflite"
    assert log["output_model"] == "all_statuses_edgetpu.tflite"
    statuses = {r["status"] for r in log["operators"]}
    assert statuses == set(KNOWN_STATUSES)
    assert [r["operator"] for r in log["operators"] if r["mapped"]] == [
        "QUANTIZE", "CONV_2D", "DEPTHWISE_CONV_2D"]
    conv = [r for r in log["operators"] if r["operator"] == "CONV_2D"]
    assert [(r["count"], r["mapped"]) for r in conv] == [(30, True), (3, False)]


def test_table_layout_matches_the_compiler_columns():
    ref_header = "Operator                       Count      Status"
    ref_row = "CONV_2D                        12         Mapped to Edge TPU"
    assert TABLE_HEADER == ref_header
    text = format_operator_table([{"operator": "CONV_2D", "count": 12, "status": STATUS_MAPPED}])
    assert text.splitlines() == [ref_header, "", ref_row]
    # every fixture row uses the same columns
    for line in fixture_text("all_statuses_edgetpu.log").splitlines()[5:]:
        if line.strip():
            assert line[30] == " " and line[31] != " " and line[41] == " " and line[42] != " "


# ========================================================================= compiler wrapper
STANDIN = r'''#!{python}
import json, os, subprocess, sys, time
from pathlib import Path
mode = os.environ.get("STANDIN_MODE", "success")
Path(os.environ["STANDIN_ARGV"]).write_text(json.dumps(sys.argv))
args = sys.argv[1:]
out = Path(args[args.index("-o") + 1])
model = Path(args[-1])
stem = model.stem
stdout = Path(os.environ["STANDIN_STDOUT"]).read_text()
log = Path(os.environ["STANDIN_LOG"]).read_text() if os.environ.get("STANDIN_LOG") else ""
stdout = stdout.replace("X_edgetpu", stem + "_edgetpu").replace("X.tflite", model.name)
if mode == "sleep":
    # a child that holds the pipes open, like the real compiler's compilation child process
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(60)
if mode == "fail":
    sys.stdout.write(stdout)
    sys.stderr.write("edgetpu_compiler: something went wrong\n")
    sys.exit(1)
if mode == "success":
    (out / (stem + "_edgetpu.log")).write_text(log)
    (out / (stem + "_edgetpu.tflite")).write_bytes(b"\x1c\x00\x00\x00TFL3 stand-in")
if mode == "segments":
    n = int(args[args.index("-n") + 1])
    for i in range(n):
        name = "%s_segment_%d_of_%d_edgetpu" % (stem, i, n)
        (out / (name + ".log")).write_text(log)
        (out / (name + ".tflite")).write_bytes(b"\x1c\x00\x00\x00TFL3 stand-in")
sys.stdout.write(stdout)
'''


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """An `edgetpu_compiler` stand-in on PATH; returns a function that sets its behaviour."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "edgetpu_compiler"
    exe.write_text(STANDIN.replace("{python}", sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    argv_file = tmp_path / "argv.json"
    monkeypatch.setenv("STANDIN_ARGV", str(argv_file))

    def configure(mode="success", stdout="not_all_supported_stdout.txt",
                  log="not_all_supported_edgetpu.log"):
        monkeypatch.setenv("STANDIN_MODE", mode)
        monkeypatch.setenv("STANDIN_STDOUT", str(FIXTURES / stdout))
        if log:
            monkeypatch.setenv("STANDIN_LOG", str(FIXTURES / log))
        else:
            monkeypatch.delenv("STANDIN_LOG", raising=False)
        return lambda: json.loads(argv_file.read_text())

    configure.exe = exe
    return configure


@pytest.fixture
def model_file(tmp_path):
    p = tmp_path / "models" / "det_int8.tflite"
    p.parent.mkdir()
    p.write_bytes(b"\x1c\x00\x00\x00TFL3 not really a model")
    return p


def _no_temp_left(out: Path):
    return not [p for p in out.iterdir() if p.name.startswith(".edgetpu-")]


def test_compile_success(standin, model_file, tmp_path):
    argv = standin("success")
    out = tmp_path / "out"
    res = compile_model(model_file, out, min_runtime_version=13)
    assert res.status == "compiled" and res.ok
    assert res.edgetpu_model == str(out / "det_int8_edgetpu.tflite")
    assert Path(res.edgetpu_model).is_file()
    assert res.log_paths == [str(out / "det_int8_edgetpu.log")]
    a = argv()
    assert Path(a[0]).name == "edgetpu_compiler"
    assert a[1:3] == ["-s", "-o"] and a[4:6] == ["-m", "13"]
    assert a[-1] == str(model_file.resolve())
    assert "-d" not in a and "-n" not in a
    assert res.command[1:] == a[1:]
    rep = res.report
    assert (rep["total_ops"], rep["ops_on_tpu"], rep["ops_on_cpu"]) == (267, 264, 3)
    assert rep["output_model"] == "det_int8_edgetpu.tflite"
    assert rep["operation_logs"][0]["file"] == "det_int8_edgetpu.log"
    assert "264 of 267" in res.message
    assert _no_temp_left(out)
    assert res.warnings and "could not be read as a TFLite model" in res.warnings[0]
    json.dumps(res.to_dict())


def test_compile_segments_and_delegate_flags(standin, model_file, tmp_path):
    argv = standin("segments", stdout="segmented_stdout.txt", log=None)
    out = tmp_path / "out"
    res = compile_model(model_file, out, num_segments=2, search_delegate=True)
    assert res.status == "compiled"
    a = argv()
    assert a[a.index("-n") + 1] == "2" and "-d" in a
    assert [Path(p).name for p in res.edgetpu_models] == [
        "det_int8_segment_0_of_2_edgetpu.tflite", "det_int8_segment_1_of_2_edgetpu.tflite"]
    assert res.edgetpu_model == res.edgetpu_models[0]
    assert res.report["total_ops"] == 267 and len(res.report["segments"]) == 2


def test_compile_failure_passes_the_compilers_message(standin, model_file, tmp_path):
    standin("fail", stdout="failed_stdout.txt", log=None)
    out = tmp_path / "out"
    res = compile_model(model_file, out)
    assert res.status == "failed" and not res.ok
    assert res.returncode == 1
    assert "static-sized tensors" in res.message
    assert "Compilation failed!" in res.stdout
    assert "something went wrong" in res.stderr
    assert res.edgetpu_model is None
    assert list(out.iterdir()) == []  # nothing half-written


def test_compile_timeout_kills_the_compiler(standin, model_file, tmp_path):
    standin("sleep")
    out = tmp_path / "out"
    t0 = time.monotonic()
    res = compile_model(model_file, out, timeout_s=1)
    assert time.monotonic() - t0 < 15
    assert res.status == "timeout"
    assert "1 s" in res.message
    assert res.edgetpu_model is None
    assert list(out.iterdir()) == []


def test_compile_exit_zero_without_output_is_a_failure(standin, model_file, tmp_path):
    standin("missing")
    out = tmp_path / "out"
    res = compile_model(model_file, out)
    assert res.status == "failed"
    assert "wrote no det_int8_edgetpu.tflite" in res.message
    assert list(out.iterdir()) == []


def test_not_installed_says_so_plainly(tmp_path, monkeypatch, model_file):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    assert find_compiler() is None
    res = compile_model(model_file, tmp_path / "out")
    assert res.status == "not_installed" and not res.ok
    assert "not installed" in res.message
    for word in ("passed", "compiled"):
        assert word not in res.message.lower()
    assert "edgetpu-compiler" in res.how_to_install and "Docker" in res.how_to_install
    assert res.how_to_install == HOW_TO_INSTALL
    assert res.edgetpu_model is None and res.command == []


def test_find_compiler_order(standin, tmp_path, monkeypatch):
    other = tmp_path / "other_compiler"
    other.write_text("#!/bin/sh\n")
    other.chmod(0o755)
    assert find_compiler() == str(standin.exe)           # on PATH
    monkeypatch.setenv("EDGETPU_COMPILER", str(other))
    assert find_compiler() == str(other)                 # env var beats PATH
    assert find_compiler(standin.exe) == str(standin.exe)  # explicit beats env var
    monkeypatch.setenv("EDGETPU_COMPILER", str(tmp_path / "nope"))
    with pytest.raises(EdgeTPUError) as err:
        find_compiler()
    assert "nope" in str(err.value) and "EDGETPU_COMPILER" in str(err.value)


def test_compile_missing_model_and_bad_settings(tmp_path, model_file):
    with pytest.raises(EdgeTPUError) as err:
        compile_model(tmp_path / "absent.tflite", tmp_path / "out")
    assert "absent.tflite" in str(err.value) and "Fix:" in str(err.value)
    with pytest.raises(ConfigError):
        compile_model(model_file, tmp_path / "out", num_segments=0)


def _cli(argv):
    parser = argparse.ArgumentParser(prog="mobiledet")
    sub = parser.add_subparsers(dest="command")
    commands.register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_compile(standin, model_file, tmp_path, capsys):
    standin("success")
    rc = _cli(["edgetpu-compile", str(model_file), "-o", str(tmp_path / "o"), "--json"])
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["status"] == "compiled"
    standin("fail", stdout="failed_stdout.txt", log=None)
    assert _cli(["edgetpu-compile", str(model_file), "-o", str(tmp_path / "o2")]) == 1
    assert "static-sized tensors" in capsys.readouterr().err


def test_cli_compile_not_installed(tmp_path, monkeypatch, model_file, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("EDGETPU_COMPILER", raising=False)
    assert _cli(["edgetpu-compile", str(model_file)]) == commands.EXIT_NOT_INSTALLED
    err = capsys.readouterr().err
    assert "not installed" in err and "apt-get install edgetpu-compiler" in err


# ============================================================ synthetic flatbuffer models
_NP = {"int8": np.int8, "uint8": np.uint8, "int32": np.int32, "float32": np.float32,
       "float16": np.float16, "int64": np.int64}


def T(name, shape, dtype="int8", data=None, q=True, sig=None):
    return dict(name=name, shape=shape, dtype=dtype, data=data, q=q, sig=sig)


def O(op, ins, outs, opts=None, custom=None):
    return dict(op=op, ins=ins, outs=outs, opts=opts, custom=custom)


def build_model(path, tensors, ops, inputs, outputs, extra_subgraphs=0):
    """Write a .tflite flatbuffer with the schema's object API (no TensorFlow needed)."""
    import flatbuffers

    s = schema()
    buffers = [s.BufferT()]
    tlist, index = [], {}
    for spec in tensors:
        t = s.TensorT()
        t.name = spec["name"]
        t.type = getattr(s.TensorType, spec["dtype"].upper())
        t.shape = np.array(spec["shape"], dtype=np.int32)
        if spec["sig"] is not None:
            t.shapeSignature = np.array(spec["sig"], dtype=np.int32)
        b = s.BufferT()
        if spec["data"] is not None:
            arr = np.asarray(spec["data"], dtype=_NP[spec["dtype"]]).reshape(-1)
            b.data = np.frombuffer(arr.tobytes(), dtype=np.uint8)
        buffers.append(b)
        t.buffer = len(buffers) - 1
        if spec["q"] and spec["dtype"] in ("int8", "uint8"):
            qp = s.QuantizationParametersT()
            qp.scale = np.array([0.05], dtype=np.float32)
            qp.zeroPoint = np.array([0], dtype=np.int64)
            t.quantization = qp
        index[spec["name"]] = len(tlist)
        tlist.append(t)
    codes, code_index, olist = [], {}, []
    for spec in ops:
        key = (spec["op"], spec["custom"])
        if key not in code_index:
            c = s.OperatorCodeT()
            value = getattr(s.BuiltinOperator, spec["op"])
            c.builtinCode = value
            c.deprecatedBuiltinCode = min(value, 127)
            c.version = 1
            if spec["custom"]:
                c.customCode = spec["custom"]
            code_index[key] = len(codes)
            codes.append(c)
        o = s.OperatorT()
        o.opcodeIndex = code_index[key]
        o.inputs = np.array([index[n] if n else -1 for n in spec["ins"]], dtype=np.int32)
        o.outputs = np.array([index[n] for n in spec["outs"]], dtype=np.int32)
        if spec["opts"]:
            kind, fields = spec["opts"]
            opt = getattr(s, kind + "T")()
            for k, v in fields.items():
                setattr(opt, k, v)
            o.builtinOptionsType = getattr(s.BuiltinOptions, kind)
            o.builtinOptions = opt
        olist.append(o)
    sg = s.SubGraphT()
    sg.tensors, sg.operators = tlist, olist
    sg.inputs = np.array([index[n] for n in inputs], dtype=np.int32)
    sg.outputs = np.array([index[n] for n in outputs], dtype=np.int32)
    sg.name = "main"
    m = s.ModelT()
    m.version = 3
    m.operatorCodes, m.buffers = codes, buffers
    m.subgraphs = [sg] + [s.SubGraphT() for _ in range(extra_subgraphs)]
    for extra in m.subgraphs[1:]:
        extra.tensors, extra.operators, extra.inputs, extra.outputs = [], [], [], []
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))
    return path


def _conv_weights(name, cin, cout, k=1):
    return [T(name + "_w", [cout, k, k, cin], data=np.ones(cout * k * k * cin)),
            T(name + "_b", [cout], dtype="int32", data=np.zeros(cout), q=False)]


def ssd_like(tmp_path, middle=None):
    """uint8 in -> QUANTIZE -> box conv -> DEQUANTIZE ... class conv -> LOGISTIC -> DEQUANTIZE
    -> TFLite_Detection_PostProcess, with the box DEQUANTIZE early in execution order."""
    tensors = [T("image", [1, 8, 8, 3], "uint8"), T("q", [1, 8, 8, 3]),
               T("boxes_q", [1, 8, 8, 4]), T("boxes", [1, 8, 8, 4], "float32"),
               T("cls_q", [1, 8, 8, 2]), T("cls_sig", [1, 8, 8, 2]),
               T("scores", [1, 8, 8, 2], "float32"),
               T("anchors", [256, 4], "float32", data=np.zeros(1024)),
               T("det_boxes", [1, 10, 4], "float32"), T("det_classes", [1, 10], "float32"),
               T("det_scores", [1, 10], "float32"), T("num", [1], "float32")]
    tensors += _conv_weights("box", 3, 4) + _conv_weights("cls", 3, 2)
    conv = ("Conv2DOptions", {"dilationWFactor": 1, "dilationHFactor": 1})
    src = "q"
    ops = [O("QUANTIZE", ["image"], ["q"])]
    if middle == "hard_swish":
        tensors.append(T("hs", [1, 8, 8, 3]))
        ops.append(O("HARD_SWISH", ["q"], ["hs"]))
        src = "hs"
    ops += [O("CONV_2D", [src, "box_w", "box_b"], ["boxes_q"], conv),
            O("DEQUANTIZE", ["boxes_q"], ["boxes"]),
            O("CONV_2D", [src, "cls_w", "cls_b"], ["cls_q"], conv),
            O("LOGISTIC", ["cls_q"], ["cls_sig"]),
            O("DEQUANTIZE", ["cls_sig"], ["scores"]),
            O("CUSTOM", ["boxes", "scores", "anchors"],
              ["det_boxes", "det_classes", "det_scores", "num"],
              custom="TFLite_Detection_PostProcess")]
    return build_model(tmp_path / f"ssd_{middle or 'plain'}.tflite", tensors, ops, ["image"],
                       ["det_boxes", "det_classes", "det_scores", "num"])


def _rows(result):
    return {(r["operator"], r["status"]): r["count"] for r in result["operators"]}


def test_reader_reads_ops_tensors_and_options(tmp_path):
    info = read_model(ssd_like(tmp_path))
    assert [op.opcode for op in info.ops] == ["QUANTIZE", "CONV_2D", "DEQUANTIZE", "CONV_2D",
                                              "LOGISTIC", "DEQUANTIZE", "CUSTOM"]
    assert info.ops[-1].custom_code == "TFLite_Detection_PostProcess"
    assert info.op_histogram == {"QUANTIZE": 1, "CONV_2D": 2, "DEQUANTIZE": 2, "LOGISTIC": 1,
                                 "CUSTOM": 1}
    conv = info.ops[1]
    assert conv.options["dilation_w_factor"] == 1 and conv.options["padding"] == "SAME"
    w, b = conv.inputs[1], conv.inputs[2]
    assert w.is_constant and w.dtype == "int8" and w.quantization.scale == [pytest.approx(0.05)]
    assert b.dtype == "int32" and b.is_constant
    assert not conv.inputs[0].is_constant
    assert [t.name for t in info.inputs] == ["image"] and info.inputs[0].dtype == "uint8"
    assert info.constant_value(w).shape == (4, 1, 1, 3)


def test_ssd_postprocess_and_its_dequantize_are_expected(tmp_path):
    r = analyze_model(ssd_like(tmp_path))
    assert r["prediction"] is True
    assert (r["total_ops"], r["ops_on_tpu"], r["ops_on_cpu"]) == (7, 4, 3)
    assert r["expected_on_cpu"] == 3 and r["unexpected_on_cpu"] == 0
    assert r["all_mapped_except_postprocess"] is True
    assert r["fully_integer"] is True and r["has_postprocess"] is True
    assert r["first_unmapped_op"] is None
    assert _rows(r) == {("QUANTIZE", STATUS_MAPPED): 1, ("CONV_2D", STATUS_MAPPED): 2,
                        ("DEQUANTIZE", STATUS_UNSUPPORTED_DTYPE): 2,
                        ("LOGISTIC", STATUS_MAPPED): 1, ("CUSTOM", STATUS_UNSUPPORTED_DTYPE): 1}
    assert all(op["expected"] for op in r["cpu_ops"])
    assert r["summary"]["all_mapped_except_postprocess"] is True


def test_unmapped_op_early_cuts_everything_after_it(tmp_path):
    r = analyze_model(ssd_like(tmp_path, middle="hard_swish"))
    assert r["ops_on_tpu"] == 1  # only the QUANTIZE before it
    assert r["all_mapped_except_postprocess"] is False
    assert r["first_unmapped_op"]["operator"] == "HARD_SWISH"
    assert r["first_unmapped_op"]["status"] == STATUS_NOT_SUPPORTED
    ops = r["ops"]
    assert not any(op["on_tpu"] for op in ops[1:])
    for op in ops[2:]:
        if op["expected"]:  # the DEQUANTIZEs and the post-process stay expected CPU ops
            assert op["operator"] in ("DEQUANTIZE", "CUSTOM")
        else:
            assert any("follows an unmapped op" in reason for reason in op["reasons"])
    by = _rows(r)
    assert by[("CONV_2D", STATUS_MORE_THAN_ONE_SUBGRAPH)] == 2
    assert by[("LOGISTIC", STATUS_MORE_THAN_ONE_SUBGRAPH)] == 1
    text = format_report(r)
    assert "HARD_SWISH" in text and "PREDICTION" in text


def _one_op(tmp_path, name, op, in_shape, out_shape, extra_tensors=(), extra_inputs=(),
            opts=None, in_dtype="int8", sig=None, q=True):
    tensors = [T("x", in_shape, in_dtype, sig=sig, q=q), T("y", out_shape, in_dtype, q=q)]
    tensors += list(extra_tensors)
    ops = [O(op, ["x", *extra_inputs], ["y"], opts)]
    return analyze_model(build_model(tmp_path / f"{name}.tflite", tensors, ops, ["x"], ["y"]))


def _status(r):
    assert r["total_ops"] == 1
    return r["ops"][0]["status"]


CASES = [
    # name, op, in_shape, out_shape, extra tensors, extra inputs, options, expected status
    ("conv_same_dilation", "CONV_2D", [1, 8, 8, 3], [1, 8, 8, 4], _conv_weights("c", 3, 4),
     ["c_w", "c_b"], ("Conv2DOptions", {"dilationWFactor": 2, "dilationHFactor": 2}),
     STATUS_MAPPED),
    ("conv_unequal_dilation", "CONV_2D", [1, 8, 8, 3], [1, 8, 8, 4], _conv_weights("c", 3, 4),
     ["c_w", "c_b"], ("Conv2DOptions", {"dilationWFactor": 2, "dilationHFactor": 1}),
     STATUS_UNSPECIFIED),
    ("dw_unequal_dilation", "DEPTHWISE_CONV_2D", [1, 8, 8, 4], [1, 8, 8, 4],
     [T("d_w", [1, 3, 3, 4], data=np.ones(36)), T("d_b", [4], "int32", np.zeros(4), q=False)],
     ["d_w", "d_b"], ("DepthwiseConv2DOptions", {"dilationWFactor": 1, "dilationHFactor": 3}),
     STATUS_UNSPECIFIED),
    ("pool_plain", "MAX_POOL_2D", [1, 8, 8, 4], [1, 4, 4, 4], [], [],
     ("Pool2DOptions", {"strideW": 2, "strideH": 2, "filterWidth": 2, "filterHeight": 2}),
     STATUS_MAPPED),
    ("pool_fused_relu", "AVERAGE_POOL_2D", [1, 8, 8, 4], [1, 4, 4, 4], [], [],
     ("Pool2DOptions", {"strideW": 2, "strideH": 2, "filterWidth": 2, "filterHeight": 2,
                        "fusedActivationFunction": 1}), STATUS_UNSPECIFIED),
    ("concat_zero_const", "CONCATENATION", [1, 4, 4, 4], [1, 4, 4, 8],
     [T("z", [1, 4, 4, 4], data=np.zeros(64))], ["z"], ("ConcatenationOptions", {"axis": 3}),
     STATUS_MAPPED),
    ("concat_nonzero_const", "CONCATENATION", [1, 4, 4, 4], [1, 4, 4, 8],
     [T("z", [1, 4, 4, 4], data=np.ones(64))], ["z"], ("ConcatenationOptions", {"axis": 3}),
     STATUS_UNSPECIFIED),
    ("concat_three_with_const", "CONCATENATION", [1, 4, 4, 4], [1, 4, 4, 12],
     [T("z", [1, 4, 4, 4], data=np.zeros(64)), T("w", [1, 4, 4, 4])], ["z", "w"],
     ("ConcatenationOptions", {"axis": 3}), STATUS_UNSPECIFIED),
    ("concat_fused", "CONCATENATION", [1, 4, 4, 4], [1, 4, 4, 8], [T("w", [1, 4, 4, 4])],
     ["w"], ("ConcatenationOptions", {"axis": 3, "fusedActivationFunction": 3}),
     STATUS_UNSPECIFIED),
    ("strided_slice_ones", "STRIDED_SLICE", [1, 8, 8, 4], [1, 4, 8, 4],
     [T("b", [4], "int32", np.zeros(4), q=False), T("e", [4], "int32", [1, 4, 8, 4], q=False),
      T("s", [4], "int32", [1, 1, 1, 1], q=False)], ["b", "e", "s"],
     ("StridedSliceOptions", {}), STATUS_MAPPED),
    ("strided_slice_stride2", "STRIDED_SLICE", [1, 8, 8, 4], [1, 4, 8, 4],
     [T("b", [4], "int32", np.zeros(4), q=False), T("e", [4], "int32", [1, 8, 8, 4], q=False),
      T("s", [4], "int32", [1, 2, 1, 1], q=False)], ["b", "e", "s"],
     ("StridedSliceOptions", {}), STATUS_UNSPECIFIED),
    ("strided_slice_ellipsis", "STRIDED_SLICE", [1, 8, 8, 4], [1, 4, 8, 4],
     [T("b", [4], "int32", np.zeros(4), q=False), T("e", [4], "int32", [1, 4, 8, 4], q=False),
      T("s", [4], "int32", [1, 1, 1, 1], q=False)], ["b", "e", "s"],
     ("StridedSliceOptions", {"ellipsisMask": 1}), STATUS_UNSPECIFIED),
    ("mean_xy", "MEAN", [1, 8, 8, 6], [1, 1, 1, 6], [T("a", [2], "int32", [1, 2], q=False)],
     ["a"], ("ReducerOptions", {"keepDims": True}), STATUS_MAPPED),
    ("mean_batch", "MEAN", [1, 8, 8, 6], [8, 8, 6], [T("a", [1], "int32", [0], q=False)],
     ["a"], ("ReducerOptions", {}), STATUS_UNSPECIFIED),
    ("mean_z_not_multiple_of_4", "MEAN", [1, 8, 8, 6], [1, 8, 8],
     [T("a", [1], "int32", [-1], q=False)], ["a"], ("ReducerOptions", {}), STATUS_UNSPECIFIED),
    ("mean_z_multiple_of_4", "MEAN", [1, 8, 8, 8], [1, 8, 8],
     [T("a", [1], "int32", [3], q=False)], ["a"], ("ReducerOptions", {}), STATUS_MAPPED),
    ("reduce_max_batch", "REDUCE_MAX", [1, 8, 8, 8], [8, 8, 8],
     [T("a", [1], "int32", [0], q=False)], ["a"], ("ReducerOptions", {}), STATUS_UNSPECIFIED),
    ("pad_xy", "PAD", [1, 8, 8, 4], [1, 10, 10, 4],
     [T("p", [4, 2], "int32", [0, 0, 1, 1, 1, 1, 0, 0], q=False)], ["p"], None, STATUS_MAPPED),
    ("pad_channels", "PAD", [1, 8, 8, 4], [1, 8, 8, 6],
     [T("p", [4, 2], "int32", [0, 0, 0, 0, 0, 0, 1, 1], q=False)], ["p"], None,
     STATUS_UNSPECIFIED),
    ("squeeze_leading", "SQUEEZE", [1, 1, 1, 8], [8], [], [],
     ("SqueezeOptions", {"squeezeDims": [0, 1, 2]}), STATUS_MAPPED),
    ("squeeze_inner", "SQUEEZE", [1, 4, 1, 8], [1, 4, 8], [], [],
     ("SqueezeOptions", {"squeezeDims": [2]}), STATUS_UNSPECIFIED),
    ("softmax_1d", "SOFTMAX", [1, 10], [1, 10], [], [], ("SoftmaxOptions", {"beta": 1.0}),
     STATUS_MAPPED),
    ("softmax_2d", "SOFTMAX", [1, 4, 10], [1, 4, 10], [], [],
     ("SoftmaxOptions", {"beta": 1.0}), STATUS_UNSPECIFIED),
    ("softmax_too_big", "SOFTMAX", [1, 20000], [1, 20000], [], [],
     ("SoftmaxOptions", {"beta": 1.0}), STATUS_UNSPECIFIED),
    ("fc_2d_output", "FULLY_CONNECTED", [1, 4, 16], [1, 4, 8],
     [T("f_w", [8, 16], data=np.ones(128)), T("f_b", [8], "int32", np.zeros(8), q=False)],
     ["f_w", "f_b"], ("FullyConnectedOptions", {}), STATUS_UNSPECIFIED),
    ("fc_1d_output", "FULLY_CONNECTED", [1, 16], [1, 8],
     [T("f_w", [8, 16], data=np.ones(128)), T("f_b", [8], "int32", np.zeros(8), q=False)],
     ["f_w", "f_b"], ("FullyConnectedOptions", {}), STATUS_MAPPED),
    ("pack_batch", "PACK", [4, 4], [2, 4, 4], [T("w", [4, 4])], ["w"],
     ("PackOptions", {"valuesCount": 2, "axis": 0}), STATUS_UNSPECIFIED),
    ("rank5_ok", "RELU", [1, 1, 4, 4, 4], [1, 1, 4, 4, 4], [], [], None, STATUS_MAPPED),
    ("rank5_bad", "RELU", [1, 2, 4, 4, 4], [1, 2, 4, 4, 4], [], [], None,
     STATUS_UNSUPPORTED_RANK),
    ("unsupported_op", "CUMSUM", [1, 8, 8, 4], [1, 8, 8, 4],
     [T("a", [], "int32", [1], q=False)], ["a"], None, STATUS_NOT_SUPPORTED),
    ("conv_runtime_weights", "CONV_2D", [1, 8, 8, 3], [1, 8, 8, 4],
     [T("c_w", [4, 1, 1, 3]), T("c_b", [4], "int32", np.zeros(4), q=False)], ["c_w", "c_b"],
     ("Conv2DOptions", {"dilationWFactor": 1, "dilationHFactor": 1}), STATUS_UNSPECIFIED),
]


@pytest.mark.parametrize("name, op, ins, outs, extra, extra_in, opts, expected", CASES,
                         ids=[c[0] for c in CASES])
def test_op_conditions(tmp_path, name, op, ins, outs, extra, extra_in, opts, expected):
    r = _one_op(tmp_path, name, op, ins, outs, extra, extra_in, opts)
    assert _status(r) == expected, r["ops"][0]["reasons"]
    if expected != STATUS_MAPPED:
        assert r["ops"][0]["reasons"] and r["cpu_ops"][0]["index"] == 0
        assert r["all_mapped_except_postprocess"] is False


def test_data_type_shape_and_quantization_rules(tmp_path):
    r = _one_op(tmp_path, "float_add", "RELU", [1, 4, 4, 4], [1, 4, 4, 4], in_dtype="float32")
    assert _status(r) == STATUS_UNSUPPORTED_DTYPE
    assert "float32" in r["ops"][0]["reasons"][0]
    assert r["fully_integer"] is False and r["quantization"] == "float32"
    r = _one_op(tmp_path, "no_scale", "RELU", [1, 4, 4, 4], [1, 4, 4, 4], q=False)
    assert _status(r) == STATUS_UNSUPPORTED_DTYPE
    r = _one_op(tmp_path, "dyn", "RELU", [1, 4, 4, 4], [1, 4, 4, 4], sig=[1, -1, 4, 4])
    assert _status(r) == STATUS_UNSPECIFIED and "dynamic shape" in r["ops"][0]["reasons"][0]
    r = _one_op(tmp_path, "dyn_batch", "RELU", [1, 4, 4, 4], [1, 4, 4, 4], sig=[-1, 4, 4, 4])
    assert _status(r) == STATUS_MAPPED and any("batch" in n for n in r["notes"])


def test_float_input_quantize_at_the_head_is_expected(tmp_path):
    tensors = [T("image", [1, 4, 4, 3], "float32"), T("q", [1, 4, 4, 3]),
               T("y", [1, 4, 4, 3])]
    ops = [O("QUANTIZE", ["image"], ["q"]), O("RELU", ["q"], ["y"])]
    r = analyze_model(build_model(tmp_path / "head.tflite", tensors, ops, ["image"], ["y"]))
    assert r["ops_on_tpu"] == 1 and r["expected_on_cpu"] == 1
    assert r["all_mapped_except_postprocess"] is True


def test_extra_subgraphs_and_compiled_models_warn(tmp_path):
    tensors = [T("x", [1, 4, 4, 3]), T("y", [1, 4, 4, 3])]
    p = build_model(tmp_path / "two.tflite", tensors, [O("RELU", ["x"], ["y"])], ["x"], ["y"],
                    extra_subgraphs=1)
    r = analyze_model(p)
    assert any("2 subgraphs" in w for w in r["warnings"])
    p = build_model(tmp_path / "compiled.tflite", tensors,
                    [O("CUSTOM", ["x"], ["y"], custom="edgetpu-custom-op")], ["x"], ["y"])
    r = analyze_model(p)
    assert any("already" in w for w in r["warnings"])
    assert _status(r) == STATUS_NOT_SUPPORTED


def test_bad_model_files_name_the_file(tmp_path):
    with pytest.raises(ModelContractError) as err:
        analyze_model(tmp_path / "missing.tflite")
    assert "missing.tflite" in str(err.value) and "Fix:" in str(err.value)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"PK\x03\x04 this is a zip, not a flatbuffer")
    with pytest.raises(ModelContractError) as err:
        analyze_model(junk)
    assert "junk.tflite" in str(err.value) and "TFL3" in str(err.value)


def test_cli_check_text_json_and_strict(tmp_path, capsys):
    good = ssd_like(tmp_path)
    assert _cli(["edgetpu-check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "Operator                       Count      Status" in out and "PREDICTION" in out
    assert _cli(["edgetpu-check", str(good), "--json", "--strict"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prediction"] is True and data["all_mapped_except_postprocess"] is True
    bad = ssd_like(tmp_path, middle="hard_swish")
    assert _cli(["edgetpu-check", str(bad), "--strict"]) == 1


# ================================================================== real converted models
@pytest.fixture(scope="module")
def keras_models(tmp_path_factory):
    """Tiny Keras models converted with TFLiteConverter: float32, dynamic, float16, int8, and
    int8 models whose early ops cannot map."""
    import tensorflow as tf

    L = tf.keras.layers
    out = tmp_path_factory.mktemp("keras_tflite")
    rng = np.random.default_rng(0)

    def detector_like():
        inp = L.Input((16, 16, 3), batch_size=1)
        x = L.Conv2D(16, 3, strides=2, padding="same", activation=tf.nn.relu6)(inp)
        y = L.DepthwiseConv2D(3, padding="same", activation=tf.nn.relu6)(x)
        y = L.Conv2D(16, 1)(y)
        x = L.Add()([x, y])
        z = L.Conv2D(32, 3, padding="same", activation="relu")(x)   # 4608 weights: quantized
        x = L.Concatenate()([x, z])                                # by dynamic-range too
        x = L.UpSampling2D(interpolation="bilinear")(x)
        x = L.Conv2D(4, 3, padding="same")(x)
        pooled = L.GlobalAveragePooling2D()(x)                     # MEAN
        boxes = L.Reshape((16 * 16, 4))(x)
        return tf.keras.Model(inp, [boxes, pooled])

    def dilated_first():
        inp = L.Input((16, 16, 3), batch_size=1)
        x = L.Conv2D(8, 3, padding="same", dilation_rate=(1, 2))(inp)
        x = L.Conv2D(8, 3, padding="same", activation="relu")(x)
        return tf.keras.Model(inp, L.MaxPooling2D()(x))

    def rank5_early():
        # a 5-D concatenation the converter cannot fold away: [1, 4, 4, 8, 8]
        inp = L.Input((8, 8, 4), batch_size=1)
        a = L.Reshape((2, 4, 8, 8))(L.Conv2D(8, 1)(inp))
        b = L.Reshape((2, 4, 8, 8))(L.Conv2D(8, 1)(inp))
        x = L.Reshape((8, 8, 16))(L.Concatenate(axis=1)([a, b]))
        return tf.keras.Model(inp, L.Conv2D(8, 1)(x))

    def convert(model, kind, float_output=False):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind != "float32":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "float16":
            conv.target_spec.supported_types = [tf.float16]
        if kind == "int8":
            shape = (1,) + tuple(model.input_shape[1:])

            def representative():
                for _ in range(4):
                    yield [rng.random(shape, dtype=np.float32)]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            conv.inference_input_type = tf.uint8
            if not float_output:
                conv.inference_output_type = tf.uint8
        return conv.convert()

    def ssd_with_postprocess():
        """A Keras head + the TFLite_Detection_PostProcess custom op, as the TF2 detection
        exporter makes it (a tf.function that `experimental_implements` the op)."""
        num_anchors, num_classes = 64, 3
        inp = L.Input((8, 8, 3), batch_size=1)
        x = L.Conv2D(16, 3, padding="same", activation=tf.nn.relu6)(inp)
        boxes = L.Reshape((num_anchors, 4))(L.Conv2D(4, 1)(x))
        scores = L.Activation("sigmoid")(L.Reshape((num_anchors, num_classes))(
            L.Conv2D(num_classes, 1)(x)))
        head = tf.keras.Model(inp, [boxes, scores])
        attrs = {"max_detections": "i: 10", "max_classes_per_detection": "i: 1",
                 "detections_per_class": "i: 10", "use_regular_nms": "b: false",
                 "nms_score_threshold": "f: 0.3", "nms_iou_threshold": "f: 0.6",
                 "y_scale": "f: 10.0", "x_scale": "f: 10.0", "h_scale": "f: 5.0",
                 "w_scale": "f: 5.0", "num_classes": f"i: {num_classes - 1}"}
        implements = 'name: "TFLite_Detection_PostProcess" ' + " ".join(
            f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs.items())

        @tf.function(experimental_implements=implements)
        def postprocess(b, c, a):  # the body is a placeholder: the converter swaps in the op
            z = (tf.reduce_sum(b) + tf.reduce_sum(c) + tf.reduce_sum(a)) * 0.0
            return (tf.zeros((1, 10, 4)) + z, tf.zeros((1, 10)), tf.zeros((1, 10)),
                    tf.zeros((1,)))

        anchors = tf.constant(rng.random((num_anchors, 4), dtype=np.float32))

        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)])
        def detect(image):
            b, c = head(image)
            return postprocess(b, c, anchors)

        conv = tf.lite.TFLiteConverter.from_concrete_functions(
            [detect.get_concrete_function()], head)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: (
            [rng.random((1, 8, 8, 3), dtype=np.float32)] for _ in range(4))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8,
                                          tf.lite.OpsSet.TFLITE_BUILTINS]
        conv.inference_input_type = tf.uint8
        conv.allow_custom_ops = True
        return conv.convert()

    det = detector_like()
    paths = {}
    paths["ssd_postprocess"] = out / "ssd_postprocess_int8.tflite"
    paths["ssd_postprocess"].write_bytes(ssd_with_postprocess())
    for kind in ("float32", "dynamic", "float16", "int8"):
        paths[kind] = out / f"det_{kind}.tflite"
        paths[kind].write_bytes(convert(det, kind))
    paths["int8_float_out"] = out / "det_int8_float_out.tflite"
    paths["int8_float_out"].write_bytes(convert(det, "int8", float_output=True))
    paths["dilated"] = out / "dilated_int8.tflite"
    paths["dilated"].write_bytes(convert(dilated_first(), "int8"))
    paths["rank5"] = out / "rank5_int8.tflite"
    paths["rank5"].write_bytes(convert(rank5_early(), "int8"))
    return paths


def test_int8_model_maps_completely(keras_models):
    r = analyze_model(keras_models["int8"])
    assert r["ops_on_cpu"] == 0 and r["ops_on_tpu"] == r["total_ops"] > 8
    assert r["fully_integer"] is True and r["quantization"] == "full_integer"
    assert r["all_mapped_except_postprocess"] is True
    hist = read_model(keras_models["int8"]).op_histogram
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "CONCATENATION", "RESIZE_BILINEAR",
               "MEAN", "RESHAPE", "QUANTIZE"):
        assert op in hist, hist
    assert read_model(keras_models["int8"]).inputs[0].dtype == "uint8"


def test_int8_model_with_float_output_keeps_only_the_dequantize_on_cpu(keras_models):
    r = analyze_model(keras_models["int8_float_out"])
    assert r["ops_on_cpu"] == r["expected_on_cpu"] >= 1
    assert {op["operator"] for op in r["cpu_ops"]} == {"DEQUANTIZE"}
    assert r["all_mapped_except_postprocess"] is True


@pytest.mark.parametrize("kind, quantization", [
    ("float32", "float32"), ("dynamic", "dynamic_range"), ("float16", "float16")])
def test_float_models_map_nothing(keras_models, kind, quantization):
    r = analyze_model(keras_models[kind])
    assert r["ops_on_tpu"] == 0 and r["ops_on_cpu"] == r["total_ops"] > 0
    assert r["fully_integer"] is False and r["quantization"] == quantization
    assert r["all_mapped_except_postprocess"] is False
    first = r["first_unmapped_op"]
    assert first["index"] == 0 and first["status"] == STATUS_UNSUPPORTED_DTYPE
    assert any("not fully 8-bit quantized" in reason for reason in first["reasons"])
    assert r["warnings"] and "8-bit" in r["warnings"][0]
    assert all(op["status"] == STATUS_UNSUPPORTED_DTYPE for op in r["cpu_ops"])


@pytest.mark.parametrize("kind, first_op, status", [
    ("dilated", "CONV_2D", STATUS_UNSPECIFIED),     # dilation (1, 2) kept on the CONV_2D
    ("rank5", "RESHAPE", STATUS_UNSUPPORTED_RANK),
])
def test_int8_model_with_an_early_unmappable_op(keras_models, kind, first_op, status):
    r = analyze_model(keras_models[kind])
    first = r["first_unmapped_op"]
    assert first["operator"] == first_op and first["status"] == status
    assert r["fully_integer"] is True
    after = [op for op in r["ops"] if op["index"] > first["index"]]
    assert after and not any(op["on_tpu"] for op in after)
    assert all(any("follows an unmapped op" in x for x in op["reasons"]) for op in after)
    assert any(op["operator"] == "CONV_2D" and op["status"] == STATUS_MORE_THAN_ONE_SUBGRAPH
               for op in after)
    assert [op["on_tpu"] for op in r["ops"][: first["index"]]] == [True] * first["index"]
    if kind == "dilated":
        assert "dilation differs in x and y (w=2, h=1)" in first["reasons"][0]


def test_compile_precheck_warns_about_float_models(keras_models, standin, tmp_path):
    standin("success")
    res = compile_model(keras_models["float32"], tmp_path / "out")
    assert res.status == "compiled"  # the (stand-in) compiler decides; the pre-check only warns
    assert any("8-bit" in w for w in res.warnings)
    assert any("offline prediction" in w for w in res.warnings)


def test_converted_ssd_with_postprocess(keras_models):
    """The converter puts the box DEQUANTIZE early in execution order (before the class head);
    it and the post-process are expected CPU ops and do not cut the class head off."""
    info = read_model(keras_models["ssd_postprocess"])
    pp = [op for op in info.ops if op.opcode == "CUSTOM"]
    assert [op.custom_code for op in pp] == ["TFLite_Detection_PostProcess"]
    assert pp[0].custom_options["max_detections"] == 10
    r = analyze_model(keras_models["ssd_postprocess"])
    cpu = {(op["operator"], op["expected"]) for op in r["cpu_ops"]}
    assert cpu == {("DEQUANTIZE", True), ("CUSTOM", True)}
    assert r["ops_on_cpu"] == r["expected_on_cpu"] == 3
    assert r["all_mapped_except_postprocess"] is True and r["fully_integer"] is True
    assert r["has_postprocess"] is True and r["first_unmapped_op"] is None
    first_dq = min(op["index"] for op in r["cpu_ops"])
    assert any(op["on_tpu"] and op["operator"] == "CONV_2D" and op["index"] > first_dq
               for op in r["ops"])
