"""Class names from a label file, for models that carry no label map (`--labels FILE`).

Two formats, told apart by their content (not their suffix):

* a TFOD label map, `label_map.pbtxt`::

      item { id: 1 name: "person" display_name: "Person" }

  read with google.protobuf.text_format against the StringIntLabelMap schema of
  include/convert/tfod_schema.py. TFOD's convention: id 0 is the background, ids start at 1, and
  the model's output class k is the item with id k + 1. The name shown is `display_name`, else
  `name` (COCO's TFOD map names items by Freebase ids such as "/m/01g317" and shows
  display_name). Besides id, name and display_name, the other fields TFOD defines for an item
  (keypoints, frequency, ...) are accepted and ignored; any other field is an error naming it.
* a `labels.txt`: one name per line. Line 1 is output class 0 (TFOD id 1), line N is output
  class N-1 (TFOD id N), the layout of the label files TFLite models embed. A line `???` marks
  an id with no class (the ten gaps in COCO's ids 1..90); there is no background line.

This project's own models number their classes 0..K-1 in order of the training data's category
ids (include/data/coco.py); a label file describes them when its line N / item id N names the
N-th category of that order.

`read_labels(path)` -> {output class: {"name", "category_id", "names"}}: `category_id` is the
TFOD id (class + 1), `names` every name the entry answers to (name and display_name), which the
evaluation matches against the dataset's category names.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from include.errors import DataError

UNUSED = "???"
# StringIntLabelMapItem fields TFOD defines that a class name does not need
_TFOD_ITEM_EXTRAS = ("keypoints", "ancestor_ids", "descendant_ids", "frequency", "instance_count")
_ITEM_FIELDS = ("name", "id", "display_name")
_PBTXT_RE = re.compile(r"^\s*item\s*\{", re.MULTILINE)
_BACKGROUND = {"background", "__background__", "bg"}


def _read(path: Path) -> str:
    if not path.exists():
        raise DataError("label file not found.", where=str(path),
                        fix="pass a TFOD label_map.pbtxt or a labels.txt (one name per line).")
    if not path.is_file():
        raise DataError("is a folder, not a label file.", where=str(path),
                        fix="pass a TFOD label_map.pbtxt or a labels.txt (one name per line).")
    try:
        return path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"the label file cannot be read as UTF-8 text ({exc}).",
                        where=str(path), fix="pass a TFOD label_map.pbtxt or a labels.txt "
                                             "saved as UTF-8.") from None


def is_label_map_text(text: str) -> bool:
    """Whether text looks like a TFOD label map (an `item {` outside comments)."""
    return bool(_PBTXT_RE.search("\n".join(line.split("#", 1)[0] for line in text.splitlines())))


def read_labels(path: str | os.PathLike) -> dict[int, dict]:
    """{output class: {"name", "category_id", "names"}} of a label_map.pbtxt or labels.txt."""
    path = Path(path)
    text = _read(path)
    if is_label_map_text(text) or path.suffix.lower() == ".pbtxt":
        return read_label_map_pbtxt(path, text)
    return read_labels_txt(path, text)


def read_label_map_pbtxt(path: str | os.PathLike, text: str | None = None) -> dict[int, dict]:
    from include.convert import tfod_schema
    from include.convert.textproto import TextProtoError, TextProtoSchemaError, parse_message

    path = Path(path)
    text = _read(path) if text is None else text
    try:
        msg, raw = parse_message(text, tfod_schema.StringIntLabelMap(), source=path,
                                 open_types=tfod_schema.OPEN_TYPES)
    except TextProtoSchemaError as exc:
        raise DataError(f"not a TFOD label map: {exc.problem}", where=exc.where,
                        fix=exc.fix or "write each class as item { id: 1 name: \"person\" }.") \
            from None
    except TextProtoError as exc:
        raise DataError(f"the label map is not valid protobuf text format: {exc.problem}",
                        where=exc.where, fix=exc.fix) from None
    for n, item in enumerate(raw.get("item", []), 1):
        for field in item:
            if field not in _ITEM_FIELDS and field not in _TFOD_ITEM_EXTRAS:
                near = difflib.get_close_matches(field, _ITEM_FIELDS, n=1, cutoff=0.6)
                raise DataError(f"item {n} has the field {field!r}, which a TFOD label map item "
                                f"does not have (fields: {', '.join(_ITEM_FIELDS)}).",
                                where=str(path),
                                fix=(f"did you mean {near[0]!r}? " if near else "") +
                                    "write each class as item { id: 1 name: \"person\" "
                                    "display_name: \"Person\" }.")
    if not msg.item:
        raise DataError("the label map has no `item { ... }` entries.", where=str(path),
                        fix="list each class as item { id: 1 name: \"person\" }.")
    out: dict[int, dict] = {}
    first_item: dict[int, int] = {}
    for n, item in enumerate(msg.item, 1):
        if not item.HasField("id"):
            raise DataError(f"item {n} ({item.name or item.display_name or 'no name'}) has no "
                            "id.", where=str(path),
                            fix="give every item a whole-number id: 1, 2, ... (0 is the "
                                "background).")
        cid = item.id
        if cid == 0:
            continue  # TFOD's background entry
        if cid < 0:
            raise DataError(f"item {n} has id {cid}; ids start at 1.", where=str(path),
                            fix="number the classes from 1 (0 is the background).")
        if not (item.name or item.display_name):
            raise DataError(f"item {n} (id {cid}) has neither name nor display_name.",
                            where=str(path), fix="give the item a name: \"...\".")
        if cid in first_item:
            raise DataError(f"id {cid} appears twice: items {first_item[cid]} and {n}.",
                            where=str(path), fix="give every item its own id.")
        first_item[cid] = n
        names = [v for v in (item.display_name, item.name) if v]
        out[cid - 1] = {"name": names[0], "category_id": cid, "names": names}
    if not out:
        raise DataError("the label map only has the background (id 0).", where=str(path),
                        fix="list the classes as item { id: 1 name: \"person\" } ...")
    return dict(sorted(out.items()))


def read_labels_txt(path: str | os.PathLike, text: str | None = None) -> dict[int, dict]:
    path = Path(path)
    text = _read(path) if text is None else text
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    if not lines:
        raise DataError("the label file is empty.", where=str(path),
                        fix="write one class name per line (line 1 is class 0).")
    if lines[0].lower() in _BACKGROUND:
        raise DataError(f"line 1 is {lines[0]!r}: line 1 of a labels.txt is output class 0 "
                        "(TFOD id 1), and there is no background line.", where=str(path),
                        fix="remove that line, so that line 1 names class 0.")
    out: dict[int, dict] = {}
    seen: dict[str, int] = {}
    for number, name in enumerate(lines, 1):
        if not name:
            raise DataError(f"line {number} is empty.", where=str(path),
                            fix=f"write {UNUSED} on a line whose id has no class, or remove "
                                "the line (line N is class N-1, so removing it renumbers the "
                                "classes after it).")
        if name == UNUSED:
            continue
        if name in seen:
            raise DataError(f"the name {name!r} is on lines {seen[name]} and {number}.",
                            where=str(path),
                            fix="give every class its own name (line N is class N-1).")
        seen[name] = number
        out[number - 1] = {"name": name, "category_id": number, "names": [name]}
    if not out:
        raise DataError(f"every line is {UNUSED}: the file names no class.", where=str(path),
                        fix="write one class name per line.")
    return out
