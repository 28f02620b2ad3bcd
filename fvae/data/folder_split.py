"""A folder of images split into training and test files without leaks.

1. A folder with a ``test/`` subfolder: its images are the test split, those of ``train/`` (or,
   without one, every other image) the training split.
2. Otherwise a tenth of each class is held out (stratified), by whole groups of files. Files whose
   names differ only in a final number after a name that holds a number are one group: the frames
   ``clip3_0001.png, clip3_0002.png`` (group ``clip3``), the crops ``cat017_crop1.png,
   cat017_crop2.png`` (group ``cat017_crop``); ``IMG_1234.jpg`` or ``00017.png`` are groups of one.
   Within a class, groups are ordered by a stable hash of their name (BLAKE2b, not Python's
   salted ``hash``), and the first ones are held out until they hold a tenth of the class's files.
   A group's place in that order never changes, so adding files moves at most the groups at the
   margin of a class's tenth; a class of fewer than ten files, or of one group, is all training.
   A folder of fewer than ten images has no test images of its own: both splits are all of it.

Classes: where every image lies in a subfolder (of the split's folder) and there are two or more,
the subfolders are the classes (torchvision's layout, ``root/<class>/<image>``), numbered in sorted
order; else every label is -1.
"""
from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from pathlib import Path

from fvae.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
TEST_SHARE = 10  # one file in this many held out
_NUMBERED = re.compile(r"(.*\d.*\D)\d+")


def image_files(root: Path) -> list[Path]:
    """Every image file under ``root``, recursively, sorted."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def file_group(path: Path) -> str:
    """The group a file belongs to (module docstring): its name less a final number that follows
    a name holding a number, separators trimmed; else its whole name."""
    match = _NUMBERED.fullmatch(path.stem)
    return match.group(1).rstrip("-_. ") if match else path.stem


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def class_folders(files: list[Path], root: Path) -> list[str]:
    """The class names of ``files`` under ``root``: the sorted first subfolders, where every file
    lies in one and there are two or more; else none."""
    folders = [f.relative_to(root).parts[0] if f.parent != root else None for f in files]
    return sorted(set(folders)) if None not in folders and len(set(folders)) > 1 else []


def held_out(files: list[Path], classes_of: list[str | None]) -> set[Path]:
    """The test files of a folder without a ``test/`` subfolder: a tenth of each class, whole groups
    in the order of their hash."""
    by_class: dict[str | None, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for path, cls in zip(files, classes_of):
        by_class[cls][f"{path.parent}/{file_group(path)}"].append(path)
    test: set[Path] = set()
    for groups in by_class.values():
        total = sum(len(g) for g in groups.values())
        quota, taken = round(total / TEST_SHARE), 0
        for key in sorted(groups, key=lambda k: (stable_hash(k), k)):
            if taken >= quota or taken + len(groups[key]) >= total:
                break
            test.update(groups[key])
            taken += len(groups[key])
    return test


def split_folder(root: Path, split: str) -> tuple[list[Path], list[str], list[int], str]:
    """``(files, classes, labels, how)`` of ``split`` ("train" or "test") of the image folder ``root``:
    the files, the class names, each file's class index (-1 without classes) and how the split was
    made, for the line a run prints."""
    test_dir, train_dir = root / "test", root / "train"
    test_files = image_files(test_dir) if test_dir.is_dir() else []
    if test_files:
        train_base = train_dir if train_dir.is_dir() else root
        parts = {"test": (test_dir, test_files),
                 "train": (train_base, [f for f in image_files(train_base) if test_dir not in f.parents])}
        classes = sorted(set().union(*(class_folders(f, b) for b, f in parts.values() if f)))
        base, files = parts[split]
        how = f"the {test_dir.name}/ subfolder"
    else:
        base, files = root, image_files(root)
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_SUFFIXES)}) found under {root}")
        classes = class_folders(files, root)
        if len(files) < TEST_SHARE:
            how = f"none (fewer than {TEST_SHARE} images: both splits are all of them)"
        else:
            test = held_out(files, [f.relative_to(root).parts[0] if classes else None for f in files])
            files = [f for f in files if (f in test) == (split == "test")]
            how = "a tenth of each class, whole file-name groups by hash"
    if not files:
        raise DataError(f"no {split} images found under {base}")
    index = {name: i for i, name in enumerate(classes)}
    labels = [index.get(f.relative_to(base).parts[0], -1) if classes and f.parent != base else -1 for f in files]
    return files, classes, labels, how
