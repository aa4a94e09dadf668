"""Content hashes: what model a bank was fitted on, its lineage, and per-file hashes.

Three digests of a model directory, from narrow to wide:
- `model_fingerprint`: the weight files only (what produced the activations);
- `model_identity`: weights, the architecture config and the tokenizer files together (a model
  served under a bank's ids is exactly the one it names: an edited `rms_norm_eps` is another
  model);
- `lineage_key`: the architecture config and the tokenizer files, not the weights: a model of the
  same lineage is the reference finetuned further (a descendant), which a bank may audit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from probe_bank.errors import UserError

#: Files that hold weights in a `save_pretrained` directory.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CHUNK = 1 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 hex digest of one file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


#: config.json keys that say nothing about the function a model computes (bookkeeping, caching,
#: the storage dtype): they are left out of the lineage key.
CONFIG_BOOKKEEPING = frozenset(
    {"_name_or_path", "transformers_version", "dtype", "torch_dtype", "use_cache", "architectures"}
)
#: Tokenizer files of a `save_pretrained` directory (whichever exist are hashed).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


def _json_without(path: Path, bookkeeping: frozenset[str]) -> dict[str, Any]:
    """A JSON object file without the given keys (sorted, so it hashes canonically)."""
    try:
        config = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} is not a JSON object")
    return {k: config[k] for k in sorted(config) if k not in bookkeeping}


def architecture_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json without the bookkeeping keys."""
    return _json_without(Path(model_dir) / "config.json", CONFIG_BOOKKEEPING)


#: tokenizer_config.json keys that record how a tokenizer was *loaded* (transformers >= 5 writes
#: `from_pretrained`'s hub flags into the saved file: the same tokenizer saved under
#: `HF_HUB_OFFLINE=1` and without it differs only here), not what it computes.
TOKENIZER_BOOKKEEPING = frozenset(
    {
        "local_files_only",
        "is_local",
        "name_or_path",
        "_commit_hash",
        "cache_dir",
        "revision",
        "token",
        "force_download",
        "proxies",
        "subfolder",
        "transformers_version",
    }
)


def _tokenizer_digest(path: Path, version: int) -> str:
    """A tokenizer file's hash; from lineage v2 on, a JSON config file's without loader keys."""
    if version < 2 or path.name != "tokenizer_config.json":
        return file_sha256(path)
    kept = _json_without(path, TOKENIZER_BOOKKEEPING)
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


#: The lineage key's current version; banks built before v2 hold v1 keys (raw tokenizer files).
LINEAGE_VERSION = 2


def tokenizer_digests(model_dir: str | Path, version: int = LINEAGE_VERSION) -> dict[str, str]:
    """Tokenizer file name -> its digest, for the `TOKENIZER_FILES` the directory holds."""
    root = Path(model_dir)
    return {
        name: _tokenizer_digest(root / name, version)
        for name in TOKENIZER_FILES
        if (root / name).is_file()
    }


def lineage_key(model_dir: str | Path, version: int = LINEAGE_VERSION) -> str:
    """SHA-256 over the architecture config and the tokenizer files (not the weights)."""
    root = Path(model_dir)
    h = hashlib.sha256(f"lineage-v{version}\0".encode())
    h.update(json.dumps(architecture_config(root), sort_keys=True).encode() + b"\0")
    for name, digest in tokenizer_digests(root, version).items():
        h.update(name.encode() + b"\0" + digest.encode() + b"\0")
    return h.hexdigest()


def model_identity(model_dir: str | Path) -> str:
    """SHA-256 over the weights fingerprint and the lineage key: this exact model."""
    combined = f"identity-v1\0{model_fingerprint(model_dir)}\0{lineage_key(model_dir)}"
    return hashlib.sha256(combined.encode()).hexdigest()


def model_fingerprint(model_dir: str | Path) -> str:
    """SHA-256 over the weight files of a model directory (sorted names, then their bytes).

    Tokenizer and config files are not part of it: the fingerprint says which weights produced
    the activations a bank was fitted on.
    """
    root = Path(model_dir)
    if not root.is_dir():
        raise UserError(f"model directory {root} does not exist")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not files:
        raise UserError(f"{root} holds no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                h.update(chunk)
    return h.hexdigest()
