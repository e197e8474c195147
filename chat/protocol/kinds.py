"""The kinds of envelope fields (a bounded string, integer, list...) and the schema of
one envelope type: what envelope.py checks every field against."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from chat.protocol.errors import EnvelopeError
from chat.protocol.limits import MAX_LIST_ITEMS


@dataclass(frozen=True)
class Str:
    max_chars: int
    min_chars: int = 0
    pattern: str | None = None

    def check(self, name: str, value: Any) -> None:
        if not isinstance(value, str):  # str subclasses (codes.ErrorCode) too
            raise EnvelopeError(f"field '{name}' must be a string", name)
        if not self.min_chars <= len(value) <= self.max_chars:
            raise EnvelopeError(
                f"field '{name}' must be {self.min_chars}..{self.max_chars} characters", name
            )
        if self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            raise EnvelopeError(f"field '{name}' has an invalid format", name)
        try:
            # JSON's \uXXXX escapes can smuggle in lone surrogates, which are not Unicode
            # text: such a value would decode here and then fail to re-encode elsewhere.
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise EnvelopeError(f"field '{name}' is not valid Unicode text", name) from None


@dataclass(frozen=True)
class Int:
    minimum: int
    maximum: int

    def check(self, name: str, value: Any) -> None:
        if type(value) is not int or not self.minimum <= value <= self.maximum:
            raise EnvelopeError(
                f"field '{name}' must be an integer in {self.minimum}..{self.maximum}", name
            )


@dataclass(frozen=True)
class Bool:
    def check(self, name: str, value: Any) -> None:
        if type(value) is not bool:
            raise EnvelopeError(f"field '{name}' must be true or false", name)


@dataclass(frozen=True)
class List:
    item: Str
    max_items: int = MAX_LIST_ITEMS
    min_items: int = 0

    def check(self, name: str, value: Any) -> None:
        if type(value) is not list or not self.min_items <= len(value) <= self.max_items:
            raise EnvelopeError(
                f"field '{name}' must be a list of {self.min_items}..{self.max_items} items", name
            )
        for item in value:
            self.item.check(name, item)


@dataclass(frozen=True)
class Objects:
    """A list of JSON objects, each validated against ``schema``."""

    schema: Mapping[str, Kind]
    max_items: int = MAX_LIST_ITEMS
    #: Members an entry may have besides those of ``schema``.
    optional: Mapping[str, Kind] = field(default_factory=dict)

    def check(self, name: str, value: Any) -> None:
        if type(value) is not list or len(value) > self.max_items:
            raise EnvelopeError(f"field '{name}' must be a list of at most {self.max_items}", name)
        allowed = set(self.schema) | set(self.optional)
        for item in value:
            if type(item) is not dict or not set(self.schema) <= set(item) <= allowed:
                raise EnvelopeError(f"field '{name}' has a malformed entry", name)
            for key, value_ in item.items():
                (self.schema.get(key) or self.optional[key]).check(f"{name}.{key}", value_)


Kind = Str | Int | Bool | List | Objects


@dataclass(frozen=True)
class Schema:
    required: Mapping[str, Kind] = field(default_factory=dict)
    optional: Mapping[str, Kind] = field(default_factory=dict)
    body: bool = False
