"""Kafka adapter: client options from settings and topic administration with kafka-python.

Library exceptions are translated here into :class:`TransientError`, so callers never import kafka errors.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, Literal

from kafka import KafkaAdminClient
from kafka import errors as kafka_errors
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.errors import TopicAlreadyExistsError, UnknownTopicOrPartitionError

from dlstream.adapters.kafka.bootstrap import bootstrapped
from dlstream.adapters.kafka.connection import client_options
from dlstream.adapters.kafka.refusals import explained_kafka_errors
from dlstream.config.settings import KafkaSettings
from dlstream.domain.errors import DlstreamError, TransientError
from dlstream.runtime.net import port_open

Operation = Literal["read", "write", "create"]


@dataclass(frozen=True)
class KafkaGrant:
    """One ACL that allows ``principal`` (a SASL user name) ``operation`` on a topic or a consumer group,
    named exactly or by prefix. Kafka's READ and WRITE imply DESCRIBE."""

    principal: str
    resource: Literal["topic", "group"]
    name: str
    operation: Operation
    prefixed: bool = False


class KafkaAdmin:
    """Topic administration; every method opens and closes its own short-lived client."""

    def __init__(self, settings: KafkaSettings, *, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    @contextmanager
    def _client(self) -> Iterator[Any]:
        with explained_kafka_errors(
            self.settings, f"Kafka at {self.settings.bootstrap_servers} is unreachable"
        ) as refusals:
            client = bootstrapped(
                lambda bootstrap: KafkaAdminClient(
                    **client_options(self.settings),
                    **bootstrap,
                    request_timeout_ms=int(self.timeout_s * 1000),
                    client_id="dlstream-admin",
                ),
                refusals,
                self.timeout_s,
            )
        try:
            with explained_kafka_errors(self.settings, "Kafka admin request failed"):
                yield client
        finally:
            client.close()

    def broker_ready(self) -> bool:
        """True when a broker answers metadata requests and the cluster has an active controller."""
        # A plain TCP probe first: kafka-python retries a refused bootstrap for seconds before failing.
        host, port = self.settings.first_host_port
        if not port_open(host, port):
            return False
        try:
            with self._client() as client:
                cluster = client.describe_cluster()
        except DlstreamError:  # a refusal too: a starting broker may not know its SCRAM users yet
            return False
        return bool(cluster.get("brokers")) and cluster.get("controller_id", -1) not in (None, -1)

    def list_topics(self) -> set[str]:
        """Names of the existing topics."""
        with self._client() as client:
            return set(client.list_topics())

    def ensure_topics(self, names: Iterable[str], *, partitions: int, replication_factor: int = 1) -> None:
        """Create the topics that do not exist yet, and wait until their metadata is visible."""
        wanted = list(dict.fromkeys(names))
        with self._client() as client:
            missing = [n for n in wanted if n not in set(client.list_topics())]
            if missing:
                new = [NewTopic(n, partitions, replication_factor) for n in missing]
                with suppress(TopicAlreadyExistsError):
                    client.create_topics(new, timeout_ms=int(self.timeout_s * 1000))
            self._wait_visible(client, wanted)

    def topic_configs(self, topic: str) -> dict[str, str | None]:
        """The configuration of ``topic`` (every key, default or not).

        kafka-python's ``describe_configs`` drops a resource's error and answers an empty configuration
        when the broker denies it; the error code is read here, so a denial is :class:`AccessDenied`.

        Raises:
            AccessDenied: the broker denied this user the right to describe the topic's configuration.
            TransientError: any other failure, the topic's own error included.
        """
        with self._client() as client:
            resource = ConfigResource(ConfigResourceType.TOPIC, topic)
            request = client._describe_configs_request([resource], False)
            response = client._manager.run(client._manager.send, request)
            (result,) = response.results
            if result.error_code:
                error = kafka_errors.for_code(result.error_code)(result.error_message or topic)
                raise error
            return {c.to_dict()["name"]: c.to_dict()["value"] for c in result.configs}

    def delete_topics(self, names: Iterable[str]) -> None:
        """Delete the topics that exist; unknown names are ignored."""
        with self._client() as client:
            existing = set(client.list_topics())
            doomed = [n for n in names if n in existing]
            if doomed:
                with suppress(UnknownTopicOrPartitionError):
                    client.delete_topics(doomed, timeout_ms=int(self.timeout_s * 1000))

    def grant(self, grants: Iterable[KafkaGrant]) -> None:
        """Create these ACLs (those that exist already are left as they are).

        Raises:
            AccessDenied: this client may not alter ACLs (it is no super user).
            TransientError: the broker failed to create an ACL for another reason.
        """
        from kafka.admin import (
            ACL,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            ResourcePattern,
            ResourceType,
        )

        acls = [
            ACL(
                principal=f"User:{g.principal}",
                host="*",
                operation=ACLOperation[g.operation.upper()],
                permission_type=ACLPermissionType.ALLOW,
                resource_pattern=ResourcePattern(
                    ResourceType[g.resource.upper()],
                    g.name,
                    ACLResourcePatternType.PREFIXED if g.prefixed else ACLResourcePatternType.LITERAL,
                ),
            )
            for g in grants
        ]
        with self._client() as client:
            failed = client.create_acls(acls)["failed"]
            if failed:  # raised in here, so that a refusal is explained like any other
                raise failed[0](f"{len(failed)} of {len(acls)} ACLs not created")

    def partition_count(self, topic: str) -> int:
        """Number of partitions of ``topic``."""
        with self._client() as client:
            described = client.describe_topics([topic])
        return len(described[0]["partitions"])

    def group_assignment(self, group_id: str) -> tuple[str, list[dict[str, list[int]]]]:
        """The consumer group's state (``Stable``, ``PreparingRebalance``, ``Empty``...) and, per member, the
        partitions it was assigned by topic."""
        with self._client() as client:
            group = client.describe_groups([group_id])[group_id]
        members = []
        for member in group.get("members") or []:
            assignment = member.get("member_assignment") or {}
            assigned = assignment.get("assigned_partitions", []) if isinstance(assignment, dict) else []
            members.append({a["topic"]: list(a["partitions"]) for a in assigned})
        return str(group.get("group_state", "")), members

    def _wait_visible(self, client: Any, names: list[str]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while True:
            described = client.describe_topics(names)
            ready = [t for t in described if t.get("error_code", 0) == 0 and t.get("partitions")]
            if len(ready) == len(names):
                return
            if time.monotonic() > deadline:
                raise TransientError(f"topics {names} not visible after {self.timeout_s}s")
            time.sleep(0.2)
