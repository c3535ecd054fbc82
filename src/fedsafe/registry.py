"""One shape for every registry (datasets, defenses, attacks, models): an `Entry` per id, held
by a `Registry` that checks ids and options and imports the implementation.

One entry type, not one per registry: what every registry has (where the implementation is,
its options, the arguments bound to it, a line of documentation) is handled once, here. What
only one registry's grid needs (a defense's guarantee, an attack's family, a dataset's
image-size option, a model's smallest image) is the entry's `meta`: a small frozen dataclass
declared next to that registry, so its fields are named and typed where they are used and no
entry carries fields that mean nothing to it.

An implementation never knows its own id: what differs between ids that share an
implementation (`fgsm` and `pgd`, both the evasion module's `run`) is bound through `fixed`.
Imports nothing heavy: the Snakefile reads the registries at parse time.
"""

from dataclasses import dataclass, field
from functools import partial
from importlib import import_module
from typing import Any

from fedsafe.options import Option, check, resolve


class UnknownId(ValueError):
    """An id that no entry has; the message names the config key and the known ids."""


@dataclass(frozen=True)
class Entry:
    impl: str  # "module:attribute", imported only when a job needs it
    options: dict[str, Option] = field(default_factory=dict)  # what a config may set
    fixed: dict = field(default_factory=dict)  # keyword arguments always passed to `impl`
    doc: str = ""
    meta: Any = None  # what the grid must know: the registry's own frozen dataclass


class Registry:
    def __init__(self, key: str, noun: str, entries: dict[str, Entry]):
        self.key = key  # the config key whose value is an id, e.g. "attacks.<id>.type"
        self.noun = noun  # what an entry is, in messages: "attack"
        self.entries = entries  # in documentation order

    def known(self) -> list[str]:
        return sorted(self.entries)

    def get(self, name: str, where: str | None = None) -> Entry:
        """The entry `name`; an unknown one raises `UnknownId` naming `where` (default: the
        registry's config key)."""
        if name not in self.entries:
            raise UnknownId(f"{where or self.key}: unknown {self.noun} {name!r}; known: "
                            f"{self.known()}")
        return self.entries[name]

    def load(self, name: str):
        """The implementation of `name`, with the entry's fixed arguments bound. Python keeps
        the module imported (sys.modules): loading again costs a dict lookup."""
        entry = self.get(name)
        module, attr = entry.impl.split(":")
        impl = getattr(import_module(module), attr)
        return partial(impl, **entry.fixed) if entry.fixed else impl

    def options(self, name: str) -> dict[str, Option]:
        return self.get(name).options

    def check_options(self, name: str, values: dict, where: str) -> None:
        """Every key declared by `name`, every value of its type, range and choices; errors
        name `where.key`."""
        check(where, self.options(name), values)

    def resolve(self, name: str, values: dict) -> dict:
        """The declared defaults of `name`, overridden by `values`."""
        return resolve(self.options(name), values)
