"""Offline trainer: the six-stage aliased-entity corpus and the stage-by-stage reference model."""
