"""The resume identity: what a rerun may change and still resume the run."""

from __future__ import annotations

import json

import pytest

from probe_bank.errors import UserError
from trainer.config import RESUME_EXEMPT, resolve_config, resume_key
from trainer.run import RunOptions, check_resumable, run_record


def _record(**overrides: object) -> dict:
    cfg = resolve_config("tiny", overrides=overrides)
    return run_record(cfg, RunOptions(preset="tiny", out=None))  # type: ignore[arg-type]


def test_bookkeeping_fields_do_not_change_the_key_but_the_recipe_does() -> None:
    base = _record()
    assert _record(checkpoint_every=7)["resume_key"] == base["resume_key"]
    assert _record(adam_foreach=True)["resume_key"] == base["resume_key"]
    assert _record(lr=1e-2)["resume_key"] != base["resume_key"]
    assert {"checkpoint_every", "adam_foreach"} == RESUME_EXEMPT
    check_resumable(base, _record(checkpoint_every=7), ["stage_0"])
    with pytest.raises(UserError, match="hyperparams"):
        check_resumable(base, _record(lr=1e-2), ["stage_0"])


def test_a_run_recorded_before_a_field_existed_still_resumes() -> None:
    """run.json of an older version lacks new fields (here: adam_foreach) and resume_key."""
    new = _record()
    old = dict(new)
    old.pop("resume_key")
    old["hyperparams"] = {k: v for k, v in new["hyperparams"].items() if k != "adam_foreach"}
    check_resumable(old, new, ["stage_0"])
    assert resume_key(old["hyperparams"]) == new["resume_key"]


def test_an_unreadable_recorded_recipe_is_a_different_one() -> None:
    hp = json.loads(json.dumps(_record()["hyperparams"]))
    hp["no_such_field"] = 1
    assert resume_key(hp).startswith("unreadable:")
    assert resume_key(hp) != _record()["resume_key"]
