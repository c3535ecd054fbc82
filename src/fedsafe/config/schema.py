"""The config's JSON schema (config/schema.yaml): its check, and the defaults it fills in. Every
error is a ConfigError that starts with the offending key."""

import copy
import functools
from pathlib import Path

import yaml

SCHEMA = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


class ConfigError(ValueError):
    pass


def validate_schema(config: dict, schema: Path = SCHEMA) -> None:
    """The schema, filling its defaults into `config`."""
    import jsonschema

    checker, filler = _validators(str(schema))
    errors = list(checker.iter_errors(config))
    # A misspelt key also makes its intended key missing: name the misspelling.
    typos = [e for e in errors if e.validator == "additionalProperties"]
    error = typos[0] if typos else jsonschema.exceptions.best_match(errors)
    if error is not None:
        key = ".".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"{key}: {error.message}")
    filler.validate(config)


@functools.lru_cache
def _validators(schema: str):
    """A checking validator, and one that also fills in defaults (as snakemake.utils.validate
    does, but with the schema read once)."""
    import jsonschema

    rules = yaml.safe_load(Path(schema).read_text())
    cls = jsonschema.validators.validator_for(rules)
    properties = cls.VALIDATORS["properties"]

    def fill(validator, props, instance, subschema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, copy.deepcopy(sub["default"]))
        yield from properties(validator, props, instance, subschema)

    return cls(rules), jsonschema.validators.extend(cls, {"properties": fill})(rules)
