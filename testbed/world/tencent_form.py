"""Parameters sent as `application/x-www-form-urlencoded` (a form body, a query string), as the Tencent Cloud
SDK flattens them: `Filters.0.Name=subnet-id&Filters.0.Values.0=subnet-a`.

`pairs` decodes the raw bytes strictly (bad percent-encoding, non-UTF-8, a key without `=` or given twice are
`InvalidParameter`), `nest` turns the flattened keys back into nested dicts of strings. Both are bounded for
hostile input: at most `MAX_PARAMS` keys of at most `MAX_DEPTH` parts. Typing the strings (integers,
booleans, lists keyed 0 to n-1) is the actions' tables' business: `tencent_actions.from_form`.
"""
from __future__ import annotations

import re
from urllib.parse import unquote_to_bytes

from testbed.world.tencent_actions import ApiError

__all__ = ["MAX_DEPTH", "MAX_PARAMS", "nest", "pairs"]

MAX_PARAMS = 1000  # keys in one request: the API's own limits (100 ids, 10 addresses...) need far fewer
MAX_DEPTH = 8  # parts of one key; the deepest parameter, Filters.0.Values.0, has four
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _decode(raw: bytes, what: str) -> str:
    if _BAD_ESCAPE.search(raw):
        raise ApiError("InvalidParameter", f"The {what} has a % that is not followed by two hex digits.")
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode()
    except UnicodeDecodeError:
        raise ApiError("InvalidParameter", f"The {what} is not UTF-8 once percent-decoded.") from None


def pairs(raw: bytes, what: str = "request") -> list[tuple[str, str]]:
    """The decoded `key=value` pairs of `raw`, in order (empty fields, as in `a=1&&b=2`, skipped)."""
    if not raw:
        return []
    if raw.count(b"&") >= MAX_PARAMS:
        raise ApiError("InvalidParameter", f"The {what} has more than {MAX_PARAMS} parameters.")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for field in raw.split(b"&"):
        if not field:
            continue
        key, sep, value = field.partition(b"=")
        name = _decode(key, "parameter name")
        if not sep:
            raise ApiError("InvalidParameter", f"The parameter `{name}` has no value: send {name}=VALUE.")
        if name in seen:
            raise ApiError("InvalidParameter", f"The parameter `{name}` is given more than once.")
        seen.add(name)
        out.append((name, _decode(value, f"value of `{name}`")))
    return out


def nest(flat: list[tuple[str, str]]) -> dict[str, object]:
    """`A.0.B=x` as {"A": {"0": {"B": "x"}}}: every value a string, every list still a dict keyed by index."""
    tree: dict[str, object] = {}
    for key, value in flat:
        if key.count(".") >= MAX_DEPTH:
            raise ApiError("InvalidParameter", f"The parameter `{key}` is nested deeper than any parameter "
                                               f"({MAX_DEPTH} parts at most).")
        parts = key.split(".")
        if "" in parts:
            raise ApiError("InvalidParameter", f"The parameter name `{key}` has an empty part.")
        node = tree
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise _leaf_and_parent(".".join(parts[:depth + 1]))
            node = child
        if parts[-1] in node:  # parameters below it came first (a key given twice was refused by `pairs`)
            raise _leaf_and_parent(key)
        node[parts[-1]] = value
    return tree


def _leaf_and_parent(name: str) -> ApiError:
    return ApiError("InvalidParameter", f"The parameter `{name}` is given both a value and parameters below it.")
