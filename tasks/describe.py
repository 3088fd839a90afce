"""Print every registered backbone's taps: ``python -m tasks.describe [--output-stride 16] [--pattern g3]``.

Each backbone is built on the meta device, so no weights are allocated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if not __package__:  # run as a file (`python tasks/describe.py`): make the repository importable
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import torch

from backbones import create_backbone, list_backbones


def describe(name: str, output_stride: int = 32) -> str:
    """One Markdown table row: name, parameters (millions), then ``channels@stride`` per tap (``*`` = default)."""
    with torch.device("meta"):
        probe = create_backbone(name, output_stride=output_stride)
        full = create_backbone(name, output_stride=output_stride, out_indices=range(len(probe.feature_info)))
    params = sum(p.numel() for p in full.parameters()) / 1e6
    taps = " ".join(f"{f.channels}@{f.stride}{'*' if i in probe.out_indices else ''}"
                    for i, f in enumerate(full.feature_info))
    return f"| `{name}` | {params:.2f} | {taps} |"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-stride", type=int, default=32, choices=(8, 16, 32),
                        help="largest stride of any map; later stages are dilated (default: 32)")
    parser.add_argument("--pattern", default="", help="only names containing this text")
    args = parser.parse_args(argv)
    names = list_backbones(args.pattern)
    if not names:
        parser.error(f"no backbone name contains {args.pattern!r}; names are {list_backbones()}")
    print("| backbone | params (M) | taps: channels@stride (* = default out_indices) |")
    print("|---|---|---|")
    for name in names:
        print(describe(name, args.output_stride))


if __name__ == "__main__":
    main()
