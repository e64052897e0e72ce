"""Names that may become parts of paths, sockets or namespace names: the one home of their rules.

Kubernetes' rules are used because users already know them:

- a DNS label (cluster, node, subnet and host names, CNI network names): lowercase letters, digits
  and ``-``, starting and ending with a letter or digit, at most 63 characters;
- a DNS-1123 subdomain (pod names): DNS labels joined by ``.``, at most 253 characters;
- a pod reference: a subdomain with an optional ``namespace/`` prefix, the namespace a DNS label;
- a workload (the owner of static pods): ``kind/namespace/name``, kind and namespace DNS labels, name
  a subdomain, as in ``statefulset/default/web``.

Every check returns the name unchanged or raises :class:`InvalidName` with a message that says which
rule the name breaks and shows at most 80 characters of it, so a hostile value cannot flood a terminal.

>>> dns_label("node-1")
'node-1'
>>> pod_name("default/web-0")
'default/web-0'
>>> dns_label("../../etc")
Traceback (most recent call last):
...
eni_core.names.InvalidName: '../../etc' is not a DNS label (lowercase letters, digits and '-', at most 63 characters)
"""
from __future__ import annotations

import argparse
import math
import re
from collections.abc import Iterable
from typing import NoReturn

__all__ = ["InvalidName", "Parser", "dns_label", "dns_subdomain", "owner_ref", "pod_name", "short_list", "shorten",
           "whole_number"]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_SUBDOMAIN = 253
MAX_QUOTED = 80
MAX_LISTED = 5
MAX_MESSAGE = 300  # an argument error's message, once each word of it is cut to MAX_QUOTED
_LONG_WORD = re.compile(rf"\S{{{MAX_QUOTED + 1},}}")


class InvalidName(ValueError):
    """A name that breaks its rule; the message says which rule."""


def shorten(value: object, limit: int = MAX_QUOTED) -> str:
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote user input. An integer
    too long to quote is described instead: writing out thousands of digits takes time, and Python
    refuses past 4,300.

    >>> shorten("x" * 100, 10), shorten(10 ** 5000)
    ("'xxxxxx...", 'a number of about 5,000 digits')
    """
    if isinstance(value, int) and value.bit_length() > 4 * limit:  # more than limit digits, whatever they are
        return f"a number of about {round(value.bit_length() * math.log10(2)):,} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Parser(argparse.ArgumentParser):
    """argparse, whose errors quote what was typed shortened. argparse quotes an unknown argument or a bad
    choice whole, so one argument of 10,000 characters (or 10,000 arguments) made a message as long: each
    word of a message is cut to `MAX_QUOTED` characters, and the message to `MAX_MESSAGE`. The parsers
    `add_subparsers` makes are of the same class.

    >>> Parser(prog="p").parse_args(["x" * 5000])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    SystemExit: 2
    """

    def error(self, message: str) -> NoReturn:
        message = _LONG_WORD.sub(lambda m: m.group()[: MAX_QUOTED - 3] + "...", message)
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 3] + "..."
        super().error(message)


def short_list(values: Iterable[object], limit: int = MAX_LISTED) -> str:
    """At most ``limit`` values, each cut by :func:`shorten`, for messages that list user input.

    >>> short_list(["node-1", "node-2"])
    'node-1, node-2'
    >>> short_list([f"n-{i}" for i in range(100)], 2)
    'n-0, n-1 and 98 more'
    """
    values = list(values)
    shown = ", ".join(v if isinstance(v, str) and len(v) <= MAX_QUOTED else shorten(v) for v in values[:limit])
    return shown if len(values) <= limit else f"{shown} and {len(values) - limit} more"


def dns_label(value: object) -> str:
    """A DNS label (RFC 1123): ``[a-z0-9]([-a-z0-9]*[a-z0-9])?``, 1 to 63 characters."""
    if isinstance(value, str) and _LABEL.fullmatch(value):
        return value
    raise InvalidName(f"{shorten(value)} is not a DNS label (lowercase letters, digits and '-', at most 63 characters)")


def dns_subdomain(value: object) -> str:
    """A DNS-1123 subdomain: DNS labels joined by ``.``, at most 253 characters."""
    if isinstance(value, str) and len(value) <= MAX_SUBDOMAIN and _SUBDOMAIN.fullmatch(value) and all(
        len(part) <= 63 for part in value.split(".")
    ):
        return value
    raise InvalidName(f"{shorten(value)} is not a DNS-1123 subdomain "
                     "(lowercase letters, digits, '-' and '.', at most 253 characters)")


def pod_name(value: object) -> str:
    """A pod name: a DNS-1123 subdomain, optionally after a ``namespace/`` that is a DNS label."""
    if isinstance(value, str) and value.count("/") <= 1:
        namespace, _, name = value.rpartition("/")
        try:
            if namespace or "/" in value:
                dns_label(namespace)
            dns_subdomain(name)
            return value
        except InvalidName:
            pass
    raise InvalidName(f"{shorten(value)} is not a pod name (a DNS-1123 subdomain, optionally after "
                     "'namespace/')")


def owner_ref(value: object) -> str:
    """A workload that owns static pods: ``kind/namespace/name`` (``statefulset/default/web``)."""
    if isinstance(value, str) and value.count("/") == 2:
        kind, namespace, name = value.split("/")
        try:
            dns_label(kind)
            dns_label(namespace)
            dns_subdomain(name)
            return value
        except InvalidName:
            pass
    raise InvalidName(f"{shorten(value)} is not a workload (kind/namespace/name in lowercase, "
                     "like statefulset/default/web)")


WHOLE = re.compile(r"[+-]?[0-9]+")


def whole_number(text: str) -> int:
    """A command-line option's whole number (argparse's `type=`), with a short message for what is none or far
    too large to be one: argparse's `int` quotes the text whole, and past 4,300 digits Python refuses in its
    own words. Only ASCII digits, with a sign: `int` also takes spaces around them, underscores between them
    and other scripts' digits (`' 80'`, `8_0` and `'٨٠'` are all 80 to it), and an option is not the place
    for any of them.

    >>> whole_number("-3"), whole_number("0042")
    (-3, 42)
    >>> whole_number(" 80")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: ' 80' is not a whole number (digits 0-9 only)
    """
    if not WHOLE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shorten(text)} is not a whole number (digits 0-9 only)")
    if len(text) > 40:
        raise argparse.ArgumentTypeError(f"{shorten(text)}: a number of {len(text.lstrip('+-')):,} digits is far "
                                         "too large")
    return int(text)
