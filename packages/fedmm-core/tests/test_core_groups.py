"""Parameter-group names are built, parsed and matched in one place (fedmm.core.groups)."""

from __future__ import annotations

import pytest

from fedmm.core import datasets, models
from fedmm.core.arrays import model_groups
from fedmm.core.errors import ConfigError
from fedmm.core.groups import (
    encoder_group,
    expand_groups,
    expand_modalities,
    matches,
    modality_of,
    of_modality,
    part_of,
)


def test_encoder_groups_round_trip() -> None:
    assert encoder_group("audio") == "encoder.audio"
    assert encoder_group("text", 3) == "encoder.text.3"
    assert modality_of("encoder.text.3") == "text" and part_of("encoder.text.3") == "3"
    assert modality_of("encoder.audio") == "audio" and part_of("encoder.audio") is None
    # Shared groups, and a group merely starting with the word, belong to no modality.
    assert modality_of("fusion") is None and modality_of("head") is None
    assert modality_of("encoders_extra") is None and part_of("fusion") is None


def test_patterns_match_a_group_its_descendants_and_wildcards() -> None:
    assert matches("encoder.text.0", "encoder.text")
    assert not matches("encoder.textual", "encoder.text")  # a prefix of the name is no ancestor
    assert matches("encoder.audio", "encoder.*") and matches("head", "*")
    groups = ["encoder.audio", "encoder.text.0", "encoder.text.1", "fusion", "head"]
    assert expand_groups(["head", "encoder.text"], groups) == ("encoder.text.0", "encoder.text.1", "head")
    assert of_modality(groups, "text") == ["encoder.text.0", "encoder.text.1"]
    with pytest.raises(ConfigError, match=r"'encoder\.image' matches nothing"):
        expand_groups(["encoder.image"], groups)
    assert expand_modalities(["encoder.{m}", "head"], ["a", "b"]) == ["encoder.a", "encoder.b", "head"]


def test_a_real_models_groups_parse_to_its_modalities() -> None:
    data = datasets.load("synthetic", clients=2)
    model = models.late_fusion(data.modalities, data.num_classes)
    names = {m.name for m in data.modalities}
    groups = list(model_groups(model))
    assert {modality_of(g) for g in groups} - {None} == names
    for m in names:
        assert of_modality(groups, m) == [encoder_group(m)]
