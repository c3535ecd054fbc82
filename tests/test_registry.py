"""One registry shape: every registry is a `fedsafe.registry.Registry`, an unknown id fails the
config check naming its key and the known ids, `load` binds an entry's fixed arguments, and no
implementation knows its own registry id."""

import inspect
import re

import pytest
from conftest import base_config

import fedsafe.defenses as defenses
from fedsafe import config_check
from fedsafe.attacks import ATTACKS
from fedsafe.config.schema import ConfigError
from fedsafe.data.registry import DATASETS
from fedsafe.defenses import MECHANISMS
from fedsafe.models import MODELS
from fedsafe.registry import Entry, Registry, UnknownId

REGISTRIES = [DATASETS, MECHANISMS, ATTACKS, MODELS]


@pytest.mark.parametrize("registry", REGISTRIES, ids=lambda r: r.key)
def test_every_registry_is_the_one_registry_type(registry):
    assert isinstance(registry, Registry)
    assert registry.known() == sorted(registry.entries)
    assert all(isinstance(e, Entry) for e in registry.entries.values())
    with pytest.raises(UnknownId, match=re.escape(f"{registry.key}: unknown {registry.noun} "
                                                  f"'nope'; known: {registry.known()}")):
        registry.get("nope")


@pytest.mark.parametrize("mutate, key, registry", [
    (lambda c: c["defenses"].update(x={"parts": ["nope"]}), "defenses.x.parts", MECHANISMS),
    (lambda c: c["federation"].update(model="nope"), "federation.model", MODELS),
    (lambda c: c["datasets"]["mri"].update(source="nope"), "datasets.mri.source", DATASETS),
    (lambda c: c["attacks"].update(a={"type": "nope"}), "attacks.a.type", ATTACKS),
])
def test_an_unknown_id_fails_the_config_check_naming_the_key_and_the_known_ids(mutate, key,
                                                                             registry):
    cfg = base_config()
    mutate(cfg)
    with pytest.raises(ConfigError,
                       match=re.escape(f"{key}: unknown {registry.noun} 'nope'; known: "
                                       f"{registry.known()}")):
        config_check.validate(cfg)


def test_load_binds_the_fixed_arguments():
    pgd = ATTACKS.load("pgd")
    assert pgd.keywords == {"kind": "pgd"}
    assert pgd.func is ATTACKS.load("fgsm").func  # one `run` for every evasion attack
    assert ATTACKS.load("fedavg").keywords == {"method": "fedavg"}
    assert ATTACKS.load("mia_lira").keywords == {"kind": "lira"}
    assert not inspect.isfunction(pgd)  # bound, not the bare implementation
    assert inspect.isfunction(ATTACKS.load("mia_loss"))  # nothing fixed: the function itself


def test_no_mechanism_knows_its_registry_id():
    classes = {MECHANISMS.load(name) for name in MECHANISMS.known()}
    assert classes and not [c for c in classes if hasattr(c, "NAME")]
    loaded = [getattr(m, a) for m in vars(defenses).values() if inspect.ismodule(m)
              for a in dir(m)]
    assert not [c for c in loaded if inspect.isclass(c) and hasattr(c, "NAME")]


def test_a_defense_part_gets_its_own_options_with_defaults_and_its_guarantee():
    from fedsafe.defenses.base import build_defense

    d = build_defense(["weight_noise", "adv_training"], 0.1, {"uplink": False, "steps": 3}, 0)
    noise, adv = d.parts
    assert noise.options == MECHANISMS.resolve("weight_noise", {"uplink": False})
    assert adv.options == MECHANISMS.resolve("adv_training", {"steps": 3})
    assert (noise.noise, adv.noise) == (0.1, 0.0)  # the grid's noise only where it has noise
    assert adv.guarantee == MECHANISMS.get("adv_training").meta.guarantee
