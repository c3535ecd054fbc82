"""Tests for fedsafe.data: synthetic sets, loaders, partitioners, prepare."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fedsafe.data.loaders import load_image_folder, load_medmnist
from fedsafe.data.partition import manifest, partition
from fedsafe.data.prepare import load_prepared, prepare
from fedsafe.data.registry import DATASETS, load_dataset
from fedsafe.data.synthetic import synthetic_brain_mri, synthetic_pathology

SMALL = {"n_samples": 400}


@pytest.fixture(scope="module")
def path_set():
    return synthetic_pathology(seed=0, **SMALL)


@pytest.fixture(scope="module")
def brain_set():
    return synthetic_brain_mri(seed=0, **SMALL)


# ------------------------------------------------------------------ registry
def test_registry_lists_datasets_and_imports_light():
    assert DATASETS.known() == sorted(["synthetic_pathology", "synthetic_brain_mri", "medmnist", "image_folder"])
    assert all(entry.doc for entry in DATASETS.entries.values())
    code = "import sys, fedsafe.data.registry; print(any(m in sys.modules for m in ('torch', 'skimage', 'PIL', 'medmnist')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_registry_rejects_unknown_option_and_dataset():
    with pytest.raises(ValueError, match="n_sampels"):
        load_dataset("synthetic_pathology", {"n_sampels": 10}, 0)
    with pytest.raises(ValueError, match="nope"):
        load_dataset("nope", {}, 0)


# ----------------------------------------------------------------- synthetic
@pytest.mark.parametrize("fn,channels,n_classes", [(synthetic_pathology, 3, 4), (synthetic_brain_mri, 1, 3)])
def test_synthetic_shapes_dtypes_split(fn, channels, n_classes):
    d = fn(seed=1, n_samples=300, image_size=24, test_fraction=0.25)
    assert d.x_train.shape == (225, channels, 24, 24) and d.x_test.shape == (75, channels, 24, 24)
    assert d.x_train.dtype == np.uint8 and d.y_train.dtype == np.int64 and d.y_test.dtype == np.int64
    assert d.channels == channels and d.image_size == 24 and len(d.class_names) == n_classes
    assert set(np.unique(d.y_train)) == set(range(n_classes))
    assert set(np.unique(d.site_train)) == {0, 1, 2, 3}
    assert d.x_train.std() > 10  # real image content, not a constant


@pytest.mark.parametrize("fn", [synthetic_pathology, synthetic_brain_mri])
def test_synthetic_deterministic(fn):
    a, b, c = fn(seed=3, **SMALL), fn(seed=3, **SMALL), fn(seed=4, **SMALL)
    for field in ("x_train", "y_train", "site_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)


def test_pathology_sites_differ_and_look_like_he(path_set):
    d = path_set
    means = np.array([d.x_train[d.site_train == s].mean(axis=(0, 2, 3)) for s in range(4)])
    assert np.ptp(means, axis=0).max() > 5  # stain colour shift between hospitals
    stds = [d.x_train[d.site_train == s].astype(float).std() for s in range(4)]
    assert max(stds) - min(stds) > 1  # contrast/noise differ too
    r, g, b = d.x_train.mean(axis=(0, 2, 3))
    assert g < r and g < b  # pink/purple: green absorbed by both stains


def test_pathology_classes_differ(path_set):
    d = path_set
    dark = (d.x_train.astype(float).mean(axis=1) < 140).mean(axis=(1, 2))  # nuclear area fraction
    frac = [dark[d.y_train == c].mean() for c in range(4)]
    assert frac[1] > frac[0] and frac[3] > frac[2]  # tumour/lymphocytes denser than normal/stroma


def test_brain_lesions_and_sites(brain_set):
    d = brain_set
    x = d.x_train[:, 0].astype(float)
    centre = x[:, 8:24, 8:24]
    top = [np.percentile(centre[d.y_train == c], 99) for c in range(3)]
    assert top[0] > top[2]  # glioma adds bright tissue inside the brain
    edge = np.concatenate([x[:, 4:8, 6:26], x[:, 24:28, 6:26]], axis=1)
    bright_edge = [np.percentile(edge[d.y_train == c], 99.5) for c in range(3)]
    assert bright_edge[1] > bright_edge[2]  # meningioma sits at the skull edge
    means = [x[d.site_train == s].mean() for s in range(4)]
    assert np.ptp(means) > 3
    assert (x[:, 0, 0] < 40).mean() > 0.9  # dark background outside the head


def test_synthetic_label_noise_and_bad_options():
    clean = synthetic_brain_mri(seed=0, **SMALL)
    noisy = synthetic_brain_mri(seed=0, label_noise=0.2, **SMALL)
    flipped = (clean.y_train != noisy.y_train).mean()
    assert 0.1 < flipped < 0.3
    with pytest.raises(ValueError, match="n_classes"):
        synthetic_pathology(seed=0, n_classes=5)
    assert len(synthetic_pathology(seed=0, n_samples=100, n_classes=2).class_names) == 2


# --------------------------------------------------------------- partitioners
def _check_disjoint_cover(parts, n):
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n


def _skew(parts, labels):
    """Mean total-variation distance between client and global label distributions."""
    k = labels.max() + 1
    glob = np.bincount(labels, minlength=k) / len(labels)
    return np.mean([0.5 * np.abs(np.bincount(labels[p], minlength=k) / len(p) - glob).sum() for p in parts])


LABELS = np.random.default_rng(0).integers(0, 5, 2000)
SITES = np.random.default_rng(1).integers(0, 4, 2000)


@pytest.mark.parametrize("scheme,params", [("iid", {}), ("dirichlet", {"alpha": 0.3}), ("shards", {}), ("sites", {})])
def test_partition_disjoint_cover_deterministic(scheme, params):
    parts = partition(LABELS, SITES, scheme, 4, seed=7, **params)
    _check_disjoint_cover(parts, len(LABELS))
    again = partition(LABELS, SITES, scheme, 4, seed=7, **params)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    if scheme != "sites":
        other = partition(LABELS, SITES, scheme, 4, seed=8, **params)
        assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


def test_dirichlet_skew_grows_as_alpha_falls_and_min_size():
    skews = [np.mean([_skew(partition(LABELS, None, "dirichlet", 10, s, alpha=a), LABELS) for s in range(3)])
             for a in (100.0, 1.0, 0.1)]
    assert skews[0] < skews[1] < skews[2]
    assert skews[0] < 0.1 and skews[2] > 0.4
    parts = partition(LABELS, None, "dirichlet", 20, 0, alpha=0.05, min_size=30)
    assert min(len(p) for p in parts) >= 30
    _check_disjoint_cover(parts, len(LABELS))


def test_iid_balanced_and_shards_few_labels():
    iid = partition(LABELS, None, "iid", 10, 0)
    assert max(map(len, iid)) - min(map(len, iid)) <= 1 and _skew(iid, LABELS) < 0.1
    shards = partition(LABELS, None, "shards", 10, 0, shards_per_client=2)
    assert all(len(np.unique(LABELS[p])) <= 3 for p in shards)  # 2 shards, a shard may straddle a label boundary
    balanced = np.arange(2000) % 5
    one = partition(balanced, None, "shards", 5, 0, shards_per_client=1)
    assert sorted(int(np.unique(balanced[p])[0]) for p in one) == [0, 1, 2, 3, 4]  # one whole label each


def test_sites_partition_and_errors():
    parts = partition(LABELS, SITES, "sites", 4, 0)
    for i, p in enumerate(parts):
        assert (SITES[p] == i).all()
    with pytest.raises(ValueError, match="number of sites"):
        partition(LABELS, SITES, "sites", 3, 0)
    with pytest.raises(ValueError, match="no acquisition-site"):
        partition(LABELS, None, "sites", 1, 0)
    with pytest.raises(ValueError, match="unknown partition scheme"):
        partition(LABELS, SITES, "random", 4, 0)
    with pytest.raises(ValueError, match="alpah"):
        partition(LABELS, SITES, "dirichlet", 4, 0, alpah=1)


def test_manifest_histograms_sum():
    names = [f"c{i}" for i in range(5)]
    parts = partition(LABELS, None, "dirichlet", 6, 0, alpha=0.5)
    m = json.loads(json.dumps(manifest(parts, LABELS, names)))
    assert m["n_clients"] == 6
    for c, p in zip(m["clients"], parts):
        assert c["size"] == len(p) == sum(c["class_counts"].values())
    total = {n: sum(c["class_counts"][n] for c in m["clients"]) for n in names}
    assert total == {n: int((LABELS == i).sum()) for i, n in enumerate(names)}


# ------------------------------------------------------------------- loaders
def _write_medmnist(path, rgb, size=28, n=(30, 10, 20), k=3):
    """A tiny file in exactly the real MedMNIST layout."""
    rng = np.random.default_rng(0)
    shape = (size, size, 3) if rgb else (size, size)
    arrays = {}
    for split, m in zip(("train", "val", "test"), n):
        arrays[f"{split}_images"] = rng.integers(0, 256, (m, *shape), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(m) % k).reshape(m, 1).astype(np.uint8)
    np.savez_compressed(path, **arrays)
    return arrays


@pytest.mark.parametrize("rgb,flag", [(False, "bloodmnist"), (True, "pathmnist")])
def test_medmnist_npz_loader(tmp_path, rgb, flag):
    f = tmp_path / "tiny.npz"
    arrays = _write_medmnist(f, rgb)
    d = load_medmnist(seed=0, flag=flag, npz_path=str(f))
    c = 3 if rgb else 1
    assert d.x_train.shape == (40, c, 28, 28) and d.x_test.shape == (20, c, 28, 28) and d.channels == c
    assert d.y_train.dtype == np.int64 and d.y_train.ndim == 1
    first = arrays["train_images"][0]
    np.testing.assert_array_equal(d.x_train[0], first.transpose(2, 0, 1) if rgb else first[None])
    np.testing.assert_array_equal(d.y_test, arrays["test_labels"].ravel())
    assert (d.site_train == -1).all()
    if flag == "pathmnist":
        assert len(d.class_names) == 9 and d.class_names[3] == "lymphocytes"
    resized = load_medmnist(seed=0, flag=flag, npz_path=str(f), size=16, max_samples=12)
    assert resized.x_train.shape == (12, c, 16, 16) and resized.image_size == 16
    again = load_medmnist(seed=0, flag=flag, npz_path=str(f), size=16, max_samples=12)
    np.testing.assert_array_equal(resized.x_train, again.x_train)


def test_medmnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_medmnist(seed=0, npz_path=str(tmp_path / "missing.npz"))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="bad.npz"):
        load_medmnist(seed=0, npz_path=str(bad))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, images=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match="train_images"):
        load_medmnist(seed=0, npz_path=str(wrong))
    with pytest.raises(ValueError, match="flag"):
        load_medmnist(seed=0)


def test_medmnist_download_failure_names_flag_and_path(tmp_path, monkeypatch):
    def offline(url, filename):
        raise OSError("network unreachable")
    monkeypatch.setattr("urllib.request.urlretrieve", offline)
    with pytest.raises(RuntimeError, match="bloodmnist.*" + str(tmp_path / "bloodmnist_64.npz")):
        load_medmnist(seed=0, flag="bloodmnist", root=str(tmp_path), size=64)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_medmnist_uses_cached_file_in_root(tmp_path):
    _write_medmnist(tmp_path / "bloodmnist.npz", rgb=True)
    d = load_dataset("medmnist", {"flag": "bloodmnist", "root": str(tmp_path)}, 0)
    assert d.x_train.shape[1:] == (3, 28, 28) and d.class_names[0] == "basophil"


def _write_folder(root, classes=("glioma", "meningioma", "notumor"), per_class=(4, 2), mode="L"):
    rng = np.random.default_rng(0)
    for split, n in zip(("Training", "Testing"), per_class):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                shape = (40, 50) if mode == "L" else (40, 50, 3)
                ext = ".png" if i % 2 == 0 else ".jpg"
                Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / split / c / f"img{i}{ext}")


def test_image_folder_loader(tmp_path):
    _write_folder(tmp_path, mode="RGB")
    (tmp_path / "Training" / "glioma" / "notes.txt").write_text("ignored")
    d = load_image_folder(seed=0, root=str(tmp_path), image_size=16)
    assert d.class_names == ["glioma", "meningioma", "notumor"]
    assert d.x_train.shape == (12, 1, 16, 16) and d.x_test.shape == (6, 1, 16, 16)
    assert np.bincount(d.y_train).tolist() == [4, 4, 4] and np.bincount(d.y_test).tolist() == [2, 2, 2]
    rgb = load_dataset("image_folder", {"root": str(tmp_path), "image_size": 8, "grayscale": False, "max_samples": 5}, 0)
    assert rgb.x_train.shape == (5, 3, 8, 8) and rgb.channels == 3 and rgb.x_train.dtype == np.uint8


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_image_folder(seed=0, root=str(tmp_path / "nowhere"))
    (tmp_path / "Training" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Testing"):
        load_image_folder(seed=0, root=str(tmp_path))
    root = tmp_path / "data"
    _write_folder(root)
    (root / "Testing" / "glioma" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ValueError, match="broken.png"):
        load_image_folder(seed=0, root=str(root))


# ------------------------------------------------------------------- prepare
def test_prepare_roundtrip(tmp_path):
    opts = {"n_samples": 300, "partition": {"scheme": "dirichlet", "alpha": 0.5}, "holdout_fraction": 0.1}
    man = prepare("synthetic_pathology", opts, n_clients=3, seed=5, out_dir=tmp_path)
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("data.npz", "manifest.json")]
    data = load_prepared(tmp_path)
    assert data.manifest == json.loads((tmp_path / "manifest.json").read_text()) == json.loads(json.dumps(man))
    assert man["holdout_size"] == 24 and man["test_size"] == 60 and man["channels"] == 3
    assert len(data.clients) == 3
    sizes = [len(y) for _, y in data.clients]
    assert sizes == [c["size"] for c in man["clients"]] and sum(sizes) + 24 == 240
    for (x, y), c in zip(data.clients, man["clients"]):
        assert x.dtype == np.uint8 and y.dtype == np.int64 and x.shape[1:] == (3, 32, 32)
        assert np.bincount(y, minlength=4).tolist() == list(c["class_counts"].values())
    # Clients and holdout are disjoint pieces of the training split.
    ref = synthetic_pathology(seed=5, n_samples=300)
    rows = {r.tobytes() for r in ref.x_train}
    pieces = [x for x, _ in data.clients] + [data.holdout[0]]
    assert sum(map(len, pieces)) == len(rows) == len({r.tobytes() for x in pieces for r in x})
    np.testing.assert_array_equal(data.test[0], ref.x_test)
    # Same inputs -> identical file contents.
    prepare("synthetic_pathology", opts, n_clients=3, seed=5, out_dir=tmp_path / "again")
    again = load_prepared(tmp_path / "again")
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(data.clients, again.clients))


def test_prepare_sites_and_load_errors(tmp_path):
    man = prepare("synthetic_brain_mri", {"n_samples": 200, "partition": {"scheme": "sites"}}, 4, 0, tmp_path)
    assert man["n_clients"] == 4 and man["channels"] == 1
    with pytest.raises(FileNotFoundError, match="prepared data missing"):
        load_prepared(tmp_path / "empty")
    (tmp_path / "data.npz").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="data.npz"):
        load_prepared(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json"):
        load_prepared(tmp_path)


# ------------------------------------------------------------- errors that say what to do
def _without_medmnist(monkeypatch):
    for name in ("medmnist", "medmnist.info"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError


def test_medmnist_without_its_package_names_the_install_command(tmp_path, monkeypatch):
    """Never numbered class names in place of the real ones: stop, naming package and command."""
    f = tmp_path / "tiny.npz"
    _write_medmnist(f, rgb=True)
    _without_medmnist(monkeypatch)
    with pytest.raises(ImportError, match=r"pathmnist.*medmnist.*`pip install --no-deps medmnist`"):
        load_medmnist(seed=0, flag="pathmnist", npz_path=str(f))
    assert load_medmnist(seed=0, npz_path=str(f)).class_names == ["class0", "class1", "class2"]


def test_medmnist_without_its_package_stops_at_parse_time(monkeypatch):
    from conftest import base_config

    from fedsafe import config_check
    from fedsafe.config.schema import ConfigError

    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    cfg = base_config(datasets={"blood": {"source": "medmnist",
                                          "options": {"flag": "bloodmnist", "max_samples": 100}}})
    with pytest.raises(ConfigError, match=r"datasets\.blood\.options\.flag: .*pip install"):
        config_check.validate(cfg)


def _cell_files(root):  # the train rule's outputs, as rules/train.smk names them
    return {"model": root / "train/model.pt", "checkpoints": root / "train/checkpoints.pt",
            "observed": root / "train/observed.pt", "canaries": root / "train/canaries.npz",
            "clients": root / "train/clients"}


@pytest.fixture(scope="module")
def tiny_cell(tmp_path_factory):
    """A prepared set and a trained cell's files (1 round), shared by the corruption tests."""
    from conftest import base_config

    from fedsafe import config_check, jobs
    from fedsafe.config import specs

    root = tmp_path_factory.mktemp("cell")
    cfg = base_config(attacks={"fgsm": {"options": {"eps": [0.05], "n_samples": 10}}})
    config_check.validate(cfg)
    jobs.prepare(specs.dataset_spec(cfg, "mri"), root / "data")
    spec = specs.train_spec(cfg, "mri", "none", "0", 0)
    jobs.train(spec, root / "data/data.npz", root / "train/train.json", _cell_files(root))
    return root, spec, specs.attack_spec(cfg, "fgsm")


@pytest.mark.xdist_group("data_tiny_cell")  # one worker trains `tiny_cell` for all five
@pytest.mark.parametrize("name", ["train/model.pt", "train/checkpoints.pt", "data/data.npz",
                                  "data/manifest.json", "train/train.json"])
def test_corrupt_input_file_names_the_file_and_how_to_regenerate_it(tiny_cell, tmp_path, name):
    import shutil

    from fedsafe import jobs

    src, spec, attack = tiny_cell
    shutil.copytree(src, tmp_path / "c")
    damaged = tmp_path / "c" / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # truncated
    c = tmp_path / "c"
    with pytest.raises((ValueError, OSError)) as err:
        files = _cell_files(c)
        jobs.attack(spec, attack, c / "data/data.npz", files["model"], files["checkpoints"],
                    files["observed"], files["canaries"], c / "train/train.json",
                    tmp_path / "out.json", tmp_path / "images")
    assert str(damaged) in str(err.value) and f"`rm {damaged}`" in str(err.value)
    assert "make run" in str(err.value)
