"""Pure parts of the stack: which models Triton loads, payload lengths, log tails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.common.payloads import payload_lengths
from services.stack.local_stack import tail
from services.stack.triton_server import loadable_models


def test_only_models_with_a_config_and_a_built_version_are_loaded(tmp_path: Path) -> None:
    (tmp_path / "built" / "1").mkdir(parents=True)
    (tmp_path / "built" / "config.pbtxt").write_text("name: 'built'")
    (tmp_path / "built" / "1" / "model.py").write_text("")
    (tmp_path / "unbuilt" / "1").mkdir(parents=True)
    (tmp_path / "unbuilt" / "config.pbtxt").write_text("name: 'unbuilt'")
    (tmp_path / "noconfig" / "1").mkdir(parents=True)
    (tmp_path / "noconfig" / "1" / "model.pt").write_text("x")
    (tmp_path / "README.md").write_text("not a model")
    assert loadable_models(tmp_path) == ["built"]


def test_the_committed_repository_always_has_the_healthcheck_model() -> None:
    repo = Path(__file__).resolve().parents[2] / "model_repo"
    assert "healthcheck" in loadable_models(repo)


def test_payload_lengths_of_a_bytes_batch() -> None:
    batch = np.array([[b""], [b"abc"], ["é".encode()]], dtype=object)
    assert payload_lengths(batch).tolist() == [[0], [3], [2]]


def test_payload_lengths_refuses_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\[batch, 1\]"):
        payload_lengths(np.array([b"a", b"b"], dtype=object))


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("".join(f"line {i}\n" for i in range(100)))
    assert tail(log, 3) == "line 97\nline 98\nline 99"
    assert tail(tmp_path / "missing.log", 3) == ""
