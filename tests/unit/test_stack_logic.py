"""Pure parts of the stack: which models Triton loads, payload lengths, log tails."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from dlstream.config.settings import load_settings
from dlstream.models.payloads import payload_lengths
from dlstream.tools.stack.local_stack import hand_over, tail
from dlstream.tools.stack.process import mask, scrub_arguments
from dlstream.tools.stack.service import unreachable_part
from dlstream.tools.stack.triton_server import TritonServer, loadable_models

pytestmark = pytest.mark.unit


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


def test_a_secret_argument_is_masked_in_the_record_and_scrubbed_from_the_running_process() -> None:
    assert mask("--key=s3cret --other=s3cret", ["s3cret", ""]) == "--key=****** --other=******"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "key=s3cret"])
    try:
        deadline = time.monotonic() + 30
        while b"s3cret" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert scrub_arguments(proc.pid, ["s3cret"])
        assert Path(f"/proc/{proc.pid}/cmdline").read_bytes().endswith(b"key=******\0")
        assert not scrub_arguments(proc.pid, ["s3cret"])  # nothing left to scrub
        assert proc.poll() is None  # the process runs on
    finally:
        proc.kill()
        proc.wait()


def test_the_first_closed_folder_on_the_way_is_named() -> None:
    top = Path(tempfile.mkdtemp(prefix="dlstream-reach-"))  # pytest's own folders are closed to others
    try:
        outer = top / "outer"
        inner = outer / "inner"
        inner.mkdir(parents=True)
        top.chmod(0o711)
        nobody = 65534
        assert unreachable_part(inner / "x", nobody, nobody) is None
        outer.chmod(0o700)
        assert unreachable_part(inner / "x", nobody, nobody) == outer
    finally:
        shutil.rmtree(top)


def test_triton_runs_with_a_private_dev_shm_and_its_control_api_behind_the_key(tmp_path: Path) -> None:
    repository = tmp_path / "repo"
    repository.mkdir()
    settings = load_settings(environment="test", stack={"service_user": ""})
    server = TritonServer(tmp_path, settings, repository=repository, control_key="k3y")
    argv = server.argv()
    assert argv[0] == "unshare"
    assert "--mount" in argv
    assert "mount -t tmpfs" in argv[argv.index("-c") + 1]
    restricted = "model-repository,shared-memory,logging,trace:dlstream-control-key=k3y"
    assert f"--http-restricted-api={restricted}" in argv
    assert f"--grpc-restricted-protocol={restricted}" in argv
    assert server.secret_arguments() == ["k3y"]
    open_api = TritonServer(tmp_path, settings, repository=repository).argv()
    assert not any("restricted" in arg for arg in open_api)


@pytest.mark.skipif(os.geteuid() != 0, reason="handing a folder to another user takes root")
def test_a_folder_is_handed_over_but_files_linked_from_elsewhere_keep_their_owner(tmp_path: Path) -> None:
    cached = tmp_path / "cache.jar"
    cached.write_bytes(b"jar")
    folder = tmp_path / "kafka"
    (folder / "libs").mkdir(parents=True)
    os.link(cached, folder / "libs" / "cache.jar")
    (folder / "server.log").write_text("log")
    nobody = 65534
    hand_over(folder, nobody, nobody)
    assert (folder / "server.log").stat().st_uid == nobody
    assert (folder / "libs").stat().st_uid == nobody
    assert cached.stat().st_uid == 0  # the service user cannot change what another user runs
