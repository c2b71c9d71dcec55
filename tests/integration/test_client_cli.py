"""The client CLI against a real worker: publish files, subscribe by id, list and replay dead letters."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality
from tests.integration.conftest import TopicFactory
from tests.integration.triton_models import unloaded
from tests.integration.workers import Worker, deployment_settings, dlstream, held_out_events

pytestmark = pytest.mark.integration


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_publish_subscribe_and_replay_a_dead_letter_after_the_fix(
    settings: Settings, topics: TopicFactory, group_id: str, tmp_path: Path
) -> None:
    # While imagenet is unloaded, an event asking for it waits the bounded time, then is dead-lettered.
    deployed = deployment_settings(settings, topics, group_id, model_wait_s=3.0)
    folder = tmp_path / "digits"
    folder.mkdir()
    samples = held_out_events(Modality.IMAGE, 20)
    for i, sample in enumerate(samples):
        (folder / f"{i:02d}.png").write_bytes(sample.event.data)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    photo = tmp_path / "photo.png"
    photo.write_bytes(samples[0].event.data)

    worker = Worker(deployed, tmp_path / "worker-1.log").start()
    try:
        with unloaded(settings.triton, "imagenet"):
            published = json_lines(
                dlstream(deployed, "publish", "image", str(folder), "--rate", "50", "--print-ids").stdout
            )
            assert len(published) == 21
            ids = {str(p["id"]): str(p["path"]) for p in published}
            asked = json_lines(
                dlstream(
                    deployed, "publish", "image", str(photo), "--model", "imagenet", "--print-ids"
                ).stdout
            )
            imagenet_id = str(asked[0]["id"])

            good = [i for i, path in ids.items() if not path.endswith("broken.png")]
            args = ["subscribe", "--modality", "image", "--follow", "--idle-timeout", "60"]
            received = json_lines(dlstream(deployed, *args, *(f"--id={i}" for i in good)).stdout)
            assert sorted(str(p["subject"]) for p in received) == sorted(good)
            true = {s.event.id: s.label for s in samples}
            by_path = {ids[str(p["subject"])]: p for p in received}
            correct = sum(
                int(str(by_path[str(folder / f"{i:02d}.png")]["data"]["label"])) == true[s.event.id]  # type: ignore[index]
                for i, s in enumerate(samples)
            )
            assert correct >= 18

            letters: list[dict[str, object]] = []
            deadline = time.monotonic() + 90
            while len(letters) < 2 and time.monotonic() < deadline:
                letters = json_lines(dlstream(deployed, "dlq", "list").stdout)
                time.sleep(1)
            reasons = {str(letter["request_id"]): letter["reason"] for letter in letters}
            broken_id = next(i for i, path in ids.items() if path.endswith("broken.png"))
            assert reasons == {broken_id: "undecodable-payload", imagenet_id: "model-unavailable"}
        assert worker.terminate() == 0
    finally:
        worker.stop()

    # The fix: imagenet is served again. Replaying sends the original event back, with its id.
    worker = Worker(deployed, tmp_path / "worker-2.log").start()
    try:
        replay = ["dlq", "replay", "--reason", "model-unavailable"]
        dry = json_lines(dlstream(deployed, *replay, "--dry-run").stdout)
        assert [d["request_id"] for d in dry] == [imagenet_id]
        dlstream(deployed, *replay)
        replayed = json_lines(
            dlstream(deployed, "subscribe", "--follow", "--idle-timeout", "60", f"--id={imagenet_id}").stdout
        )
        assert len(replayed) == 1
        assert replayed[0]["data"]["model"] == "imagenet"  # type: ignore[index]
    finally:
        worker.stop()
