"""BANK_DIR persistence: probe weights in safetensors (no code on load), a manifest of hashes.

`ProbeBank.load` re-hashes every file and the model's weights, and refuses a bank whose files
were changed or that was fitted on other weights, so a served verdict is always the fitted one.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from probe_bank.adapter import check_merged, is_adapter_dir, merged_adapter_dir
from probe_bank.errors import UserError
from probe_bank.estimator import RecencyProbes
from probe_bank.families import FEATURES, EvidenceClassifier, families_from_tensors
from probe_bank.fingerprint import file_sha256, lineage_key, model_fingerprint
from probe_bank.schemas import SCHEMA_VERSION, BankManifest, BankMetrics, Relation, StageScore

METRICS = "metrics.json"
#: The evidence families' classifiers (banks built with a calibration model).
FAMILY_WEIGHTS = "families.safetensors"
#: The rows they were fitted on: table entities then the calibration pool, on the reference then
#: on the calibration model (features, label, entity, on_reference).
FAMILY_ROWS = "family_rows.safetensors"

MANIFEST = "manifest.json"
WEIGHTS = "probes.safetensors"
#: Hashes of the aliases the saved probes were fitted on (banks built before it lack the file).
FITTED_ENTITIES = "fitted_entities.json"
#: The alias rules `alias_sha256` knows, newest last; banks record the one they were built with.
ALIAS_RULE_V1 = "sha256(utf8(collapse_whitespace(nfkc(casefold(nfkc(alias))))))"
ALIAS_RULE_V2 = (
    "sha256(utf8(collapse_whitespace(nfkc(drop_invisible(nfkd(casefold(nfkc(alias))))))))"
)
#: How new banks hash their fitted aliases.
ALIAS_HASH_RULE = ALIAS_RULE_V2
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Default-ignorable letters that are not format characters (Hangul fillers).
_FILLERS = frozenset("\u115f\u1160\u3164\uffa0")


def _invisible(ch: str) -> bool:
    """Format (Cf: ZWSP, soft hyphen, LRM, BOM, ...), combining marks (Mn, Me: accents once
    decomposed, variation selectors, the grapheme joiner), controls other than whitespace, and
    the Hangul fillers: characters that change an alias's bytes but not how it reads."""
    if ch.isspace():
        return False
    return unicodedata.category(ch) in ("Cf", "Mn", "Me", "Cc") or ch in _FILLERS


def _fold(alias: str, rule: str) -> str:
    text = unicodedata.normalize("NFKC", alias).casefold()
    if rule == ALIAS_RULE_V2:
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not _invisible(ch))
    return " ".join(unicodedata.normalize("NFKC", text).split())


def alias_sha256(alias: str, rule: str = ALIAS_HASH_RULE) -> str:
    """Digest of an alias under `rule` (default the current one): Unicode (NFKC) and case folded,
    invisible characters and accents dropped (V2), inner runs of whitespace collapsed and ends
    stripped, so spelling variants of a fitted alias still match (the flag errs towards
    "in-sample")."""
    if rule not in (ALIAS_RULE_V1, ALIAS_RULE_V2):
        raise UserError(f"unknown alias hashing rule {rule!r}")
    return hashlib.sha256(_fold(alias, rule).encode("utf-8")).hexdigest()


class FittedAliases:
    """The digests of a bank's fitted aliases and the rule that made them."""

    def __init__(self, rule: str, digests: frozenset[str]) -> None:
        self.rule = rule
        self.digests = digests

    def __contains__(self, alias: object) -> bool:
        return isinstance(alias, str) and alias_sha256(alias, self.rule) in self.digests

    def __len__(self) -> int:
        return len(self.digests)


def fitted_entities_record(aliases: Iterable[str]) -> dict[str, object]:
    """FITTED_ENTITIES content: sorted unique alias digests and the rule that made them."""
    digests = sorted({alias_sha256(a) for a in aliases})
    return {
        "rule": ALIAS_HASH_RULE,
        "what": "aliases of the probe entities (stages 1..6 and control) the saved probe weights "
        "were fitted on; scoring them again is in-sample",
        "n_aliases": len(digests),
        "alias_sha256": digests,
    }


def read_fitted_entities(bank_dir: Path, manifest: BankManifest) -> FittedAliases | None:
    """The fitted alias digests, or None for a bank whose manifest lists no FITTED_ENTITIES.

    Call after `verify_files`: the file's hash has then been checked against the manifest.
    """
    if FITTED_ENTITIES not in manifest.files:
        return None
    path = bank_dir / FITTED_ENTITIES
    try:
        body = json.loads(path.read_text("utf-8"))
        rule, digests = body["rule"], body["alias_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path} is not a valid fitted-entities file: {exc}") from None
    if rule not in (ALIAS_RULE_V1, ALIAS_RULE_V2):
        raise UserError(
            f"{path}: unknown alias hashing rule {rule!r} (this version reads {ALIAS_RULE_V1!r}"
            f" and {ALIAS_RULE_V2!r})"
        )
    if not isinstance(digests, list) or not all(
        isinstance(d, str) and _HEX64.fullmatch(d) for d in digests
    ):
        raise UserError(f"{path}: alias_sha256 must be a list of SHA-256 hex digests")
    return FittedAliases(rule, frozenset(digests))


def manifest_digest(manifest: BankManifest) -> str:
    """Bank id: a hash of every manifest field but itself, so an edited manifest is detected.

    Unset optional fields are left out, so banks built before a field existed keep their id."""
    body = manifest.model_dump(mode="json", exclude={"bank_id"}, exclude_none=True)
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "bank-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_bank(
    bank_dir: str | Path,
    probes: RecencyProbes,
    manifest_fields: dict,
    extra_json: dict[str, object],
    extra_tensors: dict[str, dict[str, np.ndarray]] | None = None,
) -> BankManifest:
    """Write weights (and any other safetensors files, e.g. the evidence families), the extra
    JSON files (metrics, scan, ...) and finally the manifest."""
    from safetensors.numpy import save_file

    root = Path(bank_dir)
    root.mkdir(parents=True, exist_ok=True)
    tensors = {WEIGHTS: probes.to_tensors(), **(extra_tensors or {})}
    for name, flat in tensors.items():
        save_file(flat, str(root / name))
    for name, obj in extra_json.items():
        (root / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", "utf-8")
    files = {name: file_sha256(root / name) for name in [*sorted(tensors), *sorted(extra_json)]}
    manifest = BankManifest(bank_id="pending", files=files, **manifest_fields)
    manifest.bank_id = manifest_digest(manifest)
    (root / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n", "utf-8")
    return manifest


def read_manifest(bank_dir: str | Path) -> BankManifest:
    """Parse BANK_DIR/manifest.json (no verification)."""
    path = Path(bank_dir) / MANIFEST
    if not path.is_file():
        raise UserError(f"{path} is missing: {bank_dir} is not a probe bank")
    try:
        manifest = BankManifest.model_validate_json(path.read_text("utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not a valid bank manifest: {exc}") from None
    if manifest.schema_version != SCHEMA_VERSION:
        raise UserError(
            f"{path}: bank schema {manifest.schema_version}, this version reads {SCHEMA_VERSION}"
        )
    return manifest


def verify_files(bank_dir: Path, manifest: BankManifest) -> None:
    """The manifest is unedited and every file it names exists with its recorded hash."""
    if manifest_digest(manifest) != manifest.bank_id:
        raise UserError(f"{bank_dir / MANIFEST} was modified after the bank was built")
    if WEIGHTS not in manifest.files:
        raise UserError(f"{bank_dir}: manifest lists no {WEIGHTS}")
    for name, want in manifest.files.items():
        path = bank_dir / name
        if Path(name).name != name or not path.is_file():
            raise UserError(f"bank file {path} is missing")
        if file_sha256(path) != want:
            raise UserError(
                f"bank file {path} was modified after the bank was built (hash mismatch)"
            )


def model_relation(manifest: BankManifest, model_dir: str | Path) -> tuple[Relation, str]:
    """`reference` when the model is the one the bank was fitted on, `descendant` when it shares
    the bank's lineage (architecture config and tokenizer) with other weights; anything else is
    refused with one clear error. A bank without a lineage record audits only its reference; one
    built before lineage v2 matches on its v1 key (raw tokenizer files, loader flags included).
    Returned with the audited model's weight fingerprint (what a job's results were scored on)."""
    weights = model_fingerprint(model_dir)
    if manifest.lineage is None:
        if weights != manifest.model_fingerprint:
            raise UserError(
                f"model {model_dir} (fingerprint {weights[:12]}) is not the model this bank was "
                f"built on (fingerprint {manifest.model_fingerprint[:12]}), and the bank predates "
                "lineage records: rebuild it to audit descendants"
            )
        return "reference", weights
    lineage = lineage_key(model_dir)
    if lineage != manifest.lineage and lineage_key(model_dir, version=1) != manifest.lineage:
        raise UserError(
            f"model {model_dir} is not of this bank's lineage: its architecture config or "
            f"tokenizer differ from the reference's (lineage {lineage[:12]}, the bank's "
            f"{manifest.lineage[:12]}); a bank audits only its reference and models finetuned "
            "from it"
        )
    return ("reference" if weights == manifest.model_fingerprint else "descendant"), weights


def read_metrics(bank_dir: Path) -> BankMetrics | None:
    """metrics.json parsed and checked (call after `verify_files`); None when the bank has none."""
    path = bank_dir / METRICS
    if not path.is_file():
        return None
    try:
        return BankMetrics.model_validate_json(path.read_text("utf-8"))
    except ValueError as exc:
        raise UserError(f"{path} is not a valid metrics file: {exc}") from None


class ProbeBank:
    """A loaded, verified bank: manifest + probe weights."""

    def __init__(
        self,
        bank_dir: Path,
        manifest: BankManifest,
        probes: RecencyProbes,
        fitted_aliases: FittedAliases | None = None,
        metrics: BankMetrics | None = None,
        relation: Relation = "reference",
        families: dict[str, EvidenceClassifier] | None = None,
        audited_fingerprint: str | None = None,
        audited_dir: Path | None = None,
    ) -> None:
        self.bank_dir = bank_dir
        self.manifest = manifest
        #: metrics.json as verified at load (None only for a bank assembled in memory)
        self.metrics = metrics
        #: the audited model against the bank's reference (see `model_relation`)
        self.relation: Relation = relation
        #: the audited model's weight fingerprint (default: the reference's, from the manifest)
        self.audited_fingerprint = audited_fingerprint or manifest.model_fingerprint
        #: the audited model's directory (a PEFT adapter's: its merge onto the reference)
        self.audited_dir = audited_dir or Path(manifest.model_path)
        #: the estimator the held-out evaluation cloned, refitted on every bank entity
        self.probes = probes
        #: alias_sha256 digests the probes were fitted on; None = unknown (an older bank)
        self.fitted_aliases = fitted_aliases
        #: family -> classifier over classes 0..7 (None: a probes-only bank)
        self.families = families

    @classmethod
    def load(
        cls,
        bank_dir: str | Path,
        *,
        model_dir: str | Path | None = None,
        expected_id: str | None = None,
        home: Path | None = None,
    ) -> ProbeBank:
        """Verify every hash, and the audited model (`model_dir`, default the reference at the
        manifest's path; a PEFT adapter directory is merged onto the reference first, under
        `home`, see `probe_bank.adapter`) against the bank's reference: same weights, or same
        lineage.

        The bank id is a digest of the manifest, which lists every file's SHA-256: it proves the
        files are the ones the manifest names, not who wrote them (anyone who edits a file can
        recompute both). `expected_id` pins the bank an operator trusts: any other is refused."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        root = Path(bank_dir)
        manifest = read_manifest(root)
        verify_files(root, manifest)
        if expected_id is not None and manifest.bank_id != expected_id:
            raise UserError(
                f"{root} is bank {manifest.bank_id}, not the pinned {expected_id} "
                "(RECENCY_AUDIT_EXPECTED_BANK_ID): refusing to serve it"
            )
        audited = Path(model_dir if model_dir is not None else manifest.model_path)
        merged_weights = None
        if is_adapter_dir(audited):
            audited, merged_weights = merged_adapter_dir(audited, manifest, home)
        relation, weights = model_relation(manifest, audited)
        if merged_weights is not None:
            check_merged(audited, weights, merged_weights)
        try:
            probes = RecencyProbes.from_tensors(load_file(str(root / WEIGHTS)))
        except (KeyError, SafetensorError) as exc:
            raise UserError(f"{root / WEIGHTS} is not a valid probe file: {exc}") from None
        if probes.mean_.shape != (manifest.d_model,):
            raise UserError(f"{root / WEIGHTS}: width does not match d_model={manifest.d_model}")
        families = None
        if manifest.evidence is not None:
            if manifest.evidence.features != list(FEATURES):
                raise UserError(
                    f"{root}: its evidence families read other columns than this version "
                    "computes (a bank built before a column was added); rebuild it with "
                    "`recency-audit bank build`"
                )
            try:
                families = families_from_tensors(load_file(str(root / FAMILY_WEIGHTS)))
            except (KeyError, SafetensorError, OSError) as exc:
                raise UserError(
                    f"{root / FAMILY_WEIGHTS} is not a valid family file: {exc}"
                ) from None
            width = len(manifest.evidence.features)
            if any(
                est.mean_.shape != (len(est.columns),) or max(est.columns) >= width
                for est in families.values()
            ):
                raise UserError(f"{root / FAMILY_WEIGHTS}: columns do not match the manifest")
        return cls(
            root,
            manifest,
            probes,
            read_fitted_entities(root, manifest),
            read_metrics(root),
            relation,
            families,
            weights,
            audited,
        )

    def in_bank_sample(self, alias: str | None) -> bool | None:
        """Whether the probes were fitted on `alias`; None when unknown (no alias, older bank)."""
        if alias is None or self.fitted_aliases is None:
            return None
        return alias in self.fitted_aliases

    def predict(
        self,
        acts: np.ndarray,
        n_tokens: np.ndarray | None = None,
        aliases: Sequence[str | None] | None = None,
        *,
        model_id: str = "",
    ) -> list[StageScore]:
        """Scores for activations [n, d] taken at the manifest's layer and position.

        `aliases` (one per row, or None) are the scored entities: they set `in_bank_sample`.
        """
        acts = np.asarray(acts)
        if acts.ndim != 2 or acts.shape[1] != self.manifest.d_model:
            raise UserError(f"expected activations [n, {self.manifest.d_model}], got {acts.shape}")
        if aliases is not None and len(aliases) != len(acts):
            raise UserError(f"{len(aliases)} aliases for {len(acts)} activation rows")
        alias_of = list(aliases) if aliases is not None else [None] * len(acts)
        probs = self.probes.predict_proba(acts)
        late = self.probes.p_late(acts)
        rec = self.probes.recency_score(acts)
        toks = np.zeros(len(acts), int) if n_tokens is None else np.asarray(n_tokens)
        return [
            StageScore(
                stage_probabilities=[float(x) for x in probs[i]],
                estimated_stage=int(np.argmax(probs[i])),
                recency_score=float(rec[i]),
                p_late=float(late[i]),
                n_tokens=int(toks[i]),
                in_bank_sample=self.in_bank_sample(alias_of[i]),
                model_id=model_id,
                bank_id=self.manifest.bank_id,
                relation=self.relation,
                families=None,
            )
            for i in range(len(acts))
        ]
