"""``lightdense COMMAND [OPTIONS]``, the installed command (also ``python -m tasks COMMAND``).

Every task command is also ``python -m tasks.NAME`` and ``python tasks/NAME.py``; ``lightdense seg-train --help``
shows the same options as ``python -m tasks.seg_train --help``.
"""

from __future__ import annotations

import importlib
import sys

from tasks.engine.cli import run

COMMANDS = {
    "seg-train": ("tasks.seg_train", "train DeepLabV3+ (VOC 2012, or the built-in sample data)"),
    "seg-eval": ("tasks.seg_eval", "mIoU of a segmentation checkpoint"),
    "seg-predict": ("tasks.seg_predict", "segmentation masks for images"),
    "det-train": ("tasks.det_train", "train SSDLite (VOC07+12, or the built-in sample data)"),
    "det-eval": ("tasks.det_eval", "VOC and COCO mAP of a detection checkpoint"),
    "det-predict": ("tasks.det_predict", "detections for images"),
    "describe": ("tasks.describe", "the registered backbones and their taps"),
    "compare-training": ("tasks.compare_training", "our recipe vs smp / torchvision plain loops, same data and budget"),
    "scenes-synthetic": ("tasks.scenes_synthetic", "write the second generated dataset (VOC layout, both tasks)"),
}


def usage() -> str:
    lines = ["usage: lightdense COMMAND [OPTIONS]   (lightdense COMMAND --help for its options)", "", "commands:"]
    lines += [f"  {name:<18} {text}" for name, (_, text) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return
    name = argv[0].replace("_", "-")
    if name not in COMMANDS:
        sys.exit(f"lightdense: error: unknown command {argv[0]!r}; commands: {', '.join(COMMANDS)}")
    module = importlib.import_module(COMMANDS[name][0])
    run(lambda: module.main(argv[1:]), f"lightdense {name}")


if __name__ == "__main__":
    main()
