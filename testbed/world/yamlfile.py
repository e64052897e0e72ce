"""A strict YAML reader for the files users hand to enilab: plain data, bounded, no surprises.

YAML can say far more than a scenario needs, and some of it is hostile: an alias bomb is a few hundred
bytes that expand to gigabytes, 5,000 nested ``[`` overflow a recursive composer, and a repeated key
silently replaces the first. This reader builds Python values from the parser's event stream with an
explicit stack (no recursion), and refuses, with the line it happened on:

- anchors and aliases (``&name``, ``*name``) outright: a scenario never needs to repeat a value by
  reference, and refusing them is simpler to trust than any expansion budget;
- nesting deeper than ``MAX_DEPTH`` mappings and lists, and more than ``MAX_VALUES`` values (scalars,
  lists and mappings) in all, so that reading costs at most about a second whatever the file holds;
- a key given twice in one mapping, and keys that are lists or mappings;
- a number of more than ``MAX_DIGITS`` digits, before it is converted (no field takes one; Python would
  spend time on it, refuse it past 4,300 digits in its own words, or overflow a float with it);
- merge keys (``<<``), explicit tags on lists and mappings (``!!set``, ``!!omap``, ``!custom``), tags
  that SafeLoader does not know (``!!python/object``), and more than one document.

Scalars are resolved exactly as ``yaml.safe_load`` resolves them (YAML 1.1: ``yes`` is true, ``0x1f``
is 31), so a file that passes means what it meant before.

>>> load("steps: [{op: advance, seconds: 60}]")
{'steps': [{'op': 'advance', 'seconds': 60}]}
>>> load("a: &x 1\\nb: *x")
Traceback (most recent call last):
...
testbed.world.yamlfile.YamlRefused: line 1, column 4: anchors and aliases (&, *) are not allowed; write the value out
"""
from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml
from yaml import events
from yaml.constructor import SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from eni_core.names import shorten

__all__ = ["MAX_DEPTH", "MAX_DIGITS", "MAX_VALUES", "YamlRefused", "load"]

MAX_DEPTH = 16
MAX_VALUES = 250_000
MAX_DIGITS = 100  # in one number: the largest any field takes, a seed, has 19
_NUMBER_TAGS = {"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
_PARSER = yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader
_PLAIN_TAGS = {None, "!", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"}
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_CONSTRUCTORS = {f"tag:yaml.org,2002:{kind}": SafeConstructor.yaml_constructors[f"tag:yaml.org,2002:{kind}"]
                        for kind in ("null", "bool", "int", "float", "binary", "timestamp", "str")}
_NO_KEY = object()


class YamlRefused(ValueError):
    """Text that is not YAML, or YAML this reader refuses; the message starts with the line."""


def _cut(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _at(mark: Any) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "somewhere"


def _check_digits(text: str, event: events.ScalarEvent) -> None:
    """YamlRefused, naming the line, for a number written with more than MAX_DIGITS digits (or hex letters)."""
    digits = sum(c.isalnum() for c in text)
    if digits > MAX_DIGITS:
        raise YamlRefused(f"{_at(event.start_mark)}: a number of {digits:,} digits; no field takes more than "
                          f"{MAX_DIGITS}")


class _Builder:
    """Values from parser events: a stack of open lists and mappings, each with its pending key."""

    def __init__(self) -> None:
        self.resolver = Resolver()
        self.constructor = SafeConstructor()
        self.resolved_first = set(self.resolver.yaml_implicit_resolvers)  # first characters of ints, bools...
        self.scalars: dict[tuple[str, str], Any] = {}
        self.stack: list[list[Any]] = []  # [container, key waiting for its value (mappings only)]
        self.documents: list[Any] = []

    def scalar(self, event: events.ScalarEvent) -> Any:
        tag, value, plain = event.tag, event.value, event.implicit[0]
        if tag is None and (not plain or value[:1] not in self.resolved_first):
            return value  # quoted, or no implicit type (int, bool, null...) starts with this character
        if tag is None and value.isascii() and value.isdigit() and (value[0] != "0" or value == "0"):
            _check_digits(value, event)
            return int(value)  # a plain decimal (YAML 1.1 reads 012 as octal: that takes the long way)
        key = (tag, value, plain)
        made = self.scalars.get(key, _NO_KEY)
        if made is _NO_KEY:  # each distinct scalar is made once: they are all immutable
            try:
                made = self.scalars[key] = self._construct(event)
            except YamlRefused:
                raise
            except ValueError as err:  # a date with month 13, say
                raise YamlRefused(f"{_at(event.start_mark)}: a value cannot be read: {_cut(str(err))}") from None
        return made

    def _construct(self, event: events.ScalarEvent) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.resolver.resolve(ScalarNode, event.value, event.implicit)
        if tag == _MERGE:
            raise YamlRefused(f"{_at(event.start_mark)}: merge keys (<<) are not allowed; write the keys out")
        if tag in _NUMBER_TAGS:
            _check_digits(event.value, event)
        node = ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        construct = _SCALAR_CONSTRUCTORS.get(tag)
        return construct(self.constructor, node) if construct else self.constructor.construct_object(node)

    def put(self, value: Any, event: events.Event) -> None:
        if not self.stack:
            if self.documents:
                raise YamlRefused(f"{_at(event.start_mark)}: a second document; a scenario is one document")
            self.documents.append(value)
            return
        top = self.stack[-1]
        container = top[0]
        if isinstance(container, list):
            container.append(value)
        elif top[1] is _NO_KEY:
            if not isinstance(value, Hashable):
                raise YamlRefused(f"{_at(event.start_mark)}: a mapping key must be a plain value, "
                                  "not a list or a mapping")
            if value in container:
                raise YamlRefused(f"{_at(event.start_mark)}: key {shorten(value)} is given twice in one mapping")
            top[1] = value
        else:
            container[top[1]] = value
            top[1] = _NO_KEY

    def open(self, container: list | dict, event: events.CollectionStartEvent) -> None:
        if event.tag not in _PLAIN_TAGS:
            raise YamlRefused(f"{_at(event.start_mark)}: tag {shorten(event.tag)} is not allowed; "
                              "write a plain list or mapping")
        if len(self.stack) >= MAX_DEPTH:
            raise YamlRefused(f"{_at(event.start_mark)}: nested deeper than {MAX_DEPTH} lists and mappings")
        self.put(container, event)
        self.stack.append([container, _NO_KEY])


def load(text: str) -> Any:
    """The one document of ``text`` as plain Python values (None if empty); raise YamlRefused."""
    builder = _Builder()
    try:
        for count, event in enumerate(yaml.parse(text, Loader=_PARSER)):
            if count > MAX_VALUES + 4:  # the stream's and the document's start and end are no values
                raise YamlRefused(f"{_at(event.start_mark)}: more than {MAX_VALUES:,} values (scalars, lists and "
                                  "mappings); that is the limit")
            kind = type(event)
            if kind is events.AliasEvent or getattr(event, "anchor", None) is not None:
                raise YamlRefused(f"{_at(event.start_mark)}: anchors and aliases (&, *) are not allowed; "
                                  "write the value out")
            if kind is events.ScalarEvent:
                builder.put(builder.scalar(event), event)
            elif kind is events.SequenceStartEvent:
                builder.open([], event)
            elif kind is events.MappingStartEvent:
                builder.open({}, event)
            elif kind in (events.SequenceEndEvent, events.MappingEndEvent):
                builder.stack.pop()
    except YamlRefused:
        raise
    except yaml.MarkedYAMLError as err:
        problem = _cut(err.problem or err.context or "unreadable")
        raise YamlRefused(f"not valid YAML at {_at(err.problem_mark)}: {problem}") from None
    except yaml.reader.ReaderError as err:
        raise YamlRefused(f"not valid YAML at character {err.position + 1}: #x{err.character:04x} is a "
                          "control character, which YAML does not allow") from None
    except yaml.YAMLError as err:
        raise YamlRefused(f"not valid YAML: {_cut(str(err))}") from None
    except ValueError as err:  # a scalar's own is caught with its line, in _Builder.scalar
        raise YamlRefused(f"a value cannot be read: {_cut(str(err))}") from None
    return builder.documents[0] if builder.documents else None
