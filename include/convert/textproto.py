"""Protobuf text format, the generic part: no schema needed, or checked against one.

TFOD configs (``pipeline.config``, ``label_map.pbtxt``) are protobuf *text format*. This module
knows the syntax, not what any field means (that is include/convert/tfod.py):

    parse_text_proto(text) -> dict      every field maps to a LIST of values (fields repeat);
                                        nested messages are dicts, enums are `EnumValue`
                                        (a str), strings are str, numbers int/float, true/false bool
    format_text_proto(msg) -> str       the inverse (dict -> text)
    first(msg, "a.b.c"), values(msg, "a.b.c"), has(msg, "a.b")   dotted-path helpers
    parse_message(text, message, open_types=...) -> (message, dict)
                                        the same text checked against a protobuf message schema
                                        by google.protobuf.text_format: field names, types, enum
                                        values, fields set twice, oneof alternatives

Why two parsers. `google.protobuf.text_format` needs a schema, reports syntax errors tersely,
and is either strict about unknown fields everywhere or lenient everywhere. The hand-written
parser here reads any text without a schema (the label-map comments, the landing watcher's cheap
metadata), names the line and column of a syntax error and where an unclosed brace probably
is, and records where each field is. `parse_message` uses those positions to (1) blank out, in
place, the fields of *open* message types that the schema does not declare (kept in the dict,
not interpreted: TFOD has far more fields than a reader needs, and they change between TFOD
versions), (2) let text_format check everything else, and (3) name the dotted field of any
text_format error. Syntax errors name the line and column; schema errors name the line, column,
the dotted field, the problem and the fix (with the nearest valid name for an unknown field).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field as dc_field

from include.errors import ConfigError

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
    __slots__ = ("kind", "value", "line", "col", "pos", "end")

    def __init__(self, kind, value, line, col, pos=0, end=0):
        self.kind, self.value, self.line, self.col = kind, value, line, col
        self.pos, self.end = pos, end  # offsets in the text: [pos, end)

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
            start = pos
            value, pos = _read_string(text, pos, line, col, source)
            tokens.append(_Token("string", value, line, col, start, pos))
            continue
        tokens.append(_Token(kind, m.group(), line, col, pos, m.end()))
        pos = m.end()
    tokens.append(_Token("eof", None, line, pos - line_start + 1, n, n))
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
@dataclass(eq=False)
class Site:
    """Where one occurrence of a field is: its name token (1-based line and column, offset
    `start`), its value [value_start, value_end), the end of the field with its separator, and
    the sites inside each message value."""

    name: str
    path: tuple
    line: int
    col: int
    start: int
    end: int = 0
    value_start: int = 0
    value_end: int = 0
    messages: list = dc_field(default_factory=list)  # one list of Sites per message value


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

    def message(self, opener=None, owner=None, owner_tok=None, sites=None, path=()):
        """Fields up to the closer of `opener` (a '{' or '<' token), or to the end of the text.
        Each field occurrence is appended to `sites` as a `Site`."""
        sites = [] if sites is None else sites
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
            site = Site(name, path + (name,), tok.line, tok.col, tok.pos)
            sites.append(site)
            self.field(msg, name, tok, site)
            site.value_end = self.tokens[self.i - 1].end
            if self.at(",", ";"):
                self.take()
            site.end = self.peek().pos

    def _submessage(self, name, name_tok, site):
        child = []
        site.messages.append(child)
        return self.message(self.take(), name, name_tok, child, site.path)

    def field(self, msg, name, name_tok, site):
        colon = False
        if self.at(":"):
            self.take()
            colon = True
        site.value_start = self.peek().pos
        values = msg.setdefault(name, [])
        if self.at("{", "<"):
            values.append(self._submessage(name, name_tok, site))
        elif self.at("["):
            self.take()
            if self.at("]"):
                self.take()
                return
            while True:
                if self.at("{", "<"):
                    values.append(self._submessage(name, name_tok, site))
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
    return parse_text_proto_sites(text, source=source)[0]


def parse_text_proto_sites(text: str, *, source=None) -> tuple[dict, list]:
    """`parse_text_proto`, plus the `Site` of every field occurrence (top-level list)."""
    sites: list = []
    msg = _Parser(text, str(source) if source is not None else None).message(sites=sites)
    return msg, sites


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
        return '"' + escape_string(value) + '"'
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


def escape_string(s: str) -> str:
    """`s` as the inside of a double-quoted text-format string."""
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


# ============================================================== text format against a schema
class TextProtoSchemaError(ConfigError):
    """The text does not fit the message schema. `path` is the dotted field (a tuple), `line`
    and `column` are 1-based, `suggestion` the nearest valid field or enum name (or None)."""

    def __init__(self, problem, *, line, column, path, source=None, fix=None, suggestion=None):
        self.line, self.column, self.source = line, column, source
        self.path, self.suggestion = tuple(path), suggestion
        where = f"{source}, line {line}, column {column}" if source else \
            f"line {line}, column {column}"
        super().__init__(problem, where=where, fix=fix)

    @property
    def field(self) -> str:
        return ".".join(self.path)


def parse_message(text: str, message, *, source=None, open_types=()):
    """Parse `text` into the protobuf `message` (an instance; filled in place) and into a dict.

    Returns (message, dict). Syntax errors raise TextProtoError (as `parse_text_proto`). Then
    google.protobuf.text_format checks the text against the message's schema; a problem
    raises TextProtoSchemaError naming the line, column and dotted field. Message types whose
    full name is in `open_types` accept fields the schema does not declare: those are blanked
    out before text_format sees them (lines and columns stay put) and stay in the dict only. An
    open type without fields is opaque: its whole content is kept uninterpreted.
    """
    from google.protobuf import text_format

    raw, sites = parse_text_proto_sites(text, source=source)
    chars = list(text)
    source = str(source) if source is not None else None
    _blank_unknown(sites, message.DESCRIPTOR, frozenset(open_types), chars, source)
    try:
        text_format.Parse("".join(chars), message)
    except text_format.ParseError as exc:
        raise _schema_error(exc, sites, message.DESCRIPTOR, text, source) from None
    return message, raw


_TYPO_CUTOFF = 0.8  # an unknown name this close to an absent declared field is a misspelling


def _swapped(a: str, b: str) -> bool:
    """a is b with two neighbouring letters swapped (difflib scores those low: nmae/name)."""
    if len(a) != len(b) or a == b:
        return False
    diff = [i for i in range(len(a)) if a[i] != b[i]]
    return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and \
        a[diff[1]] == b[diff[0]]


def _blank_unknown(sites, descriptor, open_types, chars, source=None) -> None:
    present = {site.name for site in sites}
    for site in sites:
        fd = descriptor.fields_by_name.get(site.name)
        if fd is None:
            if descriptor.full_name in open_types:
                absent = [f.name for f in descriptor.fields if f.name not in present]
                near = difflib.get_close_matches(site.name, absent, n=1, cutoff=_TYPO_CUTOFF) \
                    or [n for n in absent if _swapped(site.name, n)][:1]
                if near:
                    dotted = ".".join(site.path[:-1] + (near[0],))
                    raise TextProtoSchemaError(
                        f"unknown field {'.'.join(site.path)!r}: did you mean {dotted}? "
                        f"({near[0]} is not set.)", line=site.line,
                        column=site.col, path=site.path, source=source,
                        fix=f"write {near[0]}.", suggestion=near[0])
                for i in range(site.start, site.end):
                    if chars[i] != "\n":
                        chars[i] = " "
            continue  # a closed type: text_format reports the unknown field
        if fd.message_type is not None:
            for inner in site.messages:
                _blank_unknown(inner, fd.message_type, open_types, chars, source)


def _flatten(sites, out=None) -> list:
    out = [] if out is None else out
    for site in sites:
        out.append(site)
        for inner in site.messages:
            _flatten(inner, out)
    return out


def _descriptors(root, path):
    """[(message descriptor, field descriptor or None)] along a dotted path."""
    out, desc = [], root
    for name in path:
        fd = desc.fields_by_name.get(name) if desc is not None else None
        out.append((desc, fd))
        desc = fd.message_type if fd is not None else None
    return out


_SCALAR_WANT = {"int": "a whole number", "uint": "a whole number >= 0", "float": "a number",
                "bool": "true or false", "string": "a quoted string"}


def _want(fd) -> str:
    from google.protobuf.descriptor import FieldDescriptor as F

    if fd.message_type is not None:
        return "a message { ... }"
    if fd.enum_type is not None:
        return "one of " + ", ".join(v.name for v in fd.enum_type.values)
    kind = {F.CPPTYPE_INT32: "int", F.CPPTYPE_INT64: "int", F.CPPTYPE_UINT32: "uint",
            F.CPPTYPE_UINT64: "uint", F.CPPTYPE_FLOAT: "float", F.CPPTYPE_DOUBLE: "float",
            F.CPPTYPE_BOOL: "bool", F.CPPTYPE_STRING: "string"}[fd.cpp_type]
    return _SCALAR_WANT[kind]


def _schema_error(exc, sites, root, text, source) -> TextProtoSchemaError:
    line, col = exc.GetLine() or 1, exc.GetColumn() or 1
    detail = re.sub(r"^\d+:\d+ : ", "", str(exc))
    flat = [s for s in _flatten(sites) if (s.line, s.col) <= (line, col)]
    site = max(flat, key=lambda s: (s.line, s.col), default=None)
    if site is None:  # nothing to point at (should not happen): say what text_format said
        return TextProtoSchemaError(detail, line=line, column=col, path=(), source=source,
                                    fix="correct the text there.")
    path = site.path
    dotted = ".".join(path)
    chain = _descriptors(root, path)
    parent_desc, fd = chain[-1]
    parent = ".".join(path[:-1]) or "the top level"
    value = " ".join(text[site.value_start:site.value_end].split())
    if len(value) > 60 or site.messages:
        value = "a message { ... }" if site.messages else value[:57] + "..."
    suggestion = None

    m = re.search(r'has no field named "([^"]+)"', detail)
    if m or fd is None:
        names = [f.name for f in parent_desc.fields] if parent_desc is not None else []
        near = difflib.get_close_matches(site.name, names, n=1, cutoff=0.6)
        suggestion = near[0] if near else None
        hint = f" Did you mean {'.'.join(path[:-1] + (suggestion,))}?" if suggestion else ""
        problem = f"unknown field {dotted!r}: {parent} has no field {site.name!r}.{hint}"
        fix = (f"write {suggestion}." if suggestion else "remove it or correct its name.") + (
            f" The fields of {parent}: {', '.join(names)}." if names else "")
        return TextProtoSchemaError(problem, line=line, column=col, path=path, source=source,
                                    fix=fix, suggestion=suggestion)
    if "should not have multiple" in detail:
        problem = f"{dotted} is set more than once; it holds one value."
        fix = f"keep one {site.name} in {parent}."
    elif "another member of oneof" in detail:
        m = re.search(r'along with field "([^"]+)"', detail)
        other = m.group(1) if m else "another field"
        problem = (f"{parent} sets both {other} and {site.name}; they are alternatives (only "
                   "one may be set).")
        fix = f"keep either {other} or {site.name}."
    else:
        want = _want(fd)
        if fd.enum_type is not None and re.search(r"has no value named|Expected identifier",
                                                  detail):
            near = difflib.get_close_matches(value, [v.name for v in fd.enum_type.values], n=1)
            suggestion = near[0] if near else None
        hint = f" Did you mean {suggestion}?" if suggestion else ""
        problem = f"{dotted} must be {want}, got {value}.{hint}"
        fix = f"write {dotted} as {want}."
    return TextProtoSchemaError(problem, line=line, column=col, path=path, source=source,
                                fix=fix, suggestion=suggestion)
