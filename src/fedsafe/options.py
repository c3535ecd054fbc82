"""One shape for every registry's options (datasets, defenses, attacks, models).

A registry entry (`fedsafe.registry.Entry`) declares its options as `{name: Option(default, type,
range or choices, doc)}`, like Opacus's accountant registry; `check` reads those declarations at
parse time and names the offending key (`attacks.pgd.options.stepz: unknown option ...`).
Imports nothing heavy.
"""

from dataclasses import dataclass
from typing import Any

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


@dataclass(frozen=True)
class Option:
    default: Any
    type: type = float  # bool, int, float or str; an int is accepted where a float is expected
    low: float | None = None  # inclusive bounds ...
    high: float | None = None
    low_open: bool = False  # ... unless open
    high_open: bool = False
    choices: tuple = ()
    many: bool = False  # a value or a list of values (an axis inside one job, e.g. eps)
    optional: bool = False  # None allowed (e.g. "derived from other options")
    doc: str = ""

    def check(self, key: str, value) -> None:
        values = value if self.many and isinstance(value, list) else [value]
        if self.many and isinstance(value, list) and not value:
            raise ValueError(f"{key}: empty list")
        for v in values:
            self._check_one(key, v)

    def _check_one(self, key: str, v) -> None:
        if v is None and self.optional:
            return
        if not _is_type(v, self.type):
            raise ValueError(f"{key}: {v!r} is not {_TYPE_NAMES.get(self.type, self.type)}")
        if self.choices and v not in self.choices:
            raise ValueError(f"{key}: {v!r}; expected one of {list(self.choices)}")
        if self.low is not None and (v < self.low or (self.low_open and v == self.low)):
            raise ValueError(f"{key}: {v!r} out of range ({self.range_text()})")
        if self.high is not None and (v > self.high or (self.high_open and v == self.high)):
            raise ValueError(f"{key}: {v!r} out of range ({self.range_text()})")

    def range_text(self) -> str:
        lo = "" if self.low is None else f"{self.low} {'<' if self.low_open else '<='} "
        hi = "" if self.high is None else f" {'<' if self.high_open else '<='} {self.high}"
        return f"{lo}value{hi}"


def _is_type(v, kind) -> bool:
    if kind is bool:
        return isinstance(v, bool)
    if kind is int:
        return isinstance(v, int) and not isinstance(v, bool)
    if kind is float:
        return isinstance(v, (int, float)) and not isinstance(v, bool)
    return isinstance(v, kind)


def check(prefix: str, specs: dict[str, Option], values: dict) -> None:
    """Every key known, every value of the declared type, range and choices; errors name
    `prefix.key`."""
    for key, value in values.items():
        if key not in specs:
            raise ValueError(f"{prefix}.{key}: unknown option; known: {sorted(specs) or 'none'}")
        specs[key].check(f"{prefix}.{key}", value)


def resolve(specs: dict[str, Option], values: dict) -> dict:
    """The declared defaults, overridden by the given values (checked by `check` beforehand)."""
    return {**{k: o.default for k, o in specs.items()}, **values}
