"""A later finetune shipped as a PEFT adapter (LoRA and the kinds PEFT can merge): folded into
the bank's reference once, then audited as any descendant.

Auditors are often handed an adapter rather than merged weights. Everything downstream
(fingerprint, lineage, capture, the reference pass) reads a plain `save_pretrained` directory,
so the adapter is merged here, on the CPU, into a content-addressed directory under the artifacts
home, `merged/NAME-DIGEST`: the digest covers the adapter's files and the reference's weights
fingerprint, so the same adapter on the same reference is merged once and any change to either
merges again. The merged directory carries the reference's own config and tokenizer files, byte
for byte, so its lineage is the reference's by construction; `merged_from.json` records what was
merged and the result's fingerprint, which is checked each time the directory is reused.

Refused, with one error each: an adapter whose `base_model_name_or_path` is a local model with
other weights than the bank's reference (it was trained on another model), and an adapter that
brings its own tokenizer files differing from the reference's (another lineage).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from probe_bank.errors import UserError
from probe_bank.fingerprint import (
    TOKENIZER_FILES,
    WEIGHT_SUFFIXES,
    model_fingerprint,
    tokenizer_digests,
)
from probe_bank.home import home_dir
from probe_bank.schemas import AdapterMerge, BankManifest

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
#: The record a merged directory carries (`AdapterMerge`).
MERGED_FROM = "merged_from.json"
#: Where merged adapters are kept, under the artifacts home.
MERGED = "merged"
#: Files of the reference copied over the merged weights' own, so lineage cannot drift.
_REFERENCE_FILES = ("config.json", "generation_config.json", *TOKENIZER_FILES)


def is_adapter_dir(path: str | Path) -> bool:
    """A PEFT adapter directory: an adapter config and no model config of its own."""
    root = Path(path)
    return (root / ADAPTER_CONFIG).is_file() and not (root / "config.json").is_file()


def adapter_digest(adapter_dir: Path) -> str:
    """SHA-256 over the adapter's config and weight files (sorted names, then their bytes)."""
    files = [adapter_dir / ADAPTER_CONFIG] + sorted(
        p for p in adapter_dir.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES
    )
    if len(files) == 1:
        raise UserError(
            f"adapter {adapter_dir} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})"
        )
    h = hashlib.sha256(b"adapter-v1\0")
    for p in files:
        h.update(p.name.encode() + b"\0")
        h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def _check_adapter(adapter_dir: Path, manifest: BankManifest) -> tuple[str, str | None]:
    """The adapter's kind and declared base; refused when it was trained on a local model with
    other weights than the reference, or brings a tokenizer the reference does not have."""
    from peft import PeftConfig

    try:
        config = PeftConfig.from_pretrained(str(adapter_dir))
    except (OSError, ValueError, TypeError) as exc:
        raise UserError(
            f"{adapter_dir / ADAPTER_CONFIG} is not a valid PEFT config: {exc}"
        ) from None
    base = config.base_model_name_or_path
    local = (
        bool(base)
        and Path(base).is_dir()
        and any(p.suffix in WEIGHT_SUFFIXES for p in Path(base).iterdir())
    )
    if local:
        # the reference's own directory needs no hashing: its fingerprint is the bank's
        same = Path(base).resolve() == Path(manifest.model_path).resolve()
        if not same and model_fingerprint(base) != manifest.model_fingerprint:
            raise UserError(
                f"adapter {adapter_dir} was trained on {base}, whose weights are not this bank's "
                f"reference ({manifest.model_path}): merge it onto its own base and audit that "
                "model, if it is of this bank's lineage"
            )
    elif base:
        log.warning(
            "adapter %s names its base %r, which is not a local model: assuming it was trained "
            "on this bank's reference %s",
            adapter_dir,
            base,
            manifest.model_path,
        )
    own = tokenizer_digests(adapter_dir)
    ref = tokenizer_digests(manifest.model_path)
    changed = sorted(name for name, digest in own.items() if ref.get(name) != digest)
    if changed:
        raise UserError(
            f"adapter {adapter_dir} brings its own tokenizer ({', '.join(changed)} differ from "
            "the reference's): it is not of this bank's lineage"
        )
    return str(getattr(config.peft_type, "value", config.peft_type)), base


def _merge(adapter_dir: Path, reference: Path, out: Path) -> None:
    """The adapter folded into the reference's weights, saved to `out` with the reference's own
    config and tokenizer files."""
    from peft import PeftModel

    from probe_bank.modeling import load_model

    model, _ = load_model(reference, "cpu")
    try:
        merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    except (ValueError, RuntimeError, KeyError) as exc:
        raise UserError(f"cannot merge adapter {adapter_dir} onto {reference}: {exc}") from None
    merged.save_pretrained(out)
    for name in _REFERENCE_FILES:
        if (reference / name).is_file():
            shutil.copyfile(reference / name, out / name)


def _read_record(merged: Path) -> AdapterMerge:
    try:
        return AdapterMerge.model_validate_json((merged / MERGED_FROM).read_text("utf-8"))
    except (OSError, ValidationError) as exc:
        raise UserError(
            f"{merged / MERGED_FROM} is missing or invalid ({exc}); delete {merged} to merge again"
        ) from None


def merged_adapter_dir(
    adapter_dir: str | Path, manifest: BankManifest, home: Path | None = None
) -> tuple[Path, str]:
    """The model directory of `adapter_dir` merged onto the bank's reference, under `home`
    (default the artifacts home), made on first use and reused after, with the fingerprint its
    weights must have (its record's: the caller, `ProbeBank.load`, hashes them anyway and
    refuses a mismatch with `check_merged`)."""
    adapter = Path(adapter_dir).resolve()
    reference = Path(manifest.model_path)
    if not (reference / "config.json").is_file():
        raise UserError(
            f"an adapter is merged onto the bank's reference, which is not at {reference} any more"
        )
    peft_type, base = _check_adapter(adapter, manifest)
    digest = adapter_digest(adapter)
    key = hashlib.sha256(f"{digest}\0{manifest.model_fingerprint}".encode()).hexdigest()
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", adapter.name) or "adapter"
    merged = (home if home is not None else home_dir()) / MERGED / f"{name}-{key[:12]}"
    if not merged.is_dir():
        tmp = merged.parent / f".{merged.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        log.info("merging adapter %s onto %s -> %s", adapter, reference, merged)
        _merge(adapter, reference, tmp)
        from peft import __version__ as peft_version

        record = AdapterMerge(
            adapter_path=str(adapter),
            adapter_sha256=digest,
            peft_type=peft_type,
            adapter_base=base,
            base_path=str(reference),
            base_fingerprint=manifest.model_fingerprint,
            merged_fingerprint=model_fingerprint(tmp),
            peft_version=peft_version,
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        (tmp / MERGED_FROM).write_text(record.model_dump_json(indent=2), "utf-8")
        try:
            tmp.rename(merged)
        except OSError:  # another process (an `accelerate launch` shard) published it first
            shutil.rmtree(tmp, ignore_errors=True)
    record = _read_record(merged)
    if record.adapter_sha256 != digest or record.base_fingerprint != manifest.model_fingerprint:
        _altered(merged)
    return merged, record.merged_fingerprint


def check_merged(merged: Path, weights: str, expected: str) -> None:
    """Refuse a merged directory whose weights (`weights`, their fingerprint) are not the ones
    its record names."""
    if weights != expected:
        _altered(merged)


def _altered(merged: Path) -> None:
    raise UserError(
        f"the merged adapter at {merged} does not match its record {MERGED_FROM} (altered "
        "after it was merged); delete it to merge again"
    )
