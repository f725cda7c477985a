"""The parameter and FLOP counts that ship with the package are the counts of the models the
library builds: a sample in the quick loop, every catalogue name in the slow one."""

from __future__ import annotations

import pytest

from core.catalogue import catalogue, describe, shipped_counts
from core.models.specs import CATALOGUE_NAMES, parse_architecture

# One of each builder path: CIFAR basic blocks, a plain twin, an ImageNet basic and a bottleneck.
SAMPLE = ("resnet20", "plain20", "resnet18")


def _counts(name: str) -> dict[str, int]:
    entry = describe(parse_architecture(name))
    return {"params": entry["params"], "flops": entry["flops"]}


def test_every_catalogue_name_ships_with_its_counts():
    shipped = shipped_counts()
    assert list(shipped) == list(CATALOGUE_NAMES)
    assert all(c["params"] > 0 and c["flops"] > 0 for c in shipped.values())


@pytest.mark.parametrize("name", SAMPLE)
def test_a_sample_of_the_shipped_counts_is_what_the_builder_builds(name):
    assert shipped_counts()[name] == _counts(name)


def test_the_catalogue_needs_no_model_built_on_a_fresh_install(tmp_path, monkeypatch):
    import core.catalogue as module

    def no_building(spec):
        raise AssertionError(f"built {spec.name}: the shipped counts should have served")

    monkeypatch.setattr(module, "describe", no_building)
    entries = {e["name"]: e for e in catalogue(cache_dir=tmp_path)}
    assert entries["resnet20"]["params"] == 269_722
    assert entries["resnet1202"]["params"] == pytest.approx(19.4e6, rel=0.01)
    assert entries["resnet152"]["paper_error"] == 21.43


# Minutes to build on a 2-core CPU: their shipped counts are checked against the papers instead.
LARGEST = {
    "resnet1202": 19.4e6,  # He et al. 2016, Table 6
    "plain1202": 19.4e6,  # the same layers without shortcuts (option A adds no parameters)
    "preact_resnet1001": 10.2e6,  # He et al. 2016b ("Identity Mappings"), Table 2
    "resnext101_32x8d": 88.8e6,  # torchvision's resnext101_32x8d
}


@pytest.mark.slow
def test_all_shipped_counts_are_what_the_builder_builds():
    shipped = shipped_counts()
    rebuilt = {name: _counts(name) for name in CATALOGUE_NAMES if name not in LARGEST}
    assert rebuilt == {n: c for n, c in shipped.items() if n not in LARGEST}, (
        "run python scripts/catalogue_counts.py and commit core/models/catalogue_counts.json"
    )
    for name, params in LARGEST.items():
        assert shipped[name]["params"] == pytest.approx(params, rel=0.02), name  # papers round
