"""Bad configuration stops the run before any job, with a message naming the offending key."""

import copy

import pytest
import yaml
from conftest import ROOT, base_config, snakemake

from fedsafe import config_check
from fedsafe.config import grid
from fedsafe.config.schema import ConfigError

pytestmark = pytest.mark.xdist_group("config")


def _validate(cfg):
    config_check.validate(copy.deepcopy(cfg))


def test_valid_config_gets_defaults():
    cfg = base_config()
    config_check.validate(cfg)
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
    with pytest.raises(ConfigError, match=message):
        _validate(cfg)


def test_noise_spelling_is_canonical():
    cfg = base_config(defenses={"weight_noise": {"noise_multipliers": [0.010, 0.01, 0.1]}})
    config_check.validate(cfg)
    assert grid.noise_values(cfg, "weight_noise") == ["0.01", "0.1"]


def test_snakemake_stops_before_any_job(workdir):
    cfg = base_config()
    cfg["defenses"]["magic"] = {}
    proc = snakemake(["-n"], cfg, workdir, check=False)
    assert proc.returncode != 0
    assert "defenses.magic: unknown defense" in proc.stdout + proc.stderr
    assert not (workdir / "results").exists()


def _default_config():
    return yaml.safe_load((ROOT / "config/config.yaml").read_text())


# The bad configs of the issue, each a one-key change of config/config.yaml: every one stops at
# parse time, and the message starts with the key to fix.
BAD = [
    (lambda c: c["defenses"]["dp_sgd"]["options"].update(clip_norm=0),
     "defenses.dp_sgd.options.clip_norm"),
    (lambda c: c["defenses"]["dp_sgd"]["options"].update(delta=2), "defenses.dp_sgd.options.delta"),
    (lambda c: c["attacks"]["pgd"]["options"].update(stepz=50), "attacks.pgd.options.stepz"),
    (lambda c: c["attacks"]["fgsm"]["options"].update(eps=[-0.03]), "attacks.fgsm.options.eps"),
    (lambda c: c["attacks"]["fgsm"]["options"].update(eps=5), "attacks.fgsm.options.eps"),
    (lambda c: c["attacks"]["inverting_gradients"]["options"].update(round=3),
     "attacks.inverting_gradients.options.round: round 3 is not observed"),
    (lambda c: c["attacks"]["inverting_gradients"]["options"].update(round=20),
     "attacks.inverting_gradients.options.round: round 20 is not observed"),
    (lambda c: c["attacks"]["mia_loss"]["options"].update(n_sample=100),
     "attacks.mia_loss.options.n_sample: unknown option"),
    (lambda c: c["datasets"]["pathology"].update(n_clients=5000), "datasets.pathology.n_clients"),
    (lambda c: c["federation"].update(model="vgg_magic"), "federation.model: unknown model"),
    (lambda c: c["datasets"]["pathology"]["options"].update(image_size=3),
     "datasets.pathology.options.image_size"),
    (lambda c: c["federation"].update(checkpoint_rounds=[0, 99]), "federation.checkpoint_rounds"),
    (lambda c: c.update(seeds=[0, 0]), "seeds: [0, 0] has non-unique elements"),
    (lambda c: c.update(claims={"nope": {"level": 0.02}}), "claims.nope: unknown claim"),
    (lambda c: c["datasets"]["brain_mri"]["options"].update(test_fraction=1.0),
     "datasets.brain_mri.options.test_fraction"),
    (lambda c: c["datasets"]["brain_mri"]["options"].update(n_sitez=3),
     "datasets.brain_mri.options.n_sitez: unknown option"),
    (lambda c: c["federation"].update(rounds="8"), "federation.rounds: '8' is not of type"),
]


@pytest.mark.parametrize("mutate, message", BAD)
def test_bad_configs_stop_at_parse_time(mutate, message):
    cfg = _default_config()
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        config_check.validate(cfg)
    assert str(err.value).startswith(message), str(err.value)


def test_image_size_must_fit_the_model():
    cfg = _default_config()
    cfg["datasets"]["pathology"]["options"]["image_size"] = 12
    cfg["federation"]["model"] = "resnet18"
    with pytest.raises(ConfigError, match=r"datasets\.pathology\.options\.image_size: 12 is "
                                             "smaller than federation.model resnet18 takes"):
        config_check.validate(cfg)


def test_every_model_takes_its_smallest_image():
    import torch

    from fedsafe.models import MODELS, build_model

    for name, entry in MODELS.entries.items():
        for channels in (1, 3):
            model = build_model(name, channels, 3, entry.meta.min_image_size).eval()
            size = entry.meta.min_image_size
            assert model(torch.rand(2, channels, size, size)).shape == (2, 3), name


def test_dataset_options_match_the_loaders():
    """Each registry entry declares exactly the options its loader takes, with its defaults."""
    import inspect

    from fedsafe.data.registry import DATASETS

    for name, entry in DATASETS.entries.items():
        params = inspect.signature(DATASETS.load(name)).parameters
        declared = {k: p.default for k, p in params.items() if k != "seed"}
        assert declared == {k: o.default for k, o in entry.options.items()}, name


# ------------------------------------------------------------------------------------ fuzz
SHIPPED = sorted(p for p in (ROOT / "config").glob("*.yaml") if p.name != "schema.yaml")
ID_MAPS = {("datasets",), ("defenses",), ("attacks",)}  # keys that are user-chosen ids
REGISTRY_IDS = {"source", "type", "model", "parts"}  # values that name a registry entry


def _paths(node, path=()):
    """Every key path of a config: (path, value) for mappings' keys and list items."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if \
        isinstance(node, list) else []
    for k, v in items:
        yield path + (k,), v
        yield from _paths(v, path + (k,))


def _set(cfg, path, value):
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[path[-1]] = value


def _rename(cfg, path, new):
    for k in path[:-1]:
        cfg = cfg[k]
    cfg[new] = cfg.pop(path[-1])


def _mutations(cfg):
    """(mutated config, key the error must name, whether it must fail) for every key."""
    for path, value in _paths(cfg):
        name = next(str(k) for k in reversed(path) if isinstance(k, str))
        mutants = []
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            mutants.append(("wrong type", 7, True))
        elif isinstance(value, (bool, int, float, list, dict)):
            mutants.append(("wrong type", "x", True))
        if isinstance(value, str):
            mutants.append(("wrong type", 7, True))
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            mutants += [("out of range", -1, False), ("out of range", 10**9, False),
                        ("out of range", 0.5 if isinstance(value, int) else -0.5, False)]
        if name in REGISTRY_IDS and isinstance(value, str):
            mutants.append(("unknown id", "no_such_thing", True))
        for label, new, must_fail in mutants:
            c = copy.deepcopy(cfg)
            _set(c, path, new)
            yield f"{label} {'.'.join(map(str, path))}={new!r}", c, name, must_fail
        if isinstance(path[-1], str):  # a misspelt key
            c = copy.deepcopy(cfg)
            _rename(c, path, path[-1] + "x")
            yield (f"misspelt {'.'.join(map(str, path))}", c, path[-1] + "x",
                   path[:-1] not in ID_MAPS)


@pytest.mark.parametrize("shipped", SHIPPED, ids=lambda p: p.stem)
def test_fuzz_every_key_of_every_shipped_config(shipped, tmp_path, monkeypatch):
    """Mutate every key of a shipped config (wrong type, out of range, misspelt name, unknown
    registry id): the parse-time check either names the key, or accepts the config. Accepted
    mutations (e.g. 10**9 rounds, or a renamed dataset id) are legal configs: the workflow's
    parse passes for them, and a real run of each would take hours, so 'succeeds' is checked as
    far as the parse. Wrong types, misspelt names and unknown ids must always fail."""
    for folder in ("data/pathology", "data/brain_tumor_mri", "data/medmnist"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # hand-downloaded data folders, as in test_workflow_dag
    base = yaml.safe_load(shipped.read_text())
    config_check.validate(copy.deepcopy(base))
    n = 0
    for label, cfg, key, must_fail in _mutations(base):
        n += 1
        try:
            config_check.validate(cfg)
        except ConfigError as e:
            assert key in str(e).split(":")[0] or key in str(e), f"{label}: {e}"
            continue
        assert not must_fail, f"{label}: accepted"
    assert n > 50


def test_config_readme_is_generated_from_schema_and_registries():
    """config/README.md documents every key and every registry option; regenerate it with
    `make config-doc` after changing the schema or an option declaration."""
    from fedsafe.config_doc import render

    text = render()
    assert (ROOT / "config/README.md").read_text() == text, "run `make config-doc`"
    schema = yaml.safe_load((ROOT / "config/schema.yaml").read_text())
    for key, s in schema["properties"].items():
        assert f"| `{key}` |" in text and s.get("description"), key
    from fedsafe.attacks import ATTACKS
    from fedsafe.data.registry import DATASETS

    for registry in (DATASETS, ATTACKS):
        for name, entry in registry.entries.items():
            assert f"**`{name}`**" in text
            assert all(f"| `{o}` |" in text for o in entry.options)


def test_jobs_get_tracking_from_the_config_not_from_their_paths(tmp_path, monkeypatch):
    """The default MLflow store lives in results_dir whatever its depth (it used to be found by
    counting a job file's parent folders); tracking off means no tracking."""
    from fedsafe.jobs import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    deep = tmp_path / "a/b/c/results"
    cfg = base_config(results_dir=str(deep))
    config_check.validate(cfg)
    assert tracking(cfg) == {"uri": f"sqlite:///{deep / 'mlflow.db'}", "experiment": "fedsafe-test"}
    cfg["mlflow"] = {"tracking_uri": "http://tracker:5000", "enabled": True}
    assert tracking(cfg)["uri"] == "http://tracker:5000"
    cfg["mlflow"]["enabled"] = False
    assert tracking(cfg) is None
    # and none of it is a param of a job rule, so changing it reruns nothing
    rules = "".join(p.read_text() for p in (ROOT / "rules").glob("*.smk"))
    assert "mlflow" not in rules and 'config["experiment"]' not in rules


def test_more_canary_clients_than_the_model_has_directions_stop_at_parse_time():
    """Canary clients are orthonormal directions: small_cnn on 32x32 RGB has 40,196 parameters,
    39,936 usable directions; asking for more names the key before any job."""
    import copy

    from fedsafe.config.schema import ConfigError
    from fedsafe.config_check import check, load_config

    cfg = load_config(ROOT / "config" / "audit.yaml")
    fits, too_many = copy.deepcopy(cfg), copy.deepcopy(cfg)
    fits["audit"]["client_canaries"] = 39936
    check(fits)
    too_many["audit"]["client_canaries"] = 39937
    with pytest.raises(ConfigError, match=r"audit\.client_canaries: 39937 canary clients.*39936"):
        check(too_many)
