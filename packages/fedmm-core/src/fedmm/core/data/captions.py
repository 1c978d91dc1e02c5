"""captions: image–caption pairs read from a local folder (CUB-200 / Oxford-102 Flowers or COCO).

fedmm never downloads these; point :func:`load_central` at a folder in one of two layouts.

(a) **Class-folder layout** of the CUB-200-2011 and Oxford-102 Flowers caption releases (Reed et
al., 2016, "text_c10")::

    root/images/<class_name>/<image>.jpg        (also accepted: images/<image>.jpg, jpg/<image>.jpg)
    root/text_c10/<class_name>/<image>.txt      one caption per line (ten in the real data)

Every caption file defines one image (matched by file stem); its class is its folder, so labels
are known. Class names are the folder names with a leading ``"001."`` number removed and ``_`` →
space (raw names in ``metadata["class_dirs"]``).

(b) **COCO captions**: a JSON file ``{"images": [{"id", "file_name"}, …], "annotations":
[{"image_id", "caption"}, …]}`` and a folder of images (``file_name`` is relative to it). COCO
captions carry no class; labels are :data:`MISSING_LABEL` unless ``labels`` maps image ids (or
file names) to class names.

Samples: one per (image, caption) pair; ``captions_per_image`` keeps at most that many captions of
each image, chosen at random with ``seed`` (``None`` keeps all). Images are loaded with PIL,
converted to RGB, resized to ``image_size`` (default 32×32) and stored as float32 ``(3, H, W)`` in
``[0, 1]`` (modality ``image``, kind ``image``). Captions go through :class:`WordTokenizer`
(lower-case, split on non-alphanumerics, vocabulary from the training captions only, ids 0 = pad,
1 = unknown, truncated/padded to ``max_len``) into modality ``text`` (kind ``tokens``,
``(max_len,)``). The test split holds ``test_fraction`` of the *images* (stratified by class when
labelled), so the captions of one image never straddle the split. ``metadata["vocab"]`` is the
vocabulary (index = token id).

Malformed input raises :class:`~fedmm.core.errors.DataFileError` naming the file (and the line for
JSON syntax errors): bad JSON, an annotation pointing to an unknown image, an unreadable image,
an empty caption file, a caption file without an image.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from fedmm.core.console import bar
from fedmm.core.data.cache import read_text
from fedmm.core.data.types import MISSING_LABEL, CentralDataset, ModalitySpec, SampleSet
from fedmm.core.errors import DataError, DataFileError, MissingDependencyError

NAME = "captions"
PAD_ID = 0
UNK_ID = 1
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
_WORD = re.compile(r"[^\W_]+")  # runs of letters/digits (Unicode-aware); everything else separates


class WordTokenizer:
    """A small word-level tokenizer: lower-case, alphanumeric runs, frequency-ranked vocabulary."""

    def __init__(self, vocab: Sequence[str]) -> None:
        if len(vocab) < 2 or vocab[PAD_ID] != "<pad>" or vocab[UNK_ID] != "<unk>":
            raise DataError("a vocabulary starts with '<pad>' (id 0) and '<unk>' (id 1)")
        self.vocab: tuple[str, ...] = tuple(vocab)
        self.index: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}

    @staticmethod
    def split(text: str) -> list[str]:
        return _WORD.findall(text.lower())

    @classmethod
    def fit(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> WordTokenizer:
        """Vocabulary of the words seen at least ``min_freq`` times, most frequent first (ties:
        alphabetical, for determinism), capped at ``max_size`` entries including the two specials."""
        counts = Counter(w for t in texts for w in cls.split(t))
        words = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - 2)]
        return cls(["<pad>", "<unk>", *words])

    def __len__(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        ids = [self.index.get(w, UNK_ID) for w in self.split(text)[:max_len]]
        out = np.full(max_len, PAD_ID, dtype=np.int64)
        out[: len(ids)] = ids
        return out

    def encode_batch(self, texts: Sequence[str], max_len: int) -> np.ndarray:
        out = np.full((len(texts), max_len), PAD_ID, dtype=np.int64)
        for i, t in enumerate(texts):
            out[i] = self.encode(t, max_len)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.vocab[int(i)] for i in ids if int(i) != PAD_ID)


@dataclass
class _Raw:
    """Images (paths) with their captions and class (``MISSING_LABEL`` if unknown)."""

    images: list[Path]
    captions: list[list[str]]
    labels: list[int]
    class_names: tuple[str, ...]
    class_dirs: tuple[str, ...] = ()


# -- readers -----------------------------------------------------------------------------------------


def _pretty(name: str) -> str:
    return re.sub(r"^\d+\.", "", name).replace("_", " ")


def _read_caption_file(path: Path) -> list[str]:
    text = read_text(path, "utf-8", "caption file")
    caps = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not caps:
        raise DataFileError(path, "caption file is empty")
    return caps


def _find_image(root: Path, cls: str, stem: str) -> Path | None:
    for folder in (root / "images" / cls, root / "images", root / "jpg"):
        for suffix in IMAGE_SUFFIXES:
            for cand in (folder / f"{stem}{suffix}", folder / f"{stem}{suffix.upper()}"):
                if cand.is_file():
                    return cand
    return None


def read_class_folders(root: Path) -> _Raw:
    """Layout (a): ``text_c10/<class>/<image>.txt`` + ``images/<class>/<image>.jpg``."""
    text_root = root / "text_c10"
    if not text_root.is_dir():
        raise DataFileError(text_root, "missing caption folder (expected text_c10/<class>/<image>.txt)")
    class_dirs = tuple(sorted(p.name for p in text_root.iterdir() if p.is_dir()))
    if not class_dirs:
        raise DataFileError(text_root, "no class folders")
    raw = _Raw([], [], [], tuple(_pretty(c) for c in class_dirs), class_dirs)
    for label, cls in enumerate(class_dirs):
        for txt in sorted((text_root / cls).glob("*.txt")):
            image = _find_image(root, cls, txt.stem)
            if image is None:
                raise DataFileError(
                    txt,
                    f"no image for this caption file (looked for images/{cls}/{txt.stem}.jpg and similar)",
                )
            raw.images.append(image)
            raw.captions.append(_read_caption_file(txt))
            raw.labels.append(label)
    if not raw.images:
        raise DataFileError(text_root, "no caption files found")
    return raw


def read_coco(annotations: Path, images_dir: Path, labels: Mapping[Any, str] | None = None) -> _Raw:
    """Layout (b): COCO captions JSON; ``labels`` maps image id or file name → class name."""
    try:
        text = annotations.read_text(encoding="utf-8")
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFileError(annotations, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(annotations, f"cannot read annotations: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise DataFileError(annotations, "expected an object with an 'images' list and an 'annotations' list")
    if not isinstance(doc.get("annotations"), list):
        raise DataFileError(annotations, "expected an 'annotations' list")
    files: dict[Any, Path] = {}
    for k, img in enumerate(doc["images"]):
        if not isinstance(img, dict) or "id" not in img or not isinstance(img.get("file_name"), str):
            raise DataFileError(annotations, f"images[{k}] needs an 'id' and a string 'file_name'")
        if img["id"] in files:
            raise DataFileError(annotations, f"images[{k}]: duplicate image id {img['id']!r}")
        files[img["id"]] = images_dir / img["file_name"]
    captions: dict[Any, list[str]] = {}
    for k, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict) or "image_id" not in ann or not isinstance(ann.get("caption"), str):
            raise DataFileError(annotations, f"annotations[{k}] needs an 'image_id' and a string 'caption'")
        if ann["image_id"] not in files:
            raise DataFileError(
                annotations,
                f"annotations[{k}] refers to unknown image_id {ann['image_id']!r}",
                _line_of(text, rf'"image_id"\s*:\s*{re.escape(json.dumps(ann["image_id"]))}(?![\w.])'),
            )
        if ann["caption"].strip():
            captions.setdefault(ann["image_id"], []).append(ann["caption"].strip())
    ids = [i for i in files if i in captions]  # images without captions carry no pair
    if not ids:
        raise DataFileError(annotations, "no image has a caption")
    class_names: tuple[str, ...] = ()
    label_of: dict[Any, int] = {}
    if labels:
        class_names = tuple(sorted(set(labels.values())))
        rank = {c: i for i, c in enumerate(class_names)}
        for i in ids:
            name = labels.get(i, labels.get(files[i].name, labels.get(str(i))))
            if name is not None:
                label_of[i] = rank[name]
    return _Raw(
        [files[i] for i in ids],
        [captions[i] for i in ids],
        [label_of.get(i, MISSING_LABEL) for i in ids],
        class_names,
    )


def _line_of(text: str, pattern: str) -> int | None:
    """1-based line of the first match of ``pattern`` in ``text`` (best effort, for messages)."""
    m = re.search(pattern, text)
    return text.count("\n", 0, m.start()) + 1 if m else None


def load_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """RGB float32 ``(3, H, W)`` in ``[0, 1]``; ``size`` is ``(H, W)``."""
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pragma: no cover - pillow comes with matplotlib
        raise MissingDependencyError("reading caption images needs Pillow: `pip install pillow`") from exc
    h, w = size
    try:
        with Image.open(path) as im:
            im.draft("RGB", (w, h))  # JPEG: decode at a reduced scale, much faster for thumbnails
            rgb = im.convert("RGB").resize((w, h), Image.Resampling.BILINEAR)
            arr = np.asarray(rgb, dtype=np.float32) / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise DataFileError(path, f"cannot read image: {exc}") from exc
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _split_images(labels: np.ndarray, test_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean test mask over images; stratified by class when every image is labelled."""
    n = labels.size
    test = np.zeros(n, dtype=bool)
    groups = (
        [np.arange(n)]
        if (labels == MISSING_LABEL).any()
        else [np.flatnonzero(labels == c) for c in np.unique(labels)]
    )
    for idx in groups:
        idx = rng.permutation(idx)
        test[idx[: round(test_fraction * idx.size)]] = True
    if n >= 2 and not test.any():
        test[rng.integers(n)] = True
    if n >= 2 and test.all():
        test[rng.integers(n)] = False
    return test


def load_central(
    path: str | Path,
    *,
    layout: Literal["auto", "class_folders", "coco"] = "auto",
    annotations: str | Path | None = None,
    images_dir: str | Path | None = None,
    labels: Mapping[Any, str] | None = None,
    image_size: int | tuple[int, int] = 32,
    max_len: int = 16,
    min_freq: int = 1,
    max_vocab: int | None = None,
    captions_per_image: int | None = 1,
    test_fraction: float = 0.2,
    seed: int = 0,
    progress: bool = True,
) -> CentralDataset:
    """Load an image–caption dataset from the folder ``path`` (``root`` below; see the module docstring).

    ``layout="auto"`` picks the class-folder layout when ``root/text_c10`` exists, else COCO.
    For COCO, ``annotations`` defaults to the only ``*.json`` in ``root`` (or ``root/annotations``)
    and ``images_dir`` to ``root/images`` if present, else ``root``.
    """
    base = Path(path).expanduser()
    size = (
        (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
    )
    if min(size) <= 0 or max_len <= 0:
        raise DataError(f"image_size and max_len must be positive, got {image_size} and {max_len}")
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    if captions_per_image is not None and captions_per_image < 1:
        raise DataError(f"captions_per_image must be >= 1 or None, got {captions_per_image}")
    if not base.exists():
        raise DataFileError(base, "dataset folder does not exist")
    if layout == "auto":
        layout = "class_folders" if (base / "text_c10").is_dir() else "coco"
    if layout == "class_folders":
        raw = read_class_folders(base)
    elif layout == "coco":
        ann = Path(annotations) if annotations is not None else _default_annotations(base)
        if not ann.is_absolute() and not ann.exists():
            ann = base / ann
        if images_dir is not None:
            imgs = Path(images_dir) if Path(images_dir).is_absolute() else base / images_dir
        else:
            imgs = base / "images" if (base / "images").is_dir() else base
        raw = read_coco(ann, imgs, labels)
    else:
        raise DataError(f"unknown caption layout {layout!r}; use 'auto', 'class_folders' or 'coco'")

    rng = np.random.default_rng(seed)
    image_labels = np.array(raw.labels, dtype=np.int64)
    test_image = _split_images(image_labels, test_fraction, rng)
    pixels = np.empty((len(raw.images), 3, *size), dtype=np.float32)
    for i, img_path in enumerate(bar(raw.images, enabled=progress, desc="captions: images", leave=False)):
        pixels[i] = load_image(img_path, size)

    # One sample per kept (image, caption) pair.
    owner: list[int] = []
    texts: list[str] = []
    for i, caps in enumerate(raw.captions):
        keep = (
            range(len(caps))
            if captions_per_image is None
            else sorted(rng.permutation(len(caps))[:captions_per_image].tolist())
        )
        for j in keep:
            owner.append(i)
            texts.append(caps[j])
    owner_arr = np.array(owner, dtype=np.int64)
    is_test = test_image[owner_arr]
    tokenizer = WordTokenizer.fit(
        (t for t, te in zip(texts, is_test, strict=True) if not te), min_freq, max_vocab
    )
    tokens = tokenizer.encode_batch(texts, max_len)
    sample_labels = image_labels[owner_arr]

    modalities = (
        ModalitySpec("image", (3, *size), "image", "RGB image resized, in [0, 1]"),
        ModalitySpec("text", (max_len,), "tokens", "word ids of a caption (0 = pad, 1 = unknown)"),
    )

    def subset(mask: np.ndarray) -> SampleSet:
        return SampleSet(
            modalities, {"image": pixels[owner_arr[mask]], "text": tokens[mask]}, sample_labels[mask]
        )

    meta: dict[str, Any] = {
        "source": str(base),
        "layout": layout,
        "vocab": list(tokenizer.vocab),
        "vocab_size": len(tokenizer),
        "max_len": max_len,
        "image_size": list(size),
        "num_images": len(raw.images),
        "captions_per_image": captions_per_image,
    }
    if raw.class_dirs:
        meta["class_dirs"] = list(raw.class_dirs)
    return CentralDataset(
        name=NAME,
        modalities=modalities,
        num_classes=len(raw.class_names),
        train=subset(~is_test),
        test=subset(is_test),
        class_names=raw.class_names,
        metadata=meta,
    )


def _default_annotations(base: Path) -> Path:
    for folder in (base, base / "annotations"):
        found = sorted(folder.glob("*.json")) if folder.is_dir() else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise DataError(f"several JSON files in {folder}; pass annotations=<file> to choose one")
    raise DataFileError(base, "no COCO captions JSON found (pass annotations=<file>)")
