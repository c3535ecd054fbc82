"""The committed published grid (docs/published/) is the one config/published.yaml describes, and
it meets the stated targets: 10 seeds, and every undefended replicate settled (its last round moved
test accuracy by less than 0.01, docs/reproducibility.md). Changing published.yaml without running
`make publish` again fails here."""

import re

import pandas as pd
from conftest import ROOT

from fedsafe.config.hashing import results_hash
from fedsafe.config_check import load_config
from fedsafe.grid_keys import REPLICATE

PUBLISHED = ROOT / "docs" / "published"


def test_the_committed_summary_comes_from_the_published_config():
    page = (PUBLISHED / "results.md").read_text()
    stated = re.search(r"config hash `([0-9a-f]+)`", page).group(1)
    assert stated == results_hash(load_config(ROOT / "config" / "published.yaml"))
    readme = (ROOT / "README.md").read_text()
    assert f"config hash `{stated}`" in readme  # the README block is the same run's


def test_the_published_grid_has_ten_seeds_and_settled_undefended_cells():
    df = pd.read_csv(PUBLISHED / "summary.csv").drop_duplicates(REPLICATE)
    assert df.groupby(["dataset", "defense", "noise_multiplier"])["seed"].nunique().min() >= 10
    undefended = df[df["defense"] == "none"]
    assert len(undefended) >= 20 and (undefended["last_round_change"] < 0.01).all(), \
        undefended[["dataset", "seed", "last_round_change"]].to_string()
