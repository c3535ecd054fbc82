"""Bad configuration stops the run before any job, with a message naming the offending key."""

import copy

import pytest
from conftest import base_config, snakemake

from fedsafe import config as fc

pytestmark = pytest.mark.xdist_group("config")


def _validate(cfg):
    fc.validate(copy.deepcopy(cfg))


def test_valid_config_gets_defaults():
    cfg = base_config()
    fc.validate(cfg)
    assert cfg["federation"]["lr"] == 0.05
    assert cfg["datasets"]["mri"]["partition"] == {"scheme": "iid"}
    assert cfg["mlflow"]["enabled"] is True


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(federaton={}), "federaton"),
    (lambda c: c["federation"].update(rounds="five"), "rounds"),
    (lambda c: c["defenses"].update(weight_noise={"noise_multipliers": [-0.1]}), "-0.1"),
    (lambda c: c["datasets"]["mri"].update(n_clientz=3), "n_clientz"),
    (lambda c: c["attacks"]["fgsm"].update(optons={}), "optons"),
])
def test_schema_errors_name_the_key(mutate, key):
    cfg = base_config()
    mutate(cfg)
    with pytest.raises(Exception, match=key):
        _validate(cfg)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["defenses"].update(laplace_magic={}), r"defenses\.laplace_magic: unknown defense"),
    (lambda c: c["defenses"].update(combo={"parts": ["weight_noise", "nope"],
                                           "noise_multipliers": [0.1]}),
     r"defenses\.combo\.parts: unknown defense 'nope'"),
    (lambda c: c["attacks"].update(deepfool={}), r"attacks\.deepfool: unknown attack"),
    (lambda c: c["datasets"].update(xray={}), r"datasets\.xray: unknown dataset"),
    (lambda c: c["defenses"].update(weight_noise={}), r"defenses\.weight_noise\.noise_multipliers: required"),
    (lambda c: c["defenses"].update(none={"noise_multipliers": [0.1]}),
     r"defenses\.none\.noise_multipliers: .* no noise"),
    (lambda c: c["defenses"].update(dp_sgd={"noise_multipliers": [1.0],
                                            "options": {"grad_sample_mode": "vmap"}}),
     r"defenses\.dp_sgd\.options\.grad_sample_mode: 'vmap'; expected one of"),
    (lambda c: (c["defenses"].update(secagg={}), c["federation"].update(fraction_train=0.3)),
     r"defenses\.secagg: secagg needs at least 2 clients per round; datasets\.mri samples 1"),
])
def test_registry_errors_name_the_key(mutate, message):
    cfg = base_config()
    mutate(cfg)
    with pytest.raises(fc.ConfigError, match=message):
        _validate(cfg)


def test_noise_spelling_is_canonical():
    cfg = base_config(defenses={"weight_noise": {"noise_multipliers": [0.010, 0.01, 0.1]}})
    fc.validate(cfg)
    assert fc.noise_values(cfg, "weight_noise") == ["0.01", "0.1"]


def test_snakemake_stops_before_any_job(workdir):
    cfg = base_config()
    cfg["defenses"]["magic"] = {}
    proc = snakemake(["-n"], cfg, workdir, check=False)
    assert proc.returncode != 0
    assert "defenses.magic: unknown defense" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()
