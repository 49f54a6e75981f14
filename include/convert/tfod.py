"""TFOD `pipeline.config` files, both directions, without the TFOD protos.

TFOD describes a model in protobuf *text format*. No TFOD protos are installed, so this module
carries a small generic text-format reader and writer:

    parse_text_proto(text) -> dict      every field maps to a LIST of values (fields repeat);
                                        nested messages are dicts, enums are `EnumValue`
                                        (a str), strings are str, numbers int/float, true/false bool
    format_text_proto(msg) -> str       the inverse (dict -> text)
    first(msg, "a.b.c"), values(msg, "a.b.c"), has(msg, "a.b")   dotted-path helpers

and the two pipeline.config operations the product needs:

    read_pipeline_config(path) -> dict  variant, num_classes, input_size, depth_multiplier, spec,
                                        qat, qat_settings, postprocess, anchors, box_coder,
                                        label_map_path, label_map, raw
    write_pipeline_config(path, spec, *, qat, label_map, steps)
                                        a TFOD-style config for this project's checkpoints

plus `read_label_map` for TFOD `label_map.pbtxt` files. Syntax errors name the line and column;
content errors name the file, the dotted field and the fix.
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from include.errors import CheckpointError, ConfigError

# feature_extractor.type -> this project's variant
FEATURE_EXTRACTORS = {
    "ssd_mobiledet_cpu": "cpu",
    "ssd_mobiledet_edgetpu": "edgetpu",
    "ssd_mobiledet_dsp": "dsp",
    "ssd_mobiledet_gpu": "gpu",
}
VARIANT_TO_TYPE = {v: k for k, v in FEATURE_EXTRACTORS.items()}

# Defaults of the TFOD protos for the fields read here (used when a field is absent).
_QUANT_DEFAULTS = {"delay": 500000, "weight_bits": 8, "activation_bits": 8, "symmetric": False}
_NMS_DEFAULTS = {"score_threshold": 0.0, "iou_threshold": 0.6, "max_detections_per_class": 100,
                 "max_total_detections": 100}
_ANCHOR_DEFAULTS = {"num_layers": 6, "min_scale": 0.2, "max_scale": 0.95,
                    "reduce_boxes_in_lowest_layer": True, "interpolated_scale_aspect_ratio": 1.0}
_BOX_CODER_DEFAULTS = {"y_scale": 10.0, "x_scale": 10.0, "height_scale": 5.0, "width_scale": 5.0}
_RESIZER_DEFAULT_SIDE = 300  # FixedShapeResizer's proto default for height and width

LABEL_MAP_COMMENT = "# label_map: "


# ============================================================== text format: values and errors
class EnumValue(str):
    """A bare identifier in text format (an enum value such as SIGMOID). Compares as a str."""

    def __repr__(self):
        return f"EnumValue({str.__repr__(self)})"


class TextProtoError(ConfigError):
    """Text-format syntax error; `line` and `column` are 1-based."""

    def __init__(self, problem, *, line, column, source=None, fix=None):
        self.line, self.column, self.source = line, column, source
        where = f"{source}, line {line}, column {column}" if source else \
            f"line {line}, column {column}"
        super().__init__(problem, where=where, fix=fix or "correct the text-format syntax there.")


_TOKEN_RE = re.compile(r"""
    (?P<space>[ \t\r\f\v]+)
  | (?P<newline>\n)
  | (?P<comment>\#[^\n]*)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)[fF]?(?![A-Za-z0-9_]))
  | (?P<signed_word>[-+][A-Za-z_][A-Za-z0-9_]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<string>["'])
  | (?P<punct>[{}\[\]<>:,;])
""", re.VERBOSE)

_SIMPLE_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "\\": b"\\", "'": b"'", '"': b'"',
                   "?": b"?", "a": b"\a", "b": b"\b", "f": b"\f", "v": b"\v"}
_FLOAT_WORDS = {"inf": float("inf"), "infinity": float("inf"), "nan": float("nan")}


class _Token:
    __slots__ = ("kind", "value", "line", "col")

    def __init__(self, kind, value, line, col):
        self.kind, self.value, self.line, self.col = kind, value, line, col

    def describe(self) -> str:
        if self.kind == "eof":
            return "the end of the text"
        if self.kind == "string":
            return f"the string {self.value!r}"
        return f"{self.value!r}" if self.kind == "punct" else f"{self.kind} {self.value!r}"


def _tokenize(text: str, source):
    tokens = []
    pos, line, line_start, n = 0, 1, 0, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        col = pos - line_start + 1
        if m is None:
            raise TextProtoError(f"unexpected character {text[pos]!r}.", line=line, column=col,
                                 source=source)
        kind = m.lastgroup
        if kind == "newline":
            line, line_start = line + 1, m.end()
            pos = m.end()
            continue
        if kind in ("space", "comment"):
            pos = m.end()
            continue
        if kind == "string":
            value, pos = _read_string(text, pos, line, col, source)
            tokens.append(_Token("string", value, line, col))
            continue
        tokens.append(_Token(kind, m.group(), line, col))
        pos = m.end()
    tokens.append(_Token("eof", None, line, pos - line_start + 1))
    return tokens


def _read_string(text, start, line, col, source):
    """Read one quoted string starting at text[start] (the quote) -> (str, position after it)."""
    quote = text[start]
    out = bytearray()
    i, n = start + 1, len(text)
    while True:
        if i >= n or text[i] == "\n":
            raise TextProtoError(f"string opened with {quote} is not closed on its line.",
                                 line=line, column=col, source=source,
                                 fix=f"add the closing {quote} (write a line break as \\n).")
        ch = text[i]
        if ch == quote:
            return out.decode("utf-8", errors="backslashreplace"), i + 1
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        esc_col = col + (i - start)
        if i + 1 >= n:
            raise TextProtoError("string ends with a lone backslash.", line=line, column=esc_col,
                                 source=source)
        e = text[i + 1]
        if e in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[e]
            i += 2
        elif e in "xX":
            m = re.compile(r"[0-9a-fA-F]{1,2}").match(text, i + 2)
            if not m:
                raise TextProtoError("\\x must be followed by one or two hex digits.", line=line,
                                     column=esc_col, source=source)
            out.append(int(m.group(), 16))
            i = m.end()
        elif e in "01234567":
            m = re.compile(r"[0-7]{1,3}").match(text, i + 1)
            out.append(int(m.group(), 8) & 0xFF)
            i = m.end()
        elif e in "uU":
            width = 4 if e == "u" else 8
            digits = text[i + 2:i + 2 + width]
            if len(digits) != width or not re.fullmatch(r"[0-9a-fA-F]+", digits):
                raise TextProtoError(f"\\{e} must be followed by {width} hex digits.", line=line,
                                     column=esc_col, source=source)
            try:
                out += chr(int(digits, 16)).encode("utf-8", errors="surrogatepass")
            except (ValueError, OverflowError):
                raise TextProtoError(f"\\{e}{digits} is not a valid code point.", line=line,
                                     column=esc_col, source=source) from None
            i += 2 + width
        else:
            raise TextProtoError(f"unknown escape \\{e} in a string.", line=line, column=esc_col,
                                 source=source, fix="write a backslash as \\\\.")


# ============================================================== text format: parser
class _Parser:
    def __init__(self, text, source):
        self.tokens = _tokenize(text, source)
        self.i = 0
        self.source = source
        self.lines = text.split("\n")
        self.suspect = None  # first '}' whose indentation does not match its opener's line

    def _indent(self, tok):
        """Indentation of tok's line when tok is the first thing on it, else None."""
        line = self.lines[tok.line - 1]
        stripped = line.lstrip(" \t")
        return len(line) - len(stripped) if len(line) - len(stripped) == tok.col - 1 else None

    def error(self, problem, tok, fix=None):
        raise TextProtoError(problem, line=tok.line, column=tok.col, source=self.source, fix=fix)

    def peek(self):
        return self.tokens[self.i]

    def take(self):
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def at(self, *puncts):
        tok = self.peek()
        return tok.kind == "punct" and tok.value in puncts

    def message(self, opener=None, owner=None, owner_tok=None):
        """Fields up to the closer of `opener` (a '{' or '<' token), or to the end of the text."""
        closer = {"{": "}", "<": ">"}.get(opener.value) if opener else None
        msg: dict = {}
        while True:
            tok = self.peek()
            if tok.kind == "eof":
                if closer:
                    hint = ""
                    if self.suspect:
                        close_tok, name, open_line = self.suspect
                        hint = (f" The '{closer}' on line {close_tok.line} is indented unlike the "
                                f"line that opened {name!r} (line {open_line}): a '{closer}' is "
                                f"probably missing before line {close_tok.line}.")
                    self.error(f"'{opener.value}' of {owner!r} is never closed: the text ends "
                               f"first.{hint}", opener,
                               fix=f"add the missing '{closer}' (braces must balance).")
                return msg
            if tok.kind == "punct" and tok.value in "}>":
                if tok.value == closer:
                    self.take()
                    if self.suspect is None:
                        a, b = self._indent(owner_tok), self._indent(tok)
                        if a is not None and b is not None and a != b:
                            self.suspect = (tok, owner, owner_tok.line)
                    return msg
                if closer:
                    self.error(f"{tok.value!r} does not close '{opener.value}' of {owner!r} "
                               f"(line {opener.line}, column {opener.col}).", tok)
                self.error(f"{tok.value!r} closes nothing: there is no open message here.", tok,
                           fix="remove it, or add the missing '{' (braces must balance).")
            if tok.kind != "ident":
                self.error(f"expected a field name, got {tok.describe()}.", tok)
            name = self.take().value
            self.field(msg, name, tok)
            if self.at(",", ";"):
                self.take()

    def field(self, msg, name, name_tok):
        colon = False
        if self.at(":"):
            self.take()
            colon = True
        values = msg.setdefault(name, [])
        if self.at("{", "<"):
            values.append(self.message(self.take(), name, name_tok))
        elif self.at("["):
            self.take()
            if self.at("]"):
                self.take()
                return
            while True:
                if self.at("{", "<"):
                    values.append(self.message(self.take(), name, name_tok))
                else:
                    values.append(self.scalar(name))
                if self.at(","):
                    self.take()
                    continue
                if self.at("]"):
                    self.take()
                    return
                self.error(f"expected ',' or ']' in the list of {name!r}, got "
                           f"{self.peek().describe()}.", self.peek())
        else:
            if not colon:
                self.error(f"expected ':' or '{{' after the field name {name!r}, got "
                           f"{self.peek().describe()}.", self.peek())
            values.append(self.scalar(name))

    def scalar(self, name):
        tok = self.peek()
        if tok.kind == "string":
            parts = []
            while self.peek().kind == "string":  # adjacent strings concatenate
                parts.append(self.take().value)
            return "".join(parts)
        if tok.kind == "number":
            self.take()
            return _number(tok.value)
        if tok.kind == "signed_word":
            word = tok.value[1:].lower()
            if word in _FLOAT_WORDS:
                self.take()
                return -_FLOAT_WORDS[word] if tok.value[0] == "-" else _FLOAT_WORDS[word]
            self.error(f"{tok.value!r} is not a number.", tok)
        if tok.kind == "ident":
            self.take()
            if tok.value in ("true", "True"):
                return True
            if tok.value in ("false", "False"):
                return False
            if tok.value.lower() in _FLOAT_WORDS:
                return _FLOAT_WORDS[tok.value.lower()]
            return EnumValue(tok.value)
        self.error(f"expected a value for {name!r}, got {tok.describe()}.", tok)


def _number(text: str):
    body = text.rstrip("fF") if not text.lower().startswith(("0x", "-0x", "+0x")) else text
    if re.fullmatch(r"[-+]?0[xX][0-9a-fA-F]+", body):
        return int(body, 16)
    if re.fullmatch(r"[-+]?\d+", body) and not text.endswith(("f", "F")):
        return int(body)
    return float(body)


def parse_text_proto(text: str, *, source=None) -> dict:
    """Parse protobuf text format into {field: [values...]}; nested messages are dicts.

    `source` (a file name) goes into error messages. Raises TextProtoError (a ConfigError) with
    the line and column of the first problem.
    """
    return _Parser(text, str(source) if source is not None else None).message()


# ============================================================== text format: path helpers
_MISSING = object()


def values(msg: dict, path: str) -> list:
    """All values of the last field of a dotted path, following the first value of the others."""
    parts = path.split(".")
    node = msg
    for part in parts[:-1]:
        vals = node.get(part) if isinstance(node, dict) else None
        if not vals or not isinstance(vals[0], dict):
            return []
        node = vals[0]
    return list(node.get(parts[-1], [])) if isinstance(node, dict) else []


def first(msg: dict, path: str, default=_MISSING):
    """The first value at a dotted path; `default` (or KeyError when none is given) if absent."""
    vals = values(msg, path)
    if vals:
        return vals[0]
    if default is _MISSING:
        raise KeyError(path)
    return default


def has(msg: dict, path: str) -> bool:
    return bool(values(msg, path))


# ============================================================== text format: writer
def _format_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, EnumValue):
        return str(value)
    if isinstance(value, str):
        return '"' + _escape(value) + '"'
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        text = repr(value)
        return text if any(c in text for c in ".en") else text + ".0"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} in text format")


def _escape(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return "".join(out)


def format_text_proto(msg: dict, indent: int = 0) -> str:
    """{field: value or [values]} -> text format, one field per line, two-space indent."""
    pad = "  " * indent
    lines = []
    for name, vals in msg.items():
        if not isinstance(vals, (list, tuple)):
            vals = [vals]
        for v in vals:
            if isinstance(v, dict):
                inner = format_text_proto(v, indent + 1)
                lines.append(f"{pad}{name} {{\n{inner}{pad}}}\n" if inner else f"{pad}{name} {{\n{pad}}}\n")
            else:
                lines.append(f"{pad}{name}: {_format_scalar(v)}\n")
    return "".join(lines)


# ============================================================== pipeline.config: read
def _read_text(path: Path, what: str) -> str:
    if not path.is_file():
        raise CheckpointError(f"{what} does not exist." if not path.exists() else
                              f"{what} is not a file.", where=str(path),
                              fix="pass the pipeline.config written next to the checkpoint or "
                                  "the exported graph.")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(f"{what} is not UTF-8 text (byte {exc.start}); a TFOD "
                              "pipeline.config is protobuf text format.", where=str(path),
                              fix="pass the text pipeline.config, not a binary file.") from None


def _typed(path, raw, field, kind, default=_MISSING):
    """first(raw, field) checked to be of `kind` ("int", "float", "bool", "str")."""
    vals = values(raw, field)
    value = vals[0] if vals else default
    if value is _MISSING:
        raise CheckpointError(f"{field} is missing.", where=str(path),
                              fix=f"add {field} to the config.")
    ok = {"int": lambda v: isinstance(v, int) and not isinstance(v, bool),
          "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "bool": lambda v: isinstance(v, bool),
          "str": lambda v: isinstance(v, str) and not isinstance(v, EnumValue)}[kind](value)
    if not ok:
        want = {"int": "a whole number", "float": "a number", "bool": "true or false",
                "str": "a quoted string"}[kind]
        raise CheckpointError(f"{field} must be {want}, got {_show(value)}.", where=str(path),
                              fix=f"write {field} as {want}.")
    return float(value) if kind == "float" else value


def _show(value) -> str:
    if isinstance(value, dict):
        return "a message { ... }"
    return str(value) if isinstance(value, EnumValue) else repr(value)


def _settings(path, raw, prefix, defaults):
    out = {}
    for key, default in defaults.items():
        kind = "bool" if isinstance(default, bool) else "int" if isinstance(default, int) else "float"
        out[key] = _typed(path, raw, f"{prefix}.{key}", kind, default)
    return out


def read_pipeline_config(path) -> dict:
    """Read a TFOD pipeline.config describing an SSD MobileDet model.

    Returns {variant, feature_extractor_type, num_classes, input_size, depth_multiplier, spec
    (ModelSpec), qat, qat_settings (or None), postprocess (or None), anchors (or None),
    box_coder (or None), label_map_path (or None), label_map (embedded by
    write_pipeline_config, or None), path, raw}. Raises CheckpointError naming the file, the
    field and the fix.
    """
    from include.mobiledet.spec import ModelSpec

    path = Path(path)
    text = _read_text(path, "pipeline.config")
    try:
        raw = parse_text_proto(text, source=path)
    except TextProtoError as exc:
        raise CheckpointError(f"not valid protobuf text format: {exc.problem}", where=exc.where,
                              fix=exc.fix) from None
    where = str(path)
    if not has(raw, "model"):
        raise CheckpointError("no `model { ... }` block: this is not a TFOD pipeline.config.",
                              where=where, fix="pass the pipeline.config of a TFOD SSD model.")
    if not has(raw, "model.ssd"):
        arch = next(iter(first(raw, "model")), None) if isinstance(first(raw, "model"), dict) else None
        raise CheckpointError(f"model.ssd is missing (the model is {arch or 'empty'!s}); only the "
                              "SSD meta-architecture (SSDLite MobileDet) is supported.",
                              where=where, fix="pass the config of an ssdlite_mobiledet model.")
    ssd = "model.ssd"
    fe_type = _typed(path, raw, f"{ssd}.feature_extractor.type", "str")
    if fe_type not in FEATURE_EXTRACTORS:
        raise CheckpointError(
            f"model.ssd.feature_extractor.type is {fe_type!r}, which is not a MobileDet feature "
            f"extractor; supported types: {', '.join(FEATURE_EXTRACTORS)}.", where=where,
            fix="convert a MobileDet model (ssdlite_mobiledet_* config), or set "
                "model.ssd.feature_extractor.type to the MobileDet variant it was trained with.")
    variant = FEATURE_EXTRACTORS[fe_type]
    num_classes = _typed(path, raw, f"{ssd}.num_classes", "int")
    depth_multiplier = _typed(path, raw, f"{ssd}.feature_extractor.depth_multiplier", "float", 1.0)

    resizer = first(raw, f"{ssd}.image_resizer", None)
    if not isinstance(resizer, dict) or "fixed_shape_resizer" not in resizer:
        kinds = ", ".join(resizer) if isinstance(resizer, dict) and resizer else "none"
        raise CheckpointError(
            f"model.ssd.image_resizer must be a fixed_shape_resizer (found: {kinds}); the TFLite "
            "export has a fixed square input.", where=where,
            fix="use image_resizer { fixed_shape_resizer { height: 320 width: 320 } }.")
    fsr = f"{ssd}.image_resizer.fixed_shape_resizer"
    height = _typed(path, raw, f"{fsr}.height", "int", _RESIZER_DEFAULT_SIDE)
    width = _typed(path, raw, f"{fsr}.width", "int", _RESIZER_DEFAULT_SIDE)
    if height != width:
        raise CheckpointError(
            f"{fsr} is {height}x{width} (height x width); MobileDet exports need a square "
            "input (height == width).", where=where,
            fix=f"set height and width to the same value, e.g. {max(height, width)}, and retrain "
                "or re-export the model at that size.")
    try:
        spec = ModelSpec(variant=variant, num_classes=num_classes, input_size=height,
                         depth_multiplier=depth_multiplier)
    except ConfigError as exc:
        field = {"num_classes": f"{ssd}.num_classes", "input_size": f"{fsr}.height/width",
                 "depth_multiplier": f"{ssd}.feature_extractor.depth_multiplier"}.get(exc.where,
                                                                                         exc.where)
        raise CheckpointError(f"{field}: {exc.problem}", where=where, fix=exc.fix) from None

    qat = has(raw, "graph_rewriter.quantization")
    qat_settings = _settings(path, raw, "graph_rewriter.quantization", _QUANT_DEFAULTS) if qat else None

    postprocess = None
    if has(raw, f"{ssd}.post_processing"):
        postprocess = {}
        if has(raw, f"{ssd}.post_processing.batch_non_max_suppression"):
            postprocess.update(_settings(path, raw, f"{ssd}.post_processing.batch_non_max_suppression",
                                         _NMS_DEFAULTS))
        conv = first(raw, f"{ssd}.post_processing.score_converter", None)
        postprocess["score_converter"] = str(conv) if conv is not None else "IDENTITY"

    anchors = None
    if has(raw, f"{ssd}.anchor_generator.ssd_anchor_generator"):
        prefix = f"{ssd}.anchor_generator.ssd_anchor_generator"
        anchors = {"type": "ssd_anchor_generator", **_settings(path, raw, prefix, _ANCHOR_DEFAULTS)}
        ratios = values(raw, f"{prefix}.aspect_ratios")
        if any(isinstance(r, bool) or not isinstance(r, (int, float)) for r in ratios):
            raise CheckpointError(f"{prefix}.aspect_ratios must be numbers, got {ratios!r}.",
                                  where=where, fix="write e.g. aspect_ratios: 1.0")
        anchors["aspect_ratios"] = [float(r) for r in ratios]
    elif has(raw, f"{ssd}.anchor_generator"):
        anchors = {"type": next(iter(first(raw, f"{ssd}.anchor_generator")), "unknown")}

    box_coder = None
    if has(raw, f"{ssd}.box_coder.faster_rcnn_box_coder"):
        box_coder = {"type": "faster_rcnn_box_coder",
                     **_settings(path, raw, f"{ssd}.box_coder.faster_rcnn_box_coder",
                                 _BOX_CODER_DEFAULTS)}

    label_map_path = None
    for reader in ("train_input_reader", "eval_input_reader"):
        label_map_path = first(raw, f"{reader}.label_map_path", None)
        if label_map_path:
            break

    return {
        "path": str(path),
        "variant": variant,
        "feature_extractor_type": fe_type,
        "num_classes": num_classes,
        "input_size": height,
        "depth_multiplier": depth_multiplier,
        "spec": spec,
        "qat": qat,
        "qat_settings": qat_settings,
        "postprocess": postprocess,
        "anchors": anchors,
        "box_coder": box_coder,
        "label_map_path": label_map_path or None,
        "label_map": _embedded_label_map(text, path),
        "raw": raw,
    }


def _embedded_label_map(text: str, path: Path) -> dict | None:
    """The label map write_pipeline_config puts in comment lines, or None."""
    items = [line[len(LABEL_MAP_COMMENT):] for line in text.splitlines()
             if line.startswith(LABEL_MAP_COMMENT)]
    if not items:
        return None
    out = {}
    for n, item in enumerate(items, 1):
        try:
            msg = parse_text_proto(item, source=f"{path} (label map comment {n})")
        except TextProtoError as exc:
            raise CheckpointError(f"label map comment line is malformed: {exc.problem}",
                                  where=exc.where, fix="write the config again.") from None
        try:
            item = first(msg, "item")
            idx, cid, name = (first(item, "class_index"), first(item, "category_id"),
                              first(item, "name"))
        except KeyError as exc:
            raise CheckpointError(f"label map comment {n} lacks {exc.args[0]}.", where=str(path),
                                  fix="write the config again.") from None
        out[int(idx)] = {"name": str(name), "category_id": int(cid)}
    return out


# ============================================================== label_map.pbtxt
def read_label_map(path) -> dict:
    """A TFOD StringIntLabelMap (`item { id: 1 name: "person" }` ...) -> {class_index: {name,
    category_id}} with TFOD's convention class_index = id - 1 (id 0 is the background)."""
    path = Path(path)
    text = _read_text(path, "label map")
    try:
        raw = parse_text_proto(text, source=path)
    except TextProtoError as exc:
        raise CheckpointError(f"label map is not valid text format: {exc.problem}",
                              where=exc.where, fix=exc.fix) from None
    items = raw.get("item", [])
    if not items:
        raise CheckpointError("label map has no `item { ... }` entries.", where=str(path),
                              fix="list each class as item { id: 1 name: \"person\" }.")
    out = {}
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or not isinstance(item.get("id", [None])[0], int) \
                or isinstance(item["id"][0], bool):
            raise CheckpointError(f"item {n} has no whole-number id.", where=str(path),
                                  fix="give every item an id: 1, 2, ...")
        cid = item["id"][0]
        if cid == 0:
            continue  # background
        if cid < 0:
            raise CheckpointError(f"item {n} has id {cid}; ids start at 1.", where=str(path),
                                  fix="number the classes from 1 (0 is the background).")
        if cid - 1 in out:
            raise CheckpointError(f"id {cid} appears twice (item {n}).", where=str(path),
                                  fix="give every item its own id.")
        name = first(item, "display_name", None) or first(item, "name", None) or f"class_{cid}"
        out[cid - 1] = {"name": str(name), "category_id": cid}
    return dict(sorted(out.items()))


def format_label_map(label_map: dict) -> str:
    """{class_index: {name, category_id}} -> TFOD label_map.pbtxt text (id = class_index + 1,
    TFOD's convention; the dataset category id goes into a comment)."""
    out = []
    for idx, entry in _sorted_label_map(label_map):
        out.append(f"item {{\n  id: {idx + 1}  # category_id {entry['category_id']}\n"
                   f"  name: \"{_escape(entry['name'])}\"\n}}\n")
    return "".join(out)


def _sorted_label_map(label_map: dict):
    rows = []
    for key, entry in (label_map or {}).items():
        try:
            idx = int(key)
            name, cid = str(entry["name"]), int(entry["category_id"])
        except (TypeError, ValueError, KeyError):
            raise ConfigError(f"label map entry {key!r}: {entry!r} is not "
                              "class_index -> {\"name\": str, \"category_id\": int}.",
                              where="label_map", fix="pass {0: {\"name\": \"person\", "
                              "\"category_id\": 1}, ...}.") from None
        rows.append((idx, {"name": name, "category_id": cid}))
    return sorted(rows)


# ============================================================== pipeline.config: write
def pipeline_config_dict(spec, *, qat: bool, steps: int, batch_size: int = 8,
                         learning_rate: float = 0.08) -> dict:
    """The TFOD-style config of one of this project's models, as a text-format dict."""
    E = EnumValue
    steps = int(steps)
    warmup = min(2000, max(0, steps // 10))
    hyper = lambda decay_eps: {  # noqa: E731
        "activation": E("RELU_6"),
        "regularizer": {"l2_regularizer": {"weight": 4e-05}},
        "initializer": {"truncated_normal_initializer": {"mean": 0.0, "stddev": 0.03}},
        "batch_norm": {"train": True, "scale": True, "center": True,
                       "decay": decay_eps[0], "epsilon": decay_eps[1]},
    }
    ssd = {
        "inplace_batchnorm_update": True,
        "freeze_batchnorm": False,
        "num_classes": spec.num_classes,
        "box_coder": {"faster_rcnn_box_coder": {"y_scale": 10.0, "x_scale": 10.0,
                                                "height_scale": 5.0, "width_scale": 5.0}},
        "matcher": {"argmax_matcher": {"matched_threshold": 0.5, "unmatched_threshold": 0.5,
                                       "ignore_thresholds": False,
                                       "negatives_lower_than_unmatched": True,
                                       "force_match_for_each_row": True,
                                       "use_matmul_gather": True}},
        "similarity_calculator": {"iou_similarity": {}},
        "encode_background_as_zeros": True,
        "anchor_generator": {"ssd_anchor_generator": {
            "num_layers": 6, "min_scale": 0.2, "max_scale": 0.95,
            "aspect_ratios": [1.0, 2.0, 0.5, 3.0, 0.3333],
            "reduce_boxes_in_lowest_layer": True}},
        "image_resizer": {"fixed_shape_resizer": {"height": spec.input_size,
                                                  "width": spec.input_size}},
        "box_predictor": {"convolutional_box_predictor": {
            "min_depth": 0, "max_depth": 0, "num_layers_before_predictor": 0,
            "use_dropout": False, "dropout_keep_probability": 0.8, "kernel_size": 3,
            "use_depthwise": True, "box_code_size": 4, "apply_sigmoid_to_scores": False,
            "class_prediction_bias_init": -4.6,
            "conv_hyperparams": hyper((0.97, 0.001))}},
        "feature_extractor": {
            "type": VARIANT_TO_TYPE[spec.variant],
            "min_depth": 16,
            "depth_multiplier": float(spec.depth_multiplier),
            "use_depthwise": True,
            "conv_hyperparams": hyper((0.97, 0.001)),
            "override_base_feature_extractor_hyperparams": False},
        "loss": {
            "classification_loss": {"weighted_sigmoid_focal": {"alpha": 0.75, "gamma": 2.0}},
            "localization_loss": {"weighted_smooth_l1": {"delta": 1.0}},
            "classification_weight": 1.0,
            "localization_weight": 1.0},
        "normalize_loss_by_num_matches": True,
        "normalize_loc_loss_by_codesize": True,
        "post_processing": {
            "batch_non_max_suppression": {"score_threshold": 1e-8, "iou_threshold": 0.6,
                                          "max_detections_per_class": 100,
                                          "max_total_detections": 100,
                                          "use_static_shapes": True},
            "score_converter": E("SIGMOID")},
    }
    config = {
        "model": {"ssd": ssd},
        "train_config": {
            "batch_size": int(batch_size),
            "num_steps": steps,
            "data_augmentation_options": [{"random_horizontal_flip": {}},
                                          {"ssd_random_crop": {}}],
            "optimizer": {
                "momentum_optimizer": {
                    "learning_rate": {"cosine_decay_learning_rate": {
                        "learning_rate_base": float(learning_rate),
                        "total_steps": max(steps, 1),
                        "warmup_learning_rate": round(float(learning_rate) / 6, 6),
                        "warmup_steps": warmup}},
                    "momentum_optimizer_value": 0.9},
                "use_moving_average": False},
            "max_number_of_boxes": 100,
            "unpad_groundtruth_tensors": False},
        "eval_config": {"metrics_set": "coco_detection_metrics", "use_moving_averages": False},
    }
    if qat:
        config["graph_rewriter"] = {"quantization": {"delay": 0, "weight_bits": 8,
                                                     "activation_bits": 8}}
    return config


def write_pipeline_config(path, spec, *, qat: bool, label_map: dict, steps: int,
                          batch_size: int = 8, learning_rate: float = 0.08) -> Path:
    """Write a TFOD-style pipeline.config for one of this project's checkpoints (atomically).

    `label_map` ({class_index: {"name", "category_id"}}) goes into comment lines that
    read_pipeline_config reads back (TFOD ignores them). Returns the path.
    """
    path = Path(path)
    rows = _sorted_label_map(label_map)
    header = [
        f"# SSDLite + MobileDet-{spec.variant.upper() if spec.variant != 'edgetpu' else 'EdgeTPU'}"
        f" ({VARIANT_TO_TYPE[spec.variant]}), {spec.input_size}x{spec.input_size} input, depth "
        f"multiplier {spec.depth_multiplier:g}, {spec.num_classes} classes.",
        "# Written by the mobiledet pipeline in TFOD pipeline.config (protobuf text) format.",
        "# " + ("Quantization-aware training: graph_rewriter { quantization } below; the exported "
                "graph carries FakeQuant nodes." if qat else "Float training (no graph_rewriter)."),
        "#",
    ]
    if rows:
        header.append("# Label map: model class index -> dataset category (read back by "
                      "include.convert.tfod; ignored by TFOD).")
        for idx, entry in rows:
            header.append(f"{LABEL_MAP_COMMENT}item {{ class_index: {idx} category_id: "
                          f"{entry['category_id']} name: \"{_escape(entry['name'])}\" }}")
        header.append("#")
    config = pipeline_config_dict(spec, qat=qat, steps=steps, batch_size=batch_size,
                                  learning_rate=learning_rate)
    body = "\n".join(format_text_proto({key: value}) for key, value in config.items())
    text = "\n".join(header) + "\n\n" + body
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
