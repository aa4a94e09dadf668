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
    """run.json of an older version lacks new fields (here: adam_foreach) and resume_key, and
    names its settings alone (before the corpus/arch/optim groups)."""
    new = _record()
    assert {"corpus", "arch", "optim"} <= set(new["hyperparams"])
    old = dict(new)
    old.pop("resume_key")
    flat = resolve_config("tiny").flat()
    old["hyperparams"] = {k: v for k, v in flat.items() if k != "adam_foreach"}
    assert "lr" in old["hyperparams"] and "optim" not in old["hyperparams"]
    check_resumable(old, new, ["stage_0"])
    assert resume_key(old["hyperparams"]) == new["resume_key"]
    changed = dict(old, hyperparams={**old["hyperparams"], "lr": 1e-2})
    with pytest.raises(UserError, match="hyperparams"):
        check_resumable(changed, new, ["stage_0"])


def test_settings_go_into_their_group_by_name_or_dotted() -> None:
    a = resolve_config("tiny", overrides={"lr": 1e-2, "n_layers": 3, "entities_per_stage": 9})
    b = resolve_config(
        "tiny", overrides={"optim.lr": 1e-2, "arch.n_layers": 3, "corpus.entities_per_stage": 9}
    )
    assert a == b and a.optim.lr == 1e-2 and a.arch.n_layers == 3
    assert a.corpus.entities_per_stage == 9
    assert resolve_config("tiny", overrides=a.flat()) == a  # the flat view round-trips
    for bad in ({"optim.n_layers": 3}, {"nope.lr": 1}, {"lrr": 1}):
        with pytest.raises(UserError, match="invalid setting"):
            resolve_config("tiny", overrides=bad)


def test_an_unreadable_recorded_recipe_is_a_different_one() -> None:
    hp = json.loads(json.dumps(_record()["hyperparams"]))
    hp["no_such_field"] = 1
    assert resume_key(hp).startswith("unreadable:")
    assert resume_key(hp) != _record()["resume_key"]
