"""Content hashes: the model fingerprint a bank is bound to, and per-file hashes for manifests."""

from __future__ import annotations

import hashlib
from pathlib import Path

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
