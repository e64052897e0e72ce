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
import secrets
import sys
from collections.abc import Iterable
from typing import NoReturn

__all__ = ["InvalidName", "Parser", "counted", "dns_label", "dns_subdomain", "owner_ref", "pod_name", "short_list",
           "shorten", "whole_number"]

_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
MAX_SUBDOMAIN = 253
MAX_QUOTED = 80
MAX_LISTED = 5
MAX_MESSAGE = 400  # an argument error's message (the longest list of choices, enilab's commands, takes 200)
MAX_OPTIONS = 1000  # arguments that look like options, in one command line
_LONG_WORD = re.compile(rf"\S{{{MAX_QUOTED + 3},}}")  # a value `shorten` cut, and a colon or a bracket, is left


class InvalidName(ValueError):
    """A name that breaks its rule; the message says which rule."""


def counted(n: int, noun: str) -> str:
    """`n` and the noun, plural unless `n` is 1 (the nouns counted here all take an s).

    >>> counted(1, "node"), counted(10000, "node"), counted(0, "pod")
    ('1 node', '10,000 nodes', '0 pods')
    """
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


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
    """argparse, whose errors show what was typed as every other message of this project does: escaped,
    shortened and on one line. argparse quotes a bad choice whole and joins unknown arguments as they
    came, so one argument of 10,000 characters (or 10,000 arguments) made a message as long, and an
    escape sequence or a newline in one reached the terminal as it was. Here a bad choice is quoted by
    `shorten`, unknown arguments are listed by `short_list` (each one whole), a character that does not
    print is escaped, any word left longer than `MAX_QUOTED` is cut, and the message to `MAX_MESSAGE`.
    argparse's parsing takes time that grows with the square of the number of arguments that look like
    options, so more than `MAX_OPTIONS` of them are refused first. The parsers `add_subparsers` makes are
    of the same class.

    >>> Parser(prog="p").parse_args(["\\x1b[2J"] * 9)  # prints: unrecognized arguments: \\x1b[2J, ... and 4 more
    Traceback (most recent call last):
    SystemExit: 2
    """

    def parse_known_args(self, args=None, namespace=None):  # argparse's signature
        args = sys.argv[1:] if args is None else list(args)
        dashed = sum(1 for a in args if a.startswith("-"))
        if dashed > MAX_OPTIONS:
            self.error(f"{dashed:,} arguments look like options; give at most {MAX_OPTIONS:,}")
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):  # argparse's signatures, these two
        namespace, extras = self.parse_known_args(args, namespace)
        return self._no_extras(namespace, extras)

    def parse_intermixed_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_intermixed_args(args, namespace)
        return self._no_extras(namespace, extras)

    _stand_ins: dict[str, str] = {}

    def parse_known_intermixed_args(self, args=None, namespace=None):
        """argparse's, honouring `--`: Python 3.11 drops it between the two passes of intermixed parsing,
        and the second pass then took a word after it that starts with '-' for an option
        (`simulate -- -odd.yaml`: "the following arguments are required"). Such words go through as
        stand-ins that cannot be options and are put back in what comes out: the values, the unknown
        arguments, an error's message."""
        args = sys.argv[1:] if args is None else list(args)
        if "--" not in args:
            return super().parse_known_intermixed_args(args, namespace)
        cut = args.index("--") + 1
        token = secrets.token_hex(4)
        words, self._stand_ins = args[:cut], {}
        for i, word in enumerate(args[cut:]):
            if word.startswith("-"):
                stand_in = f"@{token}:{i}@"
                self._stand_ins[stand_in] = word
                word = stand_in
            words.append(word)
        try:
            namespace, extras = super().parse_known_intermixed_args(words, namespace)
        finally:
            stand_ins, self._stand_ins = self._stand_ins, {}
        for key, value in vars(namespace).items():
            if isinstance(value, str):
                setattr(namespace, key, stand_ins.get(value, value))
            elif isinstance(value, list):
                setattr(namespace, key, [stand_ins.get(v, v) if isinstance(v, str) else v for v in value])
        return namespace, [stand_ins.get(e, e) for e in extras]

    def _no_extras(self, namespace: argparse.Namespace, extras: list[str]) -> argparse.Namespace:
        if extras:  # argparse joins them all with spaces, which cannot tell one from the next
            self.error(f"unrecognized arguments: {short_list(extras)}")
        return namespace

    def _check_value(self, action: argparse.Action, value: object) -> None:
        if action.choices is not None and value not in action.choices:
            choices = ", ".join(map(repr, action.choices))
            raise argparse.ArgumentError(action, f"invalid choice: {shorten(value)} (choose from {choices})")

    def tidy(self, message: str) -> str:
        """`message` as `error` shows it."""
        message = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
        message = _LONG_WORD.sub(lambda m: m.group()[: MAX_QUOTED - 3] + "...", message)
        return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."

    def error(self, message: str) -> NoReturn:
        for stand_in, word in self._stand_ins.items():
            message = message.replace(stand_in, word)
        super().error(self.tidy(message))


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

    >>> whole_number("-3"), whole_number("0042"), whole_number("0" * 5000 + "7")
    (-3, 42, 7)
    >>> whole_number(" 80")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: ' 80' is not a whole number (digits 0-9 only)
    """
    if not WHOLE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{shorten(text)} is not a whole number (digits 0-9 only)")
    unsigned = text.lstrip("+-")
    digits = unsigned.lstrip("0") or "0"  # leading zeros are no reason to refuse `0003`
    if len(digits) > 40:
        raise argparse.ArgumentTypeError(f"{shorten(text)}: a number of {len(digits):,} digits is far too large")
    return int(text[: len(text) - len(unsigned)] + digits)
