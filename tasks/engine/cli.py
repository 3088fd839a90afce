"""Shared command-line pieces of the task commands: the ``--pretrained`` words, and an entry-point wrapper that
ends user errors in one line, not a traceback."""
from __future__ import annotations

import sys
from collections.abc import Callable

from backbones.weights import DownloadError


def run(main: Callable[[], object], prog: str) -> None:
    """Call ``main``; a bad path, label, argument or an offline download exits 1 with ``prog: error: ...``.

    Anything else (a bug) still raises with its traceback.
    """
    try:
        main()
    except (ValueError, FileNotFoundError, DownloadError) as e:
        sys.exit(f"{prog}: error: {e}")


def pretrained_arg(text: str | None) -> bool | str:
    """A ``--pretrained`` value as ``backbones.create_backbone(pretrained=...)`` takes it: ``none`` (or no value)
    gives ``False``, ``default`` the backbone's default named weights, anything else (a named source, path or URL)
    passes through."""
    if text is None:
        return False
    return {"none": False, "default": True}.get(text.lower(), text)
