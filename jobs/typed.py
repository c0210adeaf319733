"""Typed tables: parsed TOML or JSON read into a ``msgspec.Struct``, errors in one line.

The specs (:mod:`jobs.spec`), the cluster profiles (:mod:`jobs.profiles`) and the bench
references (:mod:`analysis.bench.records`) declare their tables as structs whose field
types carry the constraints. :func:`convert` words msgspec's error (``Expected `int` >= 1
- at `$.widths[0]```) as ``<where>: <table>.<field> must be <requirement>, got <value>``:
the requirement is the field's ``Meta(description=...)`` where it has one, else the
choices of its ``Literal``, else msgspec's own (``an integer >= 1``). A ``ValueError``
raised by a ``__post_init__`` starts with its field, and keeps its wording.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

#: the bound that keeps a float finite (NaN fails any bound, inf passes without one)
FLOAT_MAX = sys.float_info.max
#: a finite number > 0, and >= 0 (the wording is the message's: ``must be a number > 0``)
Positive = Annotated[float, msgspec.Meta(gt=0, le=FLOAT_MAX, description="a number > 0")]
NonNegative = Annotated[float, msgspec.Meta(ge=0, le=FLOAT_MAX, description="a number >= 0")]
_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "bool": "true or false",
    "array": "a list",
    "object": "a table",
}


def convert(
    data: Any, kind: Any, where: str, name: str = "", error: type[ValueError] = ValueError
) -> Any:
    """``msgspec.convert(data, kind)`` (a list read as a tuple, an int as a float, where
    ``kind`` says so); a failure is ``error("<where>: ...")`` naming ``<name>.<field>``."""
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as problem:
        raise error(f"{where}: {_explain(str(problem), data, kind, name)}") from None


def _explain(text: str, data: Any, hint: Any, name: str) -> str:
    """msgspec's ``text`` about ``data`` (converted to ``hint``) as one line naming the field."""
    text, _, at = text.partition(" - at `")
    value = data  # the field's value; data becomes the item's, in a list
    for key, index in re.findall(r"\.(\w+)|\[(\d+)\]", at):
        if key:
            hint = {field.name: field.type for field in msgspec.structs.fields(hint)}[key]
            name, data = _join(name, key), data[key]
            value = data
        else:
            data = data[int(index)]
    if missing := re.fullmatch(r"Object missing required field `(\w+)`", text):
        return f"{_join(name, missing[1])} is required"
    if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", text):
        known = ", ".join(field.name for field in msgspec.structs.fields(hint))
        return f"unknown key {_join(name, unknown[1])!r} (known: {known})"
    expected = re.fullmatch(r"Expected `([^`]+)`(.*?)(, got .*)?", text)
    if expected is None and not text.startswith("Invalid enum value"):
        return _join(name, text)  # a __post_init__ rule, which names its field
    described = [a.description for a in _arguments(hint) if isinstance(a, msgspec.Meta)]
    choices = [get_args(a) for a in _arguments(hint) if get_origin(a) is Literal]
    if any(described):  # the field's own wording, about the whole field
        requirement, data = next(filter(None, described)), value
    elif choices:
        requirement = f"one of {', '.join(map(str, choices[0]))}"
    else:
        kinds = " or ".join(_WORDS.get(kind, kind) for kind in expected[1].split(" | "))
        requirement = kinds + expected[2]
    return message(name or "the file", f"must be {requirement}", data)


def message(name: str, requirement: str, value: Any) -> str:
    """``<name> <requirement>, got <value>``: how every rule words a refusal."""
    return f"{name} {requirement}, got {value!r}"


def _join(name: str, key: str) -> str:
    return f"{name}.{key}" if name else key


def _arguments(hint: Any) -> Iterator[Any]:
    """``hint`` and its type arguments and metadata, breadth first (the outermost first)."""
    level = [hint]
    while level:
        yield from level
        level = [argument for outer in level for argument in get_args(outer)]
