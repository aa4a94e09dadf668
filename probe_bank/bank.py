"""BANK_DIR persistence: probe weights in safetensors (no code on load), a manifest of hashes.

`ProbeBank.load` re-hashes every file and the model's weights, and refuses a bank whose files
were changed or that was fitted on other weights, so a served verdict is always the fitted one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256, model_fingerprint
from probe_bank.schemas import SCHEMA_VERSION, BankManifest, ItemScore

MANIFEST = "manifest.json"
WEIGHTS = "probes.safetensors"


@dataclass
class ProbeWeights:
    """The fitted probes in closed form (standardisation folded in at predict time).

    stage: multinomial logistic regression over classes 0..6, divided by a fitted temperature;
    late: logistic early (1-3) vs late (4-6); recency: linear regression onto stage 1..6;
    pairwise: the 15 stage-pair probes (i < j, later stage positive), for the report and audits.
    """

    mean: np.ndarray
    scale: np.ndarray
    stage_coef: np.ndarray
    stage_intercept: np.ndarray
    temperature: float
    late_coef: np.ndarray
    late_intercept: float
    recency_coef: np.ndarray
    recency_intercept: float
    pairwise_coef: np.ndarray
    pairwise_intercept: np.ndarray

    def to_tensors(self) -> dict[str, np.ndarray]:
        """Flat name -> float32 array mapping for safetensors."""
        f = np.float32
        return {
            "mean": self.mean.astype(f),
            "scale": self.scale.astype(f),
            "stage.coef": self.stage_coef.astype(f),
            "stage.intercept": self.stage_intercept.astype(f),
            "stage.temperature": np.asarray([self.temperature], f),
            "late.coef": self.late_coef.astype(f),
            "late.intercept": np.asarray([self.late_intercept], f),
            "recency.coef": self.recency_coef.astype(f),
            "recency.intercept": np.asarray([self.recency_intercept], f),
            "pairwise.coef": self.pairwise_coef.astype(f),
            "pairwise.intercept": self.pairwise_intercept.astype(f),
        }

    @classmethod
    def from_tensors(cls, t: dict[str, np.ndarray]) -> ProbeWeights:
        """Inverse of `to_tensors`; a missing tensor raises KeyError."""
        return cls(
            mean=t["mean"],
            scale=t["scale"],
            stage_coef=t["stage.coef"],
            stage_intercept=t["stage.intercept"],
            temperature=float(t["stage.temperature"][0]),
            late_coef=t["late.coef"],
            late_intercept=float(t["late.intercept"][0]),
            recency_coef=t["recency.coef"],
            recency_intercept=float(t["recency.intercept"][0]),
            pairwise_coef=t["pairwise.coef"],
            pairwise_intercept=t["pairwise.intercept"],
        )

    def standardise(self, acts: np.ndarray) -> np.ndarray:
        return (np.asarray(acts, np.float64) - self.mean) / self.scale

    def stage_probabilities(self, acts: np.ndarray) -> np.ndarray:
        """Calibrated [n, 7] probabilities (temperature-scaled softmax)."""
        logits = self.standardise(acts) @ self.stage_coef.T + self.stage_intercept
        logits = logits / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def p_late(self, acts: np.ndarray) -> np.ndarray:
        z = self.standardise(acts) @ self.late_coef + self.late_intercept
        return 1.0 / (1.0 + np.exp(-z))

    def recency(self, acts: np.ndarray) -> np.ndarray:
        return self.standardise(acts) @ self.recency_coef + self.recency_intercept


def manifest_digest(manifest: BankManifest) -> str:
    """Bank id: a hash of every manifest field but itself, so an edited manifest is detected."""
    import hashlib

    body = manifest.model_dump(mode="json", exclude={"bank_id"})
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "bank-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def save_bank(
    bank_dir: str | Path,
    weights: ProbeWeights,
    manifest_fields: dict,
    extra_json: dict[str, object],
) -> BankManifest:
    """Write weights, the extra JSON files (metrics, sweep, ...) and finally the manifest."""
    from safetensors.numpy import save_file

    root = Path(bank_dir)
    root.mkdir(parents=True, exist_ok=True)
    save_file(weights.to_tensors(), str(root / WEIGHTS))
    for name, obj in extra_json.items():
        (root / name).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", "utf-8")
    files = {name: file_sha256(root / name) for name in [WEIGHTS, *sorted(extra_json)]}
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


def verify_model(manifest: BankManifest, model_dir: str | Path) -> None:
    """The model's weights are the ones the bank was fitted on."""
    got = model_fingerprint(model_dir)
    if got != manifest.model_fingerprint:
        raise UserError(
            f"model {model_dir} (fingerprint {got[:12]}) is not the model this bank was built on "
            f"(fingerprint {manifest.model_fingerprint[:12]})"
        )


class ProbeBank:
    """A loaded, verified bank: manifest + probe weights."""

    def __init__(self, bank_dir: Path, manifest: BankManifest, weights: ProbeWeights) -> None:
        self.bank_dir = bank_dir
        self.manifest = manifest
        self.weights = weights

    @classmethod
    def load(cls, bank_dir: str | Path, *, model_dir: str | Path | None = None) -> ProbeBank:
        """Verify every hash and the model fingerprint (`model_dir` or the manifest's path)."""
        from safetensors import SafetensorError
        from safetensors.numpy import load_file

        root = Path(bank_dir)
        manifest = read_manifest(root)
        verify_files(root, manifest)
        verify_model(manifest, model_dir if model_dir is not None else manifest.model_path)
        try:
            weights = ProbeWeights.from_tensors(load_file(str(root / WEIGHTS)))
        except (KeyError, SafetensorError) as exc:
            raise UserError(f"{root / WEIGHTS} is not a valid probe file: {exc}") from None
        if weights.mean.shape != (manifest.d_model,):
            raise UserError(f"{root / WEIGHTS}: width does not match d_model={manifest.d_model}")
        return cls(root, manifest, weights)

    def metrics(self) -> dict:
        """metrics.json of this bank (already hash-verified at load)."""
        return json.loads((self.bank_dir / "metrics.json").read_text("utf-8"))

    def predict(self, acts: np.ndarray, n_tokens: np.ndarray | None = None) -> list[ItemScore]:
        """Scores for activations [n, d] taken at the manifest's layer and position."""
        acts = np.asarray(acts)
        if acts.ndim != 2 or acts.shape[1] != self.manifest.d_model:
            raise UserError(f"expected activations [n, {self.manifest.d_model}], got {acts.shape}")
        probs = self.weights.stage_probabilities(acts)
        late = self.weights.p_late(acts)
        rec = self.weights.recency(acts)
        toks = np.zeros(len(acts), int) if n_tokens is None else np.asarray(n_tokens)
        return [
            ItemScore(
                stage_probabilities=[float(x) for x in probs[i]],
                estimated_stage=int(np.argmax(probs[i])),
                recency_score=float(rec[i]),
                p_late=float(late[i]),
                n_tokens=int(toks[i]),
            )
            for i in range(len(acts))
        ]
