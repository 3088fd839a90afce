"""Pieces of ``python -m tasks.benchmark``: measuring (:mod:`.measure`), the compared models (:mod:`.models`,
:mod:`.detection`), data loading throughput (:mod:`.data`), export runtimes (:mod:`.runtimes`) and the written
report (:mod:`.report`)."""
