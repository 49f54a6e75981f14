"""Read what `edgetpu_compiler` prints: its stdout and its `<name>_edgetpu.log` operation table.

The compiler's stdout for one compiled model is a block of `key: value` lines::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 1524 ms.

    Input model: X.tflite
    Input size: 4.24MiB
    ...
    Number of Edge TPU subgraphs: 1
    Total number of operations: 267
    Operation log: X_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 264
    Number of operations that will run on CPU: 3
    ...
    Compilation succeeded!

With `-s` (and always in the .log file) an operator table follows: the op name left-justified in
a 31-character column, the count in an 11-character column, then the status.

With `-n N` (segments) the compiler prints one such block per segment; with `-d` (delegate
search) it prints `Try to compile segment with N ops` attempts, failed ones ending in
`Compilation failed!`, before the block of the attempt that worked. `parse_compiler_output`
returns every block under `segments` and sums them at the top level.

When every op maps, real compilers print no "Number of operations that will run on ..." lines:
then all ops run on the Edge TPU.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

# Status strings the compiler writes in its operation table.
STATUS_MAPPED = "Mapped to Edge TPU"
STATUS_UNSUPPORTED_DTYPE = "Operation is working on an unsupported data type"
STATUS_UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
STATUS_UNSPECIFIED = ("Operation is otherwise supported, but not mapped due to some "
                      "unspecified limitation")
STATUS_MORE_THAN_ONE_SUBGRAPH = "More than one subgraph is not supported"
STATUS_VERSION = "Operation version not supported"
STATUS_NOT_SUPPORTED = "Operation not supported"
KNOWN_STATUSES = (STATUS_MAPPED, STATUS_UNSUPPORTED_DTYPE, STATUS_UNSUPPORTED_RANK,
                  STATUS_UNSPECIFIED, STATUS_MORE_THAN_ONE_SUBGRAPH, STATUS_VERSION,
                  STATUS_NOT_SUPPORTED)

OPERATOR_COLUMN = 31
COUNT_COLUMN = 11
TABLE_HEADER = "Operator".ljust(OPERATOR_COLUMN) + "Count".ljust(COUNT_COLUMN) + "Status"

NOT_ALL_SUPPORTED = "not all operations are supported by the Edge TPU"

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "TiB": 1024 ** 4,
          "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?i?B)\s*$")
_ROW = re.compile(r"^(\S+)\s+(\d+)\s+(\S.*?)\s*$")
_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$")

# Lines that carry the reason a compilation failed.
_ERROR_PATTERNS = (
    re.compile(r"^ERROR:.*"),
    re.compile(r"^Compilation failed:.*"),
    re.compile(r"^Internal compiler error.*"),
    re.compile(r"^Invalid model:.*"),
    re.compile(r"^Model not quantized.*"),
    re.compile(r"^Compilation timeout\..*"),
    re.compile(r".*terminating with uncaught exception.*"),
    re.compile(r"^Didn't find op for builtin opcode.*"),
)


def parse_size(text: str) -> int | None:
    """'4.24MiB' -> 4445962 bytes; '0.00B' -> 0. None when the text is not a size."""
    m = _SIZE.match(text or "")
    if not m:
        return None
    unit = m.group(2)
    if unit not in _UNITS:
        return None
    return int(round(float(m.group(1)) * _UNITS[unit]))


@dataclass
class OperatorRow:
    operator: str
    count: int
    status: str
    mapped: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SegmentReport:
    """One `Model compiled successfully` block of the compiler's stdout."""
    compile_ms: int | None = None
    input_model: str | None = None
    input_size_bytes: int | None = None
    output_model: str | None = None
    output_size_bytes: int | None = None
    on_chip_memory_used_bytes: int | None = None
    on_chip_memory_remaining_bytes: int | None = None
    off_chip_memory_used_bytes: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    all_supported: bool = True
    operation_log: str | None = None
    operators: list[OperatorRow] = field(default_factory=list)

    def finish(self) -> None:
        if self.total_ops is not None:
            if self.ops_on_tpu is None and self.ops_on_cpu is None and self.all_supported:
                self.ops_on_tpu, self.ops_on_cpu = self.total_ops, 0
            elif self.ops_on_tpu is None and self.ops_on_cpu is not None:
                self.ops_on_tpu = self.total_ops - self.ops_on_cpu
            elif self.ops_on_cpu is None and self.ops_on_tpu is not None:
                self.ops_on_cpu = self.total_ops - self.ops_on_tpu
        if self.ops_on_cpu:
            self.all_supported = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["operators"] = [r.to_dict() for r in self.operators]
        return d


@dataclass
class CompileReport:
    """What one run of the compiler said. Counts and sizes are summed over segments."""
    compiler_version: str | None = None
    compiled: bool = False
    compile_ms: int | None = None
    input_model: str | None = None
    input_size_bytes: int | None = None
    output_model: str | None = None
    output_size_bytes: int | None = None
    on_chip_memory_used_bytes: int | None = None
    on_chip_memory_remaining_bytes: int | None = None
    off_chip_memory_used_bytes: int | None = None
    subgraphs: int | None = None
    total_ops: int | None = None
    ops_on_tpu: int | None = None
    ops_on_cpu: int | None = None
    all_supported: bool = False
    operators: list[OperatorRow] = field(default_factory=list)
    segments: list[SegmentReport] = field(default_factory=list)
    delegate_search: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    timeout_timer_s: int | None = None

    @property
    def error(self) -> str | None:
        return "; ".join(self.errors) if self.errors else None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["operators"] = [r.to_dict() for r in self.operators]
        d["segments"] = [s.to_dict() for s in self.segments]
        d["error"] = self.error
        return d


def parse_operator_table(text: str) -> list[OperatorRow]:
    """The rows of every `Operator  Count  Status` table in the text, in order."""
    rows: list[OperatorRow] = []
    in_table = False
    for line in (text or "").splitlines():
        if _HEADER.match(line):
            in_table = True
            continue
        if not in_table:
            continue
        if not line.strip():
            continue
        row = _parse_row(line)
        if row is None:
            in_table = False  # the table ended (e.g. "Compilation child process completed ...")
            continue
        rows.append(row)
    return rows


def _parse_row(line: str) -> OperatorRow | None:
    line = line.rstrip()
    # The fixed columns first (names are at most 30 characters there) ...
    if len(line) > OPERATOR_COLUMN + COUNT_COLUMN and line[OPERATOR_COLUMN - 1] == " ":
        name = line[:OPERATOR_COLUMN].strip()
        count = line[OPERATOR_COLUMN:OPERATOR_COLUMN + COUNT_COLUMN].strip()
        status = line[OPERATOR_COLUMN + COUNT_COLUMN:].strip()
        if name and " " not in name and count.isdigit() and status:
            return OperatorRow(name, int(count), status, status == STATUS_MAPPED)
    # ... then whitespace-separated, for longer names or re-flowed text.
    m = _ROW.match(line)
    if m:
        status = m.group(3)
        return OperatorRow(m.group(1), int(m.group(2)), status, status == STATUS_MAPPED)
    return None


def format_operator_table(rows) -> str:
    """Rows ({operator, count, status} dicts or OperatorRow) in the compiler's log layout."""
    lines = [TABLE_HEADER, ""]
    for r in rows:
        r = r.to_dict() if isinstance(r, OperatorRow) else r
        lines.append(str(r["operator"]).ljust(OPERATOR_COLUMN - 1) + " "
                     + str(r["count"]).ljust(COUNT_COLUMN - 1) + " " + str(r["status"]))
    return "\n".join(lines)


def parse_operation_log(text: str) -> dict:
    """A `<name>_edgetpu.log` file: compiler version, input/output names and the op table."""
    version = inp = out = None
    for line in (text or "").splitlines():
        s = line.strip()
        if s.startswith("Edge TPU Compiler version"):
            version = s.split("version", 1)[1].strip()
        elif s.startswith("Input:"):
            inp = s.split(":", 1)[1].strip()
        elif s.startswith("Output:"):
            out = s.split(":", 1)[1].strip()
    rows = parse_operator_table(text)
    return {"compiler_version": version, "input_model": inp, "output_model": out,
            "operators": [r.to_dict() for r in rows]}


def _int_after(line: str) -> int | None:
    m = re.search(r":\s*(-?\d+)\s*$", line)
    return int(m.group(1)) if m else None


def parse_compiler_output(stdout: str, log_text: str | None = None) -> CompileReport:
    """Parse the compiler's stdout (and optionally its .log) into a CompileReport."""
    rep = CompileReport()
    seg: SegmentReport | None = None
    attempt: dict | None = None
    outcome: str | None = None      # last "succeeded"/"failed" seen, in order
    table_lines: list[str] = []
    all_errors: list[str] = []

    for raw in (stdout or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("Edge TPU Compiler version"):
            rep.compiler_version = line.split("version", 1)[1].strip()
        elif m := re.match(r"Started a compilation timeout timer of (\d+) seconds", line):
            rep.timeout_timer_s = int(m.group(1))
        elif m := re.match(r"Searching for valid delegate with step (\d+)", line):
            rep.delegate_search.append({"step": int(m.group(1))})
        elif m := re.match(r"Try to compile segment with (\d+) ops", line):
            attempt = {"ops": int(m.group(1)), "intermediate_tensors": [], "compiled": False}
            rep.delegate_search.append(attempt)
        elif line.startswith("Intermediate tensors:") and attempt is not None:
            names = line.split(":", 1)[1].strip()
            attempt["intermediate_tensors"] = [n for n in names.split(",") if n]
        elif m := re.match(r"Model compiled successfully in (\d+) ms", line):
            seg = SegmentReport(compile_ms=int(m.group(1)))
            rep.segments.append(seg)
            outcome = "succeeded"
            if attempt is not None:
                attempt["compiled"] = True
        elif seg is not None and (kv := _segment_field(line)) is not None:
            key, value = kv
            setattr(seg, key, value)
        elif NOT_ALL_SUPPORTED in line:
            if seg is not None:
                seg.all_supported = False
        elif line.startswith("Compilation succeeded"):
            outcome = "succeeded"
        elif line.startswith("Compilation failed!") or line.startswith("Compilation failed "):
            outcome = "failed"
        elif any(p.match(line) for p in _ERROR_PATTERNS):
            all_errors.append(line)
            if attempt is not None:   # a delegate-search attempt: keep its errors with it
                attempt.setdefault("errors", []).append(line)
            else:
                rep.errors.append(line)
            if line.startswith(("Internal compiler error", "Invalid model", "Model not quantized")):
                outcome = "failed"
        table_lines.append(raw)

    for s in rep.segments:
        s.finish()
    # Operator tables printed by -s: one per segment block, in order.
    _attach_tables(rep, "\n".join(table_lines))

    rep.compiled = outcome == "succeeded" and bool(rep.segments)
    if not rep.compiled:
        rep.errors = all_errors   # every error line, failed delegate-search attempts included
    if rep.segments:
        _aggregate(rep)
    if log_text and not rep.operators:
        rep.operators = parse_operator_table(log_text)
        if len(rep.segments) == 1 and not rep.segments[0].operators:
            rep.segments[0].operators = list(rep.operators)
    rep.all_supported = bool(rep.compiled and rep.ops_on_cpu == 0)
    return rep


_SEGMENT_FIELDS = {
    "Input model": ("input_model", str),
    "Input size": ("input_size_bytes", parse_size),
    "Output model": ("output_model", str),
    "Output size": ("output_size_bytes", parse_size),
    "On-chip memory used for caching model parameters": ("on_chip_memory_used_bytes", parse_size),
    "On-chip memory remaining for caching model parameters":
        ("on_chip_memory_remaining_bytes", parse_size),
    "Off-chip memory used for streaming uncached model parameters":
        ("off_chip_memory_used_bytes", parse_size),
    "Number of Edge TPU subgraphs": ("subgraphs", int),
    "Total number of operations": ("total_ops", int),
    "Operation log": ("operation_log", str),
    "Number of operations that will run on Edge TPU": ("ops_on_tpu", int),
    "Number of operations that will run on CPU": ("ops_on_cpu", int),
}


def _segment_field(line: str):
    if ":" not in line:
        return None
    key, value = line.split(":", 1)
    spec = _SEGMENT_FIELDS.get(key.strip())
    if spec is None:
        return None
    name, conv = spec
    try:
        return name, conv(value.strip())
    except ValueError:
        return None


def _attach_tables(rep: CompileReport, text: str) -> None:
    """Give each segment the table printed after its block (the -s output)."""
    chunks = re.split(r"(?m)^\s*Model compiled successfully in \d+ ms\.?\s*$", text)
    # chunks[0] precedes the first block; chunks[i] belongs to segment i-1.
    for seg, chunk in zip(rep.segments, chunks[1:]):
        seg.operators = parse_operator_table(chunk)
    rows: list[OperatorRow] = []
    for seg in rep.segments:
        rows.extend(seg.operators)
    if not rep.segments:
        rows = parse_operator_table(text)
    rep.operators = rows


def _sum(values):
    vals = [v for v in values if v is not None]
    return sum(vals) if vals else None


def _aggregate(rep: CompileReport) -> None:
    segs = rep.segments
    if len(segs) == 1:
        s = segs[0]
        for name in ("compile_ms", "input_model", "input_size_bytes", "output_model",
                     "output_size_bytes", "on_chip_memory_used_bytes",
                     "on_chip_memory_remaining_bytes", "off_chip_memory_used_bytes",
                     "subgraphs", "total_ops", "ops_on_tpu", "ops_on_cpu"):
            setattr(rep, name, getattr(s, name))
        return
    # Several segments (-n): one model per segment. Names stay per segment; numbers add up.
    rep.input_model = rep.output_model = None
    for name in ("compile_ms", "input_size_bytes", "output_size_bytes",
                 "on_chip_memory_used_bytes", "on_chip_memory_remaining_bytes",
                 "off_chip_memory_used_bytes", "subgraphs", "total_ops", "ops_on_tpu",
                 "ops_on_cpu"):
        setattr(rep, name, _sum(getattr(s, name) for s in segs))
