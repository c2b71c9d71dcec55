"""The SDK's pure parts: which files a publish sends, pacing, dropping duplicates, dead-letter filters, and
the options the publisher gives its producer."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlstream.client import publisher
from dlstream.client.dedup import Deduplicator
from dlstream.client.dlq import StoredLetter, matches
from dlstream.client.files import content_type_for, expand_paths
from dlstream.client.pacing import Pacer
from dlstream.config.settings import Settings
from dlstream.domain.contract import Modality, dead_letter, new_request
from dlstream.domain.errors import ClientError, ContractError, DeadLetterReason

pytestmark = pytest.mark.unit


def test_folders_expand_to_their_files_of_the_modality_in_sorted_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/2.png", "a.jpg", "notes.txt", "c.PNG"):
        (tmp_path / name).write_bytes(b"x")
    files = expand_paths([tmp_path], Modality.IMAGE)
    assert [p.relative_to(tmp_path).as_posix() for p in files] == ["a.jpg", "b/2.png", "c.PNG"]


def test_a_file_named_explicitly_is_sent_whatever_its_suffix(tmp_path: Path) -> None:
    odd = tmp_path / "speech.bin"
    odd.write_bytes(b"RIFF")
    assert expand_paths([odd], Modality.AUDIO) == [odd]
    assert content_type_for(odd, Modality.AUDIO) == "audio/wav"


def test_missing_paths_and_empty_folders_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ClientError, match="does not exist"):
        expand_paths([tmp_path / "nope"], Modality.TEXT)
    with pytest.raises(ClientError, match="no text files"):
        expand_paths([tmp_path], Modality.TEXT)


def test_content_types_follow_the_suffix() -> None:
    assert content_type_for(Path("x.jpeg"), Modality.IMAGE) == "image/jpeg"
    assert content_type_for(Path("x.png"), Modality.IMAGE) == "image/png"
    assert content_type_for(Path("x.txt"), Modality.TEXT).startswith("text/plain")


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_pacer_spaces_events_by_one_over_the_rate() -> None:
    fake = FakeClock()
    pacer = Pacer(4.0, clock=fake.clock, sleep=fake.sleep)
    for _ in range(5):
        pacer.wait()
    assert fake.now == pytest.approx(101.0)
    assert fake.slept == pytest.approx([0.25] * 4)


def test_the_pacer_catches_up_after_a_slow_send_instead_of_slowing_down() -> None:
    fake = FakeClock()
    pacer = Pacer(10.0, clock=fake.clock, sleep=fake.sleep)
    pacer.wait()
    fake.now += 0.35  # a send that took 3.5 intervals
    pacer.wait()
    pacer.wait()
    pacer.wait()
    assert fake.slept == []
    pacer.wait()
    assert fake.slept == pytest.approx([0.05])


def test_no_rate_means_no_waiting_and_a_bad_rate_is_refused() -> None:
    fake = FakeClock()
    pacer = Pacer(None, clock=fake.clock, sleep=fake.sleep)
    pacer.wait()
    assert fake.slept == []
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)


def test_duplicates_are_dropped_within_a_bounded_window() -> None:
    seen = Deduplicator(capacity=2)
    assert [seen.first_time(k) for k in ("a", "b", "a", "c")] == [True, True, False, True]
    assert seen.duplicates == 1
    # "b" was the least recently seen of the three, so it left the window.
    assert seen.first_time("b") is True
    assert seen.first_time("c") is False


def _letter(reason: DeadLetterReason, with_id: bool = True) -> StoredLetter:
    event = new_request(Modality.TEXT, b"hi", content_type="text/plain", source="t")
    headers = event.to_kafka().headers
    if not with_id:
        headers = [(k, v) for k, v in headers if k != "ce_id"]
    letter = dead_letter(
        key=event.id.encode(),
        value=b"hi",
        headers=headers,
        error=ContractError(reason, "because"),
        source_topic="events.text",
        source_partition=3,
        source_offset=42,
    )
    return StoredLetter(partition=0, offset=7, letter=letter)


def test_dead_letters_filter_by_reason_and_request_id() -> None:
    stored = _letter(DeadLetterReason.UNKNOWN_MODEL)
    assert stored.request_id is not None
    assert matches(stored)
    assert matches(stored, reasons=["unknown-model"], ids=[stored.request_id])
    assert not matches(stored, reasons=["oversize"])
    assert not matches(stored, ids=["someone-else"])


def test_a_dead_letter_summary_names_source_and_reason_but_not_the_payload() -> None:
    summary = _letter(DeadLetterReason.OVERSIZE, with_id=False).summary()
    assert summary["request_id"] is None
    assert summary["reason"] == "oversize"
    assert (summary["source_topic"], summary["source_partition"], summary["source_offset"]) == (
        "events.text",
        3,
        42,
    )
    assert summary["payload_bytes"] == 2
    assert not any(k.startswith("dlq-") for k in summary["headers"])


def test_a_kafka_connect_that_times_out_closes_its_socket() -> None:
    import asyncio
    import socket
    import time

    import kafka.errors
    from kafka.net.inet import KafkaNetSocket

    from dlstream.adapters.kafka.sockets import close_failed_connects

    close_failed_connects()
    close_failed_connects()  # idempotent: wrapped once
    sock = socket.socket()
    with pytest.raises(kafka.errors.KafkaTimeoutError):
        asyncio.run(
            KafkaNetSocket().sock_connect(None, sock, ("127.0.0.1", 9), timeout_at=time.monotonic() - 1)
        )
    assert sock.fileno() == -1


def test_a_failed_kafka_tls_handshake_closes_its_transport() -> None:
    import asyncio
    import ssl

    from kafka.net.transport import KafkaSSLTransport

    from dlstream.adapters.kafka.sockets import close_failed_connects

    close_failed_connects()
    close_failed_connects()

    class Socket:
        def do_handshake(self) -> None:
            raise ssl.SSLCertVerificationError("certificate verify failed")

    class Transport:
        _sock = Socket()
        closed = False

        def close(self) -> None:
            self.closed = True

    transport = Transport()
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(KafkaSSLTransport.handshake(transport))
    assert transport.closed


def test_a_transport_closed_during_its_flush_closes_its_socket_when_the_io_loop_shuts_down() -> None:
    import socket

    from kafka.net.selector import NetworkSelector
    from kafka.net.transport import KafkaTCPTransport

    from dlstream.adapters.kafka.sockets import close_failed_connects

    close_failed_connects()
    close_failed_connects()
    ours, broker = socket.socketpair()
    try:
        ours.setblocking(False)
        net = NetworkSelector()
        transport = KafkaTCPTransport(net, ours)
        transport.write(b"a leave-group request")
        net._poll_once()  # the flush now waits for the socket to be writable
        transport.close()  # a client closing: the socket's close waits for the flush
        net.close()  # and the client's IO loop ends, cancelling the flush
        assert ours.fileno() == -1
    finally:
        ours.close()
        broker.close()


def test_bytes_read_just_before_the_broker_closes_are_delivered_before_the_close() -> None:
    import socket

    from kafka.net.transport import KafkaTCPTransport

    from dlstream.adapters.kafka.sockets import close_failed_connects

    close_failed_connects()
    close_failed_connects()
    ours, broker = socket.socketpair()
    try:
        ours.setblocking(False)
        broker.sendall(b"a SASL error response")
        broker.close()  # the refusing broker closes right after answering

        class Transport:
            _sock = ours

        transport = Transport()
        data, error = KafkaTCPTransport._sock_recv(transport)
        assert (data, error) == (b"a SASL error response", None)
        data, error = KafkaTCPTransport._sock_recv(transport)  # the next read sees the close
        assert data == b""
        assert error is not None
    finally:
        ours.close()


def test_the_publisher_lingers_as_long_as_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[dict[str, object]] = []

    class RecordingProducer:
        def __init__(self, **options: object) -> None:
            made.append(options)

    monkeypatch.setattr(publisher, "KafkaProducer", RecordingProducer)
    monkeypatch.delenv("DLSTREAM_KAFKA__PUBLISHER_LINGER_MS", raising=False)
    assert Settings().kafka.publisher_linger_ms == 5
    monkeypatch.setenv("DLSTREAM_KAFKA__PUBLISHER_LINGER_MS", "0")
    publisher.Publisher(Settings())
    assert made[0]["linger_ms"] == 0
    assert made[0]["acks"] == "all"
