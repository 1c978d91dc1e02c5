"""captions: CUB/Flowers text_c10 folders and COCO captions JSON, written small into tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fedmm.core.data import captions
from fedmm.core.data.captions import PAD_ID, UNK_ID, WordTokenizer
from fedmm.core.data.types import MISSING_LABEL
from fedmm.core.errors import DataFileError

CLASSES = {"001.Black_footed_Albatross": (250, 10, 10), "002.Laysan_Albatross": (10, 10, 250)}


def _image(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _cub(root: Path, per_class: int = 5) -> Path:
    for cls, color in CLASSES.items():
        for k in range(per_class):
            stem = f"{cls.split('.')[1]}_{k:04d}"
            _image(root / "images" / cls / f"{stem}.jpg", color)
            txt = root / "text_c10" / cls / f"{stem}.txt"
            txt.parent.mkdir(parents=True, exist_ok=True)
            bird = "red" if color[0] > 128 else "blue"
            txt.write_text(f"A {bird} bird, with long wings.\nthis {bird} bird has a big beak\n\n")
    return root


def test_class_folders_layout(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    ds = captions.load_central(root, image_size=16, max_len=6, test_fraction=0.4, progress=False)
    assert ds.num_classes == 2
    assert ds.class_names == ("Black footed Albatross", "Laysan Albatross")
    assert ds.metadata["class_dirs"] == list(CLASSES)
    assert [m.name for m in ds.modalities] == ["image", "text"]
    assert ds.modalities[0].shape == (3, 16, 16) and ds.modalities[1].kind == "tokens"
    # One caption per image by default; 40 % of each class's 5 images in the test split.
    assert len(ds.train) == 6 and len(ds.test) == 4
    assert np.bincount(ds.test.labels).tolist() == [2, 2]
    img = ds.train.features["image"]
    assert img.dtype == np.float32 and img.shape == (6, 3, 16, 16) and img.min() >= 0.0 and img.max() <= 1.0
    # Class 0 images are red, class 1 blue: the pixels really belong to the sample's class.
    red = img[:, 0].mean(axis=(1, 2)) > img[:, 2].mean(axis=(1, 2))
    assert red.tolist() == (ds.train.labels == 0).tolist()
    vocab = ds.metadata["vocab"]
    assert vocab[:2] == ["<pad>", "<unk>"] and "bird" in vocab and "Bird" not in vocab
    tokens = ds.train.features["text"]
    assert tokens.dtype == np.int64 and tokens.shape == (6, 6)
    words = [WordTokenizer(vocab).decode(row) for row in tokens]
    for w, label in zip(words, ds.train.labels, strict=True):
        assert ("red" if label == 0 else "blue") in w.split()


def test_all_captions_and_determinism(tmp_path: Path) -> None:
    root = _cub(tmp_path)
    a = captions.load_central(root, captions_per_image=None, seed=3, progress=False)
    b = captions.load_central(root, captions_per_image=None, seed=3, progress=False)
    assert len(a.train) + len(a.test) == 20  # 10 images × 2 non-blank captions
    np.testing.assert_array_equal(a.train.features["text"], b.train.features["text"])
    np.testing.assert_array_equal(a.test.features["image"], b.test.features["image"])


def test_tokenizer() -> None:
    tok = WordTokenizer.fit(["The bird, the BIRD!", "a small-bird"], min_freq=1)
    assert tok.vocab == ("<pad>", "<unk>", "bird", "the", "a", "small")
    ids = tok.encode("The red bird", max_len=5)
    assert ids.tolist() == [3, UNK_ID, 2, PAD_ID, PAD_ID]
    assert tok.encode("a a a a a a a", max_len=3).tolist() == [4, 4, 4]
    assert WordTokenizer.fit(["x y y"], min_freq=2).vocab == ("<pad>", "<unk>", "y")
    assert len(WordTokenizer.fit(["a b c d"], max_size=3)) == 3


def test_vocabulary_comes_from_training_captions_only(tmp_path: Path) -> None:
    root = _cub(tmp_path, per_class=3)
    for k, txt in enumerate(sorted((root / "text_c10").rglob("*.txt"))):
        txt.write_text(f"bird number{k} flies\n")  # one word unique to each image
    ds = captions.load_central(root, test_fraction=0.34, progress=False)
    vocab = ds.metadata["vocab"]
    unique_in_vocab = [w for w in vocab if w.startswith("number")]
    assert len(unique_in_vocab) == len(ds.train) == 4
    tok = WordTokenizer(vocab)
    for row in ds.test.features["text"]:
        assert tok.decode(row).split() == ["bird", "<unk>", "flies"]
    for row in ds.train.features["text"]:
        assert tok.decode(row).split()[1].startswith("number")


def _coco(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (9, 9, 9)]):
        _image(root / "images" / f"{i:012d}.jpg", color)
    doc = {
        "images": [{"id": 100 + i, "file_name": f"{i:012d}.jpg"} for i in range(4)],
        "annotations": [
            {"id": 1, "image_id": 100, "caption": "A red square."},
            {"id": 2, "image_id": 100, "caption": "Something red"},
            {"id": 3, "image_id": 101, "caption": "A green square"},
            {"id": 4, "image_id": 102, "caption": "A blue square"},
            {"id": 5, "image_id": 103, "caption": "A dark square"},
        ],
    }
    path = root / "captions_train2017.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_coco_without_labels(tmp_path: Path) -> None:
    _coco(tmp_path)
    ds = captions.load_central(
        tmp_path, layout="coco", test_fraction=0.25, image_size=(8, 12), progress=False
    )
    assert ds.num_classes == 0 and ds.class_names == ()
    assert len(ds.train) + len(ds.test) == 4 and len(ds.test) == 1
    assert (ds.train.labels == MISSING_LABEL).all() and (ds.test.labels == MISSING_LABEL).all()
    assert ds.train.features["image"].shape[1:] == (3, 8, 12)


def test_coco_with_label_mapping(tmp_path: Path) -> None:
    _coco(tmp_path)
    labels = {100: "warm", 101: "cold", "000000000002.jpg": "cold"}
    ds = captions.load_central(tmp_path, labels=labels, captions_per_image=None, progress=False)
    assert ds.class_names == ("cold", "warm") and ds.num_classes == 2
    all_labels = sorted(np.concatenate([ds.train.labels, ds.test.labels]).tolist())
    assert all_labels == [MISSING_LABEL, 0, 0, 1, 1]  # image 103 unmapped; image 100 has 2 captions


def test_coco_bad_json_names_line(tmp_path: Path) -> None:
    path = tmp_path / "caps.json"
    path.write_text('{\n  "images": [],\n  "annotations": [\n    {"image_id": 1, "caption": "x",}\n  ]\n}\n')
    with pytest.raises(DataFileError, match=r"caps\.json, line 4: invalid JSON") as e:
        captions.load_central(tmp_path, annotations=path, progress=False)
    assert e.value.line == 4


def test_coco_unknown_image_names_line(tmp_path: Path) -> None:
    path = _coco(tmp_path)
    doc = json.loads(path.read_text())
    doc["annotations"].append({"id": 9, "image_id": 555, "caption": "ghost"})
    path.write_text(json.dumps(doc, indent=2))
    expected = path.read_text().splitlines().index('      "image_id": 555,') + 1
    with pytest.raises(
        DataFileError, match=rf"captions_train2017\.json, line {expected}: .*unknown image_id 555"
    ):
        captions.load_central(tmp_path, progress=False)


def test_unreadable_image(tmp_path: Path) -> None:
    _coco(tmp_path)
    bad = tmp_path / "images" / "000000000001.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DataFileError, match=r"000000000001\.jpg: cannot read image"):
        captions.load_central(tmp_path, progress=False)


def test_empty_caption_file_and_missing_image(tmp_path: Path) -> None:
    root = _cub(tmp_path, per_class=2)
    empty = root / "text_c10" / "002.Laysan_Albatross" / "Laysan_Albatross_0001.txt"
    empty.write_text("\n  \n")
    with pytest.raises(DataFileError, match=r"Laysan_Albatross_0001\.txt: caption file is empty"):
        captions.load_central(root, progress=False)
    empty.write_text("fine now\n")
    orphan = root / "text_c10" / "002.Laysan_Albatross" / "No_Such_Image.txt"
    orphan.write_text("a caption\n")
    with pytest.raises(DataFileError, match=r"No_Such_Image\.txt: no image"):
        captions.load_central(root, progress=False)
