"""The retrieval completer: fills every missing slot from the right class, nearest first, and marks it."""

from __future__ import annotations

import numpy as np
import pytest

from fedmm.completion.fedmvp.completion import PoolCompleter
from fedmm.core.data.types import ModalitySpec, SampleSet
from fedmm.core.errors import ArgumentError, DataError

SPECS = (ModalitySpec("image", (2,), "vector"), ModalitySpec("text", (3,), "tokens"))


def _pool() -> SampleSet:
    image = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 5.0], [9.0, 1.0]], dtype=np.float32)
    text = np.array([[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]])
    return SampleSet(SPECS, {"image": image, "text": text}, np.array([0, 0, 1, 1]))


def test_missing_text_comes_from_the_nearest_pair_of_the_same_class() -> None:
    image = np.array([[9.5, 0.0], [0.2, 0.1], [8.0, 0.0]], dtype=np.float32)
    text = np.zeros((3, 3), dtype=np.int64)
    present = np.array([[True, False], [True, False], [False, True]])
    samples = SampleSet(SPECS, {"image": image, "text": text}, np.array([0, 1, 1]), present)
    done = PoolCompleter(_pool()).complete(samples)
    # Sample 0 (class 0, image near pool row 1) gets text 2; sample 1 (class 1, image near row 2) text 3.
    assert done.features["text"][0].tolist() == [2, 2, 2]
    assert done.features["text"][1].tolist() == [3, 3, 3]
    # Sample 2 lacks its image: class 1 candidates are rows 2 and 3; text [0,0,0] is equally far
    # from [3,3,3] and [4,4,4]? No: row 2 ([3,3,3]) is nearer to 0, so its image is taken.
    assert done.features["image"][2].tolist() == [0.0, 5.0]
    assert done.present.all()
    np.testing.assert_array_equal(done.generated, ~present)
    np.testing.assert_array_equal(done.features["image"][:2], image[:2])  # observed values untouched


def test_random_same_class_mode_and_errors() -> None:
    samples = SampleSet(
        SPECS,
        {"image": np.zeros((4, 2), np.float32), "text": np.zeros((4, 3), np.int64)},
        np.array([1, 1, 1, 1]),
        np.array([[True, False]] * 4),
    )
    done = PoolCompleter(_pool(), coarse_to_fine=False, seed=0).complete(samples)
    assert {tuple(t) for t in done.features["text"].tolist()} <= {(3, 3, 3), (4, 4, 4)}  # class 1 only
    empty = SampleSet(
        SPECS,
        {"image": np.zeros((1, 2), np.float32), "text": np.zeros((1, 3), np.int64)},
        np.array([0]),
        np.array([[True, False]]),
    )
    with pytest.raises(DataError, match="no sample with every modality"):
        PoolCompleter(empty)


def test_copies_add_one_completion_per_next_nearest_partner() -> None:
    image = np.array([[9.5, 0.0], [0.2, 0.1], [8.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    text = np.zeros((4, 3), dtype=np.int64)
    present = np.array([[True, False], [True, False], [False, True], [True, True]])
    samples = SampleSet(SPECS, {"image": image, "text": text}, np.array([0, 1, 1, 0]), present)
    done = PoolCompleter(_pool(), copies=2).complete(samples)
    # The 4 samples completed as before, then one more copy of each incomplete sample (0, 1, 2)
    # completed from its second-nearest same-class pair; the complete sample 3 is not copied.
    assert len(done) == 7
    np.testing.assert_array_equal(done.labels, [0, 1, 1, 0, 0, 1, 1])
    assert done.features["text"][:2].tolist() == [[2, 2, 2], [3, 3, 3]]
    assert done.features["text"][4:6].tolist() == [[1, 1, 1], [4, 4, 4]]
    assert done.features["image"][6].tolist() == [9.0, 1.0]
    np.testing.assert_array_equal(done.features["image"][4:6], image[:2])  # observed values kept
    np.testing.assert_array_equal(done.generated[4:], ~present[:3])
    assert done.present.all()
    with pytest.raises(ArgumentError, match="PoolCompleter: copies must be an integer >= 1, got 0") as info:
        PoolCompleter(_pool(), copies=0)
    assert info.value.argument == "copies"
