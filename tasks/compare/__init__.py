"""Pieces of ``python -m tasks.compare_training``: the plain-loop references (:mod:`.references`) and the report
(:mod:`.report`)."""
