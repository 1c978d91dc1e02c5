"""The suite installs every technique package and each registers what it promises."""

from __future__ import annotations

from fedmm.suite import EXPECTED, installed


def test_every_technique_of_the_suite_is_registered_by_its_package() -> None:
    found = installed()
    for package, names in EXPECTED.items():
        for name in names:
            assert found.get(name) == package, (name, found.get(name))


def test_every_package_registers_a_benchmark() -> None:
    providers = set(installed("fedmm.benchmarks").values())
    assert {"fedmm-core", *EXPECTED} <= providers
