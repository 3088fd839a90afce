"""Entry-point wrapper for the task commands: user errors end in one line, not a traceback."""
from __future__ import annotations

import sys
from typing import Callable

from backbones.weights import DownloadError


def run(main: Callable[[], object], prog: str) -> None:
    """Call ``main``; a bad path, label, argument or an offline download exits 1 with ``prog: error: ...``.

    Anything else (a bug) still raises with its traceback.
    """
    try:
        main()
    except (ValueError, FileNotFoundError, DownloadError) as e:
        sys.exit(f"{prog}: error: {e}")
