"""Evidence families: the answer capture, the family classifiers and their persistence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from probe_bank.families import (
    COLUMNS,
    FEATURES,
    MIN_THRESHOLD_SUPPORT,
    EvidenceClassifier,
    QuestionEvidence,
    families_from_tensors,
    families_to_tensors,
    question_columns,
    threshold_support,
)
from probe_bank.schemas import AFTER_BANK, FAMILIES


def test_capture_answers_matches_plain_greedy_decoding(random_model_dir: Path) -> None:
    """The cached, batched greedy decode (right padding, tokens appended after the pads) gives
    each prompt's answer, log-probabilities and entropies as a plain one-prompt loop does; the
    block output equals `capture_encoded`'s; scoring the answers back reproduces them."""
    import torch

    from probe_bank.answers import capture_answers
    from probe_bank.capture import capture_encoded, encode
    from probe_bank.modeling import load_model

    model, tok = load_model(random_model_dir, "cpu")
    prompts = ["Q: Who is <zorka>?\nA:", "Q: Where was <lomir> born in the end?\nA:", "<quibe>"]
    spans = [(9, 16), (14, 21), (0, 7)]
    items = encode(tok, prompts, spans)
    stop = frozenset({5})
    got = capture_answers(
        model, items, layer=0, position="alias_mean", max_new_tokens=4, stop_ids=stop
    )
    for i, it in enumerate(items):
        ids, lps, ents = list(it.input_ids), [], []
        for _ in range(4):
            with torch.inference_mode():
                logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
            t = int(logp.argmax())
            lps.append(float(logp[t]))
            ents.append(float(-(logp.exp() * logp).sum()))
            ids.append(t)
            if t in stop:
                break
        assert got.answers[i] == tuple(ids[it.n_tokens :])
        assert got.logprob_mean[i] == pytest.approx(np.mean(lps), abs=1e-4)
        assert got.logprob_min[i] == pytest.approx(np.min(lps), abs=1e-4)
        assert got.entropy_mean[i] == pytest.approx(np.mean(ents), abs=1e-4)
    ref = capture_encoded(model, items, layers=[0], positions=["alias_mean"])
    np.testing.assert_allclose(
        got.acts, ref.acts["blocks.0.hook_resid_post"]["alias_mean"], atol=1e-5
    )
    back = capture_answers(model, items, layer=0, position="alias_mean", answers=got.answers)
    np.testing.assert_allclose(back.logprob_mean, got.logprob_mean, atol=1e-4)
    np.testing.assert_allclose(back.entropy_mean, got.entropy_mean, atol=1e-4)
    np.testing.assert_allclose(back.acts, got.acts, atol=1e-5)
    other = capture_answers(
        model, items, layer=0, position="last", answers=[(7, 8), (9,), (10, 11, 12)]
    )
    assert np.all(other.logprob_mean <= got.logprob_mean + 1e-6)  # greedy is the likeliest path
    assert np.all(other.logprob_min <= other.logprob_mean)


def _plain_greedy(model: Any, ids: list[int], steps: int, stop: frozenset[int]) -> list[Any]:
    """One prompt, no cache, no batch: each step's (token, next-token log-probabilities)."""
    import torch

    ids, out = list(ids), []
    for _ in range(steps):
        with torch.inference_mode():
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0, -1].float(), -1)
        t = int(logp.argmax())
        out.append((t, logp))
        ids.append(t)
        if t in stop:
            break
    return out


def test_greedy_rows_that_end_leave_the_batch(random_model_dir: Path, tmp_path: Path) -> None:
    """Rows ending at different steps (the batch shrinks, cache rows dropped) decode as each
    prompt does alone, and the pair's KL reads each row's own steps: answers, log-probabilities
    and KL equal a plain one-prompt loop's."""
    import torch

    from probe_bank.answers import capture_answer_pair, capture_answers
    from probe_bank.capture import encode
    from probe_bank.modeling import load_model
    from tests.fixtures_models import make_random_model_dir

    model, tok = load_model(random_model_dir, "cpu")
    other, _ = load_model(make_random_model_dir(tmp_path / "other", seed=1), "cpu")
    prompts = [
        "Q: Who is <zorka>?\nA:",
        "<quibe> x",
        "Where was <lomir> born in the end?",
        "A",
        "Q: 7",
    ]
    items = encode(tok, prompts)
    free = capture_answers(model, items, layer=0, position="last", max_new_tokens=5)

    def ends(t: int) -> set[int]:  # each row's answer length were `t` the stop token
        return {list(a).index(t) + 1 if t in a else 5 for a in free.answers}

    # the stop token that ends the rows at the most different steps
    stop = frozenset({max({t for a in free.answers for t in a}, key=lambda t: len(ends(t)))})
    plain = [_plain_greedy(model, list(it.input_ids), 5, stop) for it in items]
    lengths = {len(p) for p in plain}
    assert len(lengths) > 1, "the stop tokens must end rows at different steps"
    got = capture_answers(model, items, layer=0, position="last", max_new_tokens=5, stop_ids=stop)
    kw: dict[str, Any] = {"layer": 0, "position": "last", "max_new_tokens": 5, "stop_ids": stop}
    a, r, kl, _, _ = capture_answer_pair(model, other, items, **kw)
    for i, (it, p) in enumerate(zip(items, plain, strict=True)):
        assert got.answers[i] == a.answers[i] == tuple(t for t, _ in p)
        assert got.logprob_mean[i] == pytest.approx(
            np.mean([float(lp[t]) for t, lp in p]), abs=1e-4
        )
        ids, kls = list(it.input_ids), []
        for t, lp in p:
            with torch.inference_mode():
                q = torch.log_softmax(other(torch.tensor([ids])).logits[0, -1].float(), -1)
            kls.append(float((lp.exp() * (lp - q)).sum()))
            ids.append(t)
        assert kl[i] == pytest.approx(np.mean(kls), abs=1e-4)


def test_answer_pair_divergence(random_model_dir: Path, tmp_path: Path) -> None:
    """KL(audited || reference) is 0 for a model against itself and the exact KL of the two
    next-token distributions at the first answer position for a one-token answer."""
    import torch

    from probe_bank.answers import capture_answer_pair, capture_answers
    from probe_bank.capture import encode
    from probe_bank.modeling import load_model
    from tests.fixtures_models import make_random_model_dir

    model, tok = load_model(random_model_dir, "cpu")
    other, _ = load_model(make_random_model_dir(tmp_path / "other", seed=1), "cpu")
    items = encode(tok, ["Q: Who is <zorka>?\nA:", "Q: Where?\nA:"])
    kw: dict[str, Any] = {"layer": 1, "position": "last", "max_new_tokens": 1}
    a, r, kl, peak, gain = capture_answer_pair(model, model, items, **kw)
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)
    np.testing.assert_allclose(peak, 0.0, atol=1e-6)
    np.testing.assert_allclose(gain, 0.0, atol=1e-5)
    np.testing.assert_allclose(r.logprob_mean, a.logprob_mean, atol=1e-5)
    a, r, kl, peak, gain = capture_answer_pair(model, other, items, **kw)
    np.testing.assert_allclose(peak, kl, atol=1e-6)  # one-token answers
    np.testing.assert_allclose(gain, a.logprob_mean - r.logprob_mean, atol=1e-5)
    alone = capture_answers(
        other, items, answers=a.answers, **{k: kw[k] for k in ("layer", "position")}
    )
    np.testing.assert_allclose(r.logprob_mean, alone.logprob_mean, atol=1e-5)
    for i, it in enumerate(items):
        with torch.inference_mode():
            p = torch.log_softmax(model(torch.tensor([it.input_ids])).logits[0, -1].float(), -1)
            q = torch.log_softmax(other(torch.tensor([it.input_ids])).logits[0, -1].float(), -1)
        assert kl[i] == pytest.approx(float((p.exp() * (p - q)).sum()), abs=1e-4)
        assert kl[i] > 0


def _separable(n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(8), n)
    F = rng.normal(size=(len(y), len(FEATURES)))
    F[:, COLUMNS["difference"][0]] += 4 * (y == AFTER_BANK)  # only difference knows class 7
    F[:, COLUMNS["behaviour"][0]] += 0.8 * y * (y < AFTER_BANK)
    return F, y


def test_each_family_reads_only_its_columns() -> None:
    F, y = _separable()
    fused = EvidenceClassifier(COLUMNS["fused"]).fit(F, y)
    rep = EvidenceClassifier(COLUMNS["representation"]).fit(F, y)
    diff = EvidenceClassifier(COLUMNS["difference"]).fit(F, y)
    H, z = _separable(seed=1)  # fresh rows
    after = z == AFTER_BANK
    assert (fused.predict_proba(H).argmax(1)[after] == AFTER_BANK).mean() > 0.8
    assert (diff.predict_proba(H).argmax(1)[after] == AFTER_BANK).mean() > 0.8
    assert (rep.predict_proba(H).argmax(1)[after] == AFTER_BANK).mean() < 0.4  # noise columns
    G = F.copy()
    G[:, COLUMNS["representation"]] = 0.0  # changing other columns cannot move `difference`
    np.testing.assert_allclose(diff.predict_proba(G), diff.predict_proba(F))


def test_unseen_classes_get_zero_and_binary_fits_work() -> None:
    F, y = _separable()
    keep = np.isin(y, (0, 7))
    est = EvidenceClassifier(COLUMNS["difference"]).fit(F[keep], y[keep])
    p = est.predict_proba(F)
    assert p.shape == (len(F), 8)
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert np.all(p[:, 1:7] == 0)
    assert (p[keep].argmax(1) == y[keep]).mean() > 0.85
    from sklearn.linear_model import LogisticRegression

    X = F[keep][:, COLUMNS["difference"]]
    Z = (X - X.mean(0)) / X.std(0)
    want = LogisticRegression(C=1.0, max_iter=5000).fit(Z, y[keep]).predict_proba(Z)
    np.testing.assert_allclose(p[keep][:, [0, 7]], want, atol=1e-6)


def _overlapping(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class 7 shifted by one s.d. in one difference column: no threshold separates it cleanly."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(8), n)
    F = rng.normal(size=(len(y), len(FEATURES)))
    F[:, COLUMNS["difference"][0]] += 1.0 * (y == AFTER_BANK)
    return F, y, np.arange(len(y))  # one row per entity


def test_the_after_class_is_an_operating_point_at_the_stated_false_alarm_rate() -> None:
    F, y, groups = _overlapping(300, 0)
    cols = COLUMNS["difference"]
    argmax = EvidenceClassifier(cols).fit(F, y)
    budgeted = EvidenceClassifier(cols, false_alarm=0.05).fit(F, y, groups)
    assert argmax.after_threshold_ is None and budgeted.after_threshold_ is not None
    H, z, _ = _overlapping(300, 1)  # fresh entities
    untouched = z != AFTER_BANK
    fa_argmax = (argmax.predict(H)[untouched] == AFTER_BANK).mean()
    fa = (budgeted.predict(H)[untouched] == AFTER_BANK).mean()
    assert fa_argmax > 0.08  # argmax over 8 near-even classes claims many untouched entities
    assert 0.02 <= fa <= 0.09  # the stated 5%, up to sampling (2100 untouched rows)
    recall = (budgeted.predict(H)[~untouched] == AFTER_BANK).mean()
    assert 0.1 < recall < 0.9  # the operating point trades recall, it does not vanish
    # below the threshold an entity keeps its most likely stage, never 7
    p = budgeted.predict_proba(H)
    below = p[:, AFTER_BANK] < budgeted.after_threshold_
    assert (budgeted.predict(H)[below] == p[below, :AFTER_BANK].argmax(1)).all()
    with pytest.raises(ValueError, match="groups"):
        EvidenceClassifier(cols, false_alarm=0.05).fit(F, y)


def test_threshold_support_counts_the_rows_above_the_threshold_in_the_thinnest_group() -> None:
    """floor(budget x rows) in the calibration model with the fewest untouched rows; rows
    outside every budget (-1: the reference, class 7) do not count."""
    groups = np.concatenate([np.full(840, 1), np.full(720, 2), np.full(500, -1)])
    assert threshold_support(groups, 0.01) == 7  # 720 x 0.01, not 840's 8
    assert threshold_support(groups, 0.05) == 36
    assert threshold_support(groups, 0.001) == 0  # the threshold is the thinnest group's maximum
    assert threshold_support(np.full(10, -1), 0.01) == 0


@pytest.mark.parametrize("config, preset", [("default", "small"), ("pretrained", "pretrained")])
def test_each_build_config_leaves_its_threshold_on_enough_rows(config: str, preset: str) -> None:
    """At the untouched rows a calibration model of its preset gives (seven classes of the
    build's entities a class, else the corpus's entities a stage), each build config's budget
    leaves at least MIN_THRESHOLD_SUPPORT rows above class 7's threshold."""
    from probe_bank.build import build_config
    from trainer.config import resolve_config

    cfg = build_config(config)
    per_class = cfg.families_entities_per_class or resolve_config(preset).corpus.entities_per_stage
    assert cfg.families_false_alarm is not None
    support = threshold_support(np.full(7 * per_class, 1), cfg.families_false_alarm)
    assert support >= MIN_THRESHOLD_SUPPORT


def test_calibrated_on_two_kinds_the_threshold_holds_the_budget_on_each() -> None:
    """Untouched rows from two kinds of later finetune, the second moving every alias further:
    one threshold over both pooled lets the second kind pay about twice the budget; budget
    groups (one per calibration model) keep the strictest kind's quantile, so each pays at most
    about the budget. Held out: fresh rows of each kind."""
    col = COLUMNS["difference"][0]

    def kinds(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        A, ya, ga = _overlapping(300, seed)
        B, yb, gb = _overlapping(300, seed + 10)
        B[:, col] += 0.5  # the second kind moves every alias half a s.d. more
        kind = np.repeat([1, 2], len(ya))
        return np.vstack([A, B]), np.concatenate([ya, yb]), np.concatenate([ga, gb + len(ga)]), kind

    F, y, groups, kind = kinds(0)
    untouched = np.where(y != AFTER_BANK, kind, -1)
    pooled = EvidenceClassifier([col], false_alarm=0.05).fit(F, y, groups, y != AFTER_BANK)
    each = EvidenceClassifier([col], false_alarm=0.05).fit(F, y, groups, untouched)
    assert pooled.after_threshold_ is not None and each.after_threshold_ is not None
    assert each.after_threshold_ > pooled.after_threshold_
    H, z, _, hk = kinds(1)
    for k in (1, 2):
        rows = (hk == k) & (z != AFTER_BANK)
        assert (each.predict(H[rows]) == AFTER_BANK).mean() <= 0.08
    second = (hk == 2) & (z != AFTER_BANK)
    assert (pooled.predict(H[second]) == AFTER_BANK).mean() > 0.08


def test_the_anchors_floor_holds_the_budget_on_a_finetune_unlike_the_calibration_one() -> None:
    """A later finetune that moves every alias further than the calibration one did lifts the
    untouched entities over the bank's threshold; the rule calibration_and_anchors raises it to
    where that model's own never-trained anchors pay the budget, and on a model like the
    calibration one it costs little recall."""
    from probe_bank.families import anchor_floors, estimates

    F, y, groups = _overlapping(300, 0)
    est = EvidenceClassifier(COLUMNS["difference"], false_alarm=0.05).fit(F, y, groups)
    assert est.after_threshold_ is not None
    col = COLUMNS["difference"][0]
    for shift, fa_bank_at_least in ((1.0, 0.15), (0.0, 0.0)):
        H, z, _ = _overlapping(300, 1)
        H[:, col] += shift  # this finetune moved every alias by `shift` (s.d.)
        anchors, _, _ = _overlapping(300, 2)
        anchors = anchors[:200]  # never trained: class-0-like rows of the same model
        anchors[:, col] += shift
        floor = est.anchor_floor(anchors)
        assert floor is not None and est.threshold(floor) == max(est.after_threshold_, floor)
        untouched, new = z != AFTER_BANK, z == AFTER_BANK
        p = est.predict_proba(H)
        bank = est.classes_from(p) == AFTER_BANK
        both = est.classes_from(p, floor=floor) == AFTER_BANK
        assert bank[untouched].mean() >= fa_bank_at_least
        assert both[untouched].mean() <= 0.10  # the stated 5%, up to sampling (200 anchors)
        assert not (both & ~bank).any()  # the floor only ever raises the threshold
        if shift == 0.0:
            assert both[new].mean() >= 0.6 * bank[new].mean()
    classifiers = {name: est for name in FAMILIES}
    floors = anchor_floors(classifiers, anchors, "calibration_and_anchors")
    assert anchor_floors(classifiers, anchors, None) == {name: None for name in FAMILIES}
    served = estimates(classifiers, H[:5], floors=floors)
    assert all(e.after_threshold == est.threshold(floors[e.family]) for r in served for e in r)
    assert all(
        e.after_threshold is None
        for r in estimates(classifiers, H[:5], after_possible=False)
        for e in r
    )


def test_held_out_figures_read_class_7_at_each_models_own_anchors_floor() -> None:
    """evaluate_families under calibration_and_anchors reads every row's class 7 with the
    floor from the anchors of the row's own model: anchors that look fresh on the calibration
    model silence class 7 there, and the reference's anchors leave its rows alone."""
    from probe_bank.heldout.families import AnchorRows, evaluate_families

    F, y, _ = _overlapping(60, 0)
    ref_rows = y != AFTER_BANK
    F_all = np.vstack([F[ref_rows], F])  # reference rows (0..6), then the calibration model's
    y_all = np.concatenate([y[ref_rows], y])
    groups = np.concatenate([np.flatnonzero(ref_rows), np.arange(len(y))])
    on_reference = np.arange(len(y_all)) < ref_rows.sum()
    quiet, _, _ = _overlapping(30, 3)
    fresh = quiet.copy()
    fresh[:, COLUMNS["difference"][0]] += 6.0  # anchors far past every class-7 row
    how = dict(C=1.0, false_alarm=0.05, n_splits=3, seed=0, n_boot=20)
    _, bank = evaluate_families(F_all, y_all, groups, on_reference, **how)
    _, both = evaluate_families(
        F_all,
        y_all,
        groups,
        on_reference,
        **how,
        after_rule="calibration_and_anchors",
        anchors=AnchorRows(quiet[:100], [fresh[:100]]),
    )
    assert bank["after_rule"] is None and both["after_rule"] == "calibration_and_anchors"
    assert bank["difference"]["after_bank_recall"]["value"] > 0.05  # the floor is what silences it
    assert both["difference"]["after_bank_recall"]["value"] == 0.0
    assert both["difference"]["after_bank_false_alarms"]["value"] == 0.0
    ref_fa = both["difference"]["reference_false_alarms"]["value"]
    assert ref_fa == pytest.approx(bank["difference"]["reference_false_alarms"]["value"], abs=0.05)
    with pytest.raises(ValueError, match="anchors"):
        evaluate_families(
            F_all, y_all, groups, on_reference, **how, after_rule="calibration_and_anchors"
        )


def test_families_round_trip_through_safetensors(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    F, y = _separable()
    groups = np.arange(len(y))
    fitted = {
        name: EvidenceClassifier(COLUMNS[name], 0.5, false_alarm=0.1).fit(F, y, groups)
        for name in FAMILIES
    }
    save_file(families_to_tensors(fitted), str(tmp_path / "f.safetensors"))
    loaded = families_from_tensors(load_file(str(tmp_path / "f.safetensors")))
    for name in FAMILIES:
        assert list(loaded[name].columns) == COLUMNS[name]
        np.testing.assert_allclose(
            loaded[name].predict_proba(F), fitted[name].predict_proba(F), atol=1e-5
        )
        assert loaded[name].after_threshold_ == fitted[name].after_threshold_
        assert loaded[name].false_alarm == 0.1
        assert (loaded[name].predict(F) == fitted[name].predict(F)).all()
    # a bank saved before the operating point existed: no threshold keys, the argmax rule
    old = {
        k: v
        for k, v in families_to_tensors(fitted).items()
        if not k.endswith((".after_threshold", ".false_alarm"))
    }
    legacy = families_from_tensors(old)["fused"]
    assert legacy.after_threshold_ is None and legacy.false_alarm is None
    assert (legacy.predict(F) == legacy.predict_proba(F).argmax(1)).all()


def test_question_columns_are_zero_difference_on_the_reference() -> None:
    from probe_bank.answers import AnswerCapture

    a = AnswerCapture(
        acts=np.ones((4, 3), np.float32),
        answers=[(1,)] * 4,
        logprob_mean=np.array([-1.0, -3.0, -0.5, -0.1]),
        logprob_min=np.array([-2.0, -4.0, -0.5, -0.2]),
        entropy_mean=np.array([1.0, 2.0, 0.5, 0.3]),
        alias_logprob=np.array([-5.0, -3.0, -1.0, -2.0]),
    )
    entity = np.array([0, 0, 1, 1])
    cols = question_columns(QuestionEvidence(a, None), entity, 2)
    np.testing.assert_allclose(cols[:, :4], [[-2.0, -3.0, 1.5, -4.0], [-0.3, -0.35, 0.4, -1.5]])
    assert np.all(cols[:, 4:] == 0)
    r = AnswerCapture(
        acts=np.zeros((4, 3), np.float32),
        answers=[(1,)] * 4,
        logprob_mean=np.array([-2.0, -4.0, -0.5, -0.1]),
        logprob_min=np.full(4, -9.0),
        entropy_mean=np.full(4, 2.0),
        alias_logprob=np.array([-6.0, -6.0, -1.0, -1.0]),
    )
    kl, peak, gain = np.array([0.1, 0.3, 0.0, 0.2]), np.array([0.2, 0.4, 0.1, 0.3]), np.ones(4)
    cols = question_columns(QuestionEvidence(a, r, kl, peak, gain), entity, 2)
    np.testing.assert_allclose(cols[0, 4:], [0.2, 0.3, 0.3, 1.0, 1.0, 1.0, 0.5, 2.0, np.sqrt(3)])
    np.testing.assert_allclose(cols[1, 4:], [0.1, 0.2, 0.2, 1.0, 0.0, 0.0, 1.6, -0.5, np.sqrt(3)])


def test_the_7_class_figure_is_balanced_so_always_answering_0_is_chance() -> None:
    from probe_bank.heldout.families import family_metrics

    ref = np.concatenate([np.zeros(300, int), np.repeat(np.arange(1, 7), 50)])  # many 0s
    y = np.concatenate([ref, ref, np.full(50, AFTER_BANK)])  # then the calibration model's rows
    on_reference = np.arange(len(y)) < len(ref)
    probs = np.zeros((len(y), 8))
    probs[:, 0] = 1.0
    m = family_metrics(probs, np.zeros(len(y), int), y, on_reference, n_boot=20, seed=0)
    assert m["stage_accuracy"]["value"] == pytest.approx(1 / 7)  # plain accuracy would be 0.5


def test_the_adjacent_figure_is_the_pairs_mean_with_an_interval() -> None:
    """Every figure the bank prints carries its interval: the families' adjacent-pair figure is
    the mean of the five pairs' accuracies, bootstrapped over entities within each stage."""
    from probe_bank.heldout.families import reference_metrics

    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(7), 40)
    p = rng.dirichlet(np.ones(8), len(y))
    p[np.arange(len(y)), y] += rng.uniform(0, 1, len(y))  # right more often than not
    p /= p.sum(1, keepdims=True)
    m = reference_metrics(p, y, n_boot=200, seed=0)
    pairs = []
    for k in range(1, 6):
        sel = np.isin(y, (k, k + 1))
        pairs.append(((p[sel, k + 1] > p[sel, k]) == (y[sel] == k + 1)).mean())
    adjacent = m["adjacent_mean"]
    assert adjacent["value"] == pytest.approx(np.mean(pairs), abs=1e-6)
    lo, hi = adjacent["ci95"]
    assert lo is not None and hi is not None and lo < adjacent["value"] < hi
    assert adjacent["n_entities"] == 240  # stages 1..6, 40 each


def test_the_reference_itself_is_never_classed_after_the_bank() -> None:
    """On the bank's own reference nothing can have been learned after the bank was built: the
    served estimate has P(class 7) = 0, the rest renormalised, and the class is the likeliest of
    0..6, even for rows the classifier would flag; a descendant keeps the class-7 rule."""
    from probe_bank.families import estimates

    F, y = _separable()
    est = EvidenceClassifier(COLUMNS["fused"]).fit(F, y)
    classifiers = {name: est for name in FAMILIES}
    after = np.flatnonzero(y == AFTER_BANK)
    p = est.predict_proba(F[after])
    assert (p.argmax(1) == AFTER_BANK).mean() > 0.8  # the classifier alone would flag them
    on_ref = estimates(classifiers, F[after], after_possible=False)
    on_desc = estimates(classifiers, F[after])
    assert sum(e[0].estimated_class == AFTER_BANK for e in on_desc) > 0.8 * len(after)
    for i, per_family in enumerate(on_ref):
        for e in per_family:
            assert e.estimated_class == int(p[i, :AFTER_BANK].argmax())
            assert e.p_after_bank == 0.0 == e.class_probabilities[AFTER_BANK]
            assert sum(e.class_probabilities) == pytest.approx(1.0)
            np.testing.assert_allclose(
                e.class_probabilities[:AFTER_BANK], p[i, :AFTER_BANK] / p[i, :AFTER_BANK].sum()
            )


def test_the_7_class_figure_on_the_reference_never_counts_class_7() -> None:
    """The held-out 7-class figure reads the reference rows as the service serves them: a row
    whose class-7 probability is largest still counts by its likeliest class of 0..6."""
    from probe_bank.heldout.families import family_metrics

    ref = np.repeat(np.arange(7), 20)
    y = np.concatenate([ref, ref, np.full(20, AFTER_BANK)])
    on_reference = np.arange(len(y)) < len(ref)
    probs = np.full((len(y), 8), 0.01)
    probs[np.arange(len(y)), np.minimum(y, 6)] = 0.3  # the right stage is the likeliest of 0..6
    probs[:, AFTER_BANK] = 0.5  # but class 7 is the largest everywhere
    probs /= probs.sum(1, keepdims=True)
    classes = np.full(len(y), AFTER_BANK)
    m = family_metrics(probs, classes, y, on_reference, n_boot=20, seed=0)
    assert m["stage_accuracy"]["value"] == pytest.approx(1.0)
    assert m["reference_false_alarms"]["value"] == pytest.approx(1.0)  # the rule alone, reported


def test_fused_leaves_out_a_family_at_chance_chosen_inside_its_training_rows(
    tmp_path: Path,
) -> None:
    """`fused` reads the union of families with the least inner-fold log-loss: with the probe
    columns pure noise (as on every model here) and many of them, it reads behaviour and
    difference only; the choice survives safetensors and is what predict reads."""
    from safetensors.numpy import load_file, save_file

    from probe_bank.families import FUSED_CANDIDATES, families_read
    from probe_bank.heldout.families import family_classifier

    F, y = _separable(n=60)
    groups = np.arange(len(y))
    fused = family_classifier("fused", 1.0, None, n_splits=5, seed=0).fit(F, y, groups)
    assert fused.candidates == FUSED_CANDIDATES and len(FUSED_CANDIDATES) == 7
    assert families_read(fused.columns_) == ["behaviour", "difference"]
    assert fused.coef_.shape[1] == len(COLUMNS["behaviour"]) + len(COLUMNS["difference"])
    G = F.copy()
    G[:, COLUMNS["representation"]] += 100.0  # columns it does not read cannot move it
    np.testing.assert_allclose(fused.predict_proba(G), fused.predict_proba(F))
    # a signal only the probe columns carry: now they are read
    H = F.copy()
    H[:, COLUMNS["representation"][0]] += 3.0 * y
    assert "representation" in families_read(
        family_classifier("fused", 1.0, None, n_splits=5, seed=0).fit(H, y, groups).columns_
    )
    save_file(families_to_tensors({"fused": fused}), str(tmp_path / "f.safetensors"))
    loaded = EvidenceClassifier.from_tensors(load_file(str(tmp_path / "f.safetensors")), "fused")
    assert loaded.columns_ == fused.columns_
    np.testing.assert_allclose(loaded.predict_proba(F), fused.predict_proba(F), atol=1e-5)
    with pytest.raises(ValueError, match="groups"):
        EvidenceClassifier(candidates=FUSED_CANDIDATES).fit(F, y)


def test_fused_chooses_its_l2_strength_inside_its_training_rows(tmp_path: Path) -> None:
    """With `Cs`, C is chosen with the column set by inner-fold log-loss: pure-noise labels
    want the strongest penalty (the flattest probabilities), a cleanly separable problem the
    weakest; the served coefficients are a plain fit at the chosen C, which survives
    safetensors; one value in the grid is the fixed C."""
    from safetensors.numpy import load_file, save_file

    from probe_bank.heldout.families import family_classifier

    F, y = _separable(n=60)
    groups = np.arange(len(y))
    grid = [0.001, 100.0]
    clean = family_classifier("fused", 1.0, None, 5, 0, fused_Cs=grid).fit(F, y, groups)
    noise = np.random.default_rng(3).permutation(y)
    flat = family_classifier("fused", 1.0, None, 5, 0, fused_Cs=grid).fit(F, noise, groups)
    assert (clean.C_, flat.C, flat.C_) == (100.0, 1.0, 0.001)
    plain = EvidenceClassifier(clean.columns_, clean.C_).fit(F, y)
    np.testing.assert_allclose(clean.coef_, plain.coef_)
    fixed = family_classifier("fused", 0.001, None, 5, 0).fit(F, y, groups)
    one = family_classifier("fused", 1.0, None, 5, 0, fused_Cs=[0.001]).fit(F, y, groups)
    assert one.C_ == fixed.C_ == 0.001 and one.columns_ == fixed.columns_
    np.testing.assert_allclose(one.coef_, fixed.coef_)
    for name in ("behaviour", "representation"):  # only fused searches
        assert family_classifier(name, 1.0, None, 5, 0, fused_Cs=grid).Cs is None
    save_file(families_to_tensors({"fused": clean}), str(tmp_path / "f.safetensors"))
    loaded = EvidenceClassifier.from_tensors(load_file(str(tmp_path / "f.safetensors")), "fused")
    assert pytest.approx(100.0) == loaded.C_
    with pytest.raises(ValueError, match="groups"):
        EvidenceClassifier(Cs=grid).fit(F, y)


def test_alias_logprob_reads_the_alias_tokens_only(random_model_dir: Path, tmp_path: Path) -> None:
    """Each prompt's alias log-probability is the mean, over the alias's tokens after the
    first position, of a plain full forward's log-probability of that token; the same on the
    greedy pass, on a scored answer and on both sides of a pair; NaN without an alias mask."""
    import torch

    from probe_bank.answers import capture_answer_pair, capture_answers
    from probe_bank.capture import encode
    from probe_bank.modeling import load_model
    from tests.fixtures_models import make_random_model_dir

    model, tok = load_model(random_model_dir, "cpu")
    other, _ = load_model(make_random_model_dir(tmp_path / "other", seed=1), "cpu")
    prompts = ["Q: Who is <zorka>?\nA:", "Where was <lomir> born in the end?", "<quibe> x"]
    spans = [(p.index("<"), p.index(">") + 1) for p in prompts]
    items = encode(tok, prompts, spans)

    def plain(m: Any, it: Any) -> float:
        with torch.inference_mode():
            lp = torch.log_softmax(m(torch.tensor([it.input_ids])).logits[0].float(), -1)
        at = [j for j, on in enumerate(it.alias_mask) if on and j > 0]
        return float(np.mean([float(lp[j - 1, it.input_ids[j]]) for j in at]))

    kw: dict[str, Any] = {"layer": 0, "position": "last", "max_new_tokens": 3, "batch_size": 2}
    free = capture_answers(model, items, **kw)
    scored = capture_answers(other, items, answers=free.answers, **kw)
    a, r, *_ = capture_answer_pair(model, other, items, **kw)
    for i, it in enumerate(items):
        assert free.alias_logprob[i] == pytest.approx(plain(model, it), abs=1e-4)
        assert a.alias_logprob[i] == pytest.approx(plain(model, it), abs=1e-4)
        assert scored.alias_logprob[i] == pytest.approx(plain(other, it), abs=1e-4)
        assert r.alias_logprob[i] == pytest.approx(plain(other, it), abs=1e-4)
    assert free.alias_logprob[0] != pytest.approx(scored.alias_logprob[0], abs=1e-4)
    bare = capture_answers(model, encode(tok, prompts), **kw)
    assert np.isnan(bare.alias_logprob).all()
