"""Inputs and outputs of the predict and eval commands, so that no command overwrites a user's file.

Images are named directly or found in folders (non-recursively). Each input gets one unique output name: its path
relative to the inputs' common folder, without the extension (``a/img.jpg`` and ``b/img.jpg`` become ``a/img`` and
``b/img``; ``x.jpg`` and ``x.png`` become ``x_jpg`` and ``x_png``). Every output path is planned before anything
is written, and an existing file at any of them (an input image, a previous run's output, anything else) stops
the command with one line: nothing is replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "list_images", "output_stems", "refuse_existing"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def list_images(inputs: list[str]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders, each once."""
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            files.append(item)
        else:
            raise FileNotFoundError(f"input not found: {item}")
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {inputs}")
    return list(dict.fromkeys(files))


def output_stems(images: list[Path], out: str | os.PathLike) -> list[Path]:
    """One unique extension-less output path under ``out`` per image (see the module docstring)."""
    resolved = [p.resolve() for p in images]
    common = Path(os.path.commonpath([p.parent for p in resolved]))
    stems = [p.relative_to(common).with_suffix("") for p in resolved]
    if len(set(stems)) < len(stems):  # same name, other extension: keep the extension in the name
        stems = [s.with_name(f"{s.name}_{p.suffix.lstrip('.').lower()}") for s, p in zip(stems, resolved)]
    return [Path(out) / s for s in stems]


def refuse_existing(paths: Iterable[str | os.PathLike]) -> None:
    """Raise if any of ``paths`` exists, naming the first few: the command would overwrite them."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing:
        more = f" and {len(existing) - 3} more" if len(existing) > 3 else ""
        raise ValueError(f"refusing to overwrite {', '.join(existing[:3])}{more}: choose another output (--out) or "
                         f"move those files away")
