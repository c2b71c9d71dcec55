"""Apache Kafka 4.x, single KRaft node, from the Maven Central jars resolved by ``kafka-pom.xml``."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import uuid
from importlib import resources
from pathlib import Path

from dlstream.adapters.kafka.admin import KafkaAdmin
from dlstream.config.settings import Settings
from dlstream.domain.errors import StackError
from dlstream.tools.stack.security import (
    BROKER,
    KAFKA_SUPER_USERS,
    SCRAM_MECHANISM,
    StackSecurity,
    kafka_grants,
    write_private,
)
from dlstream.tools.stack.service import StackService

_POM = "kafka-pom.xml"

_LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_dir}/server.log
appender.file.filePattern = {log_dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
appender.out.filter.threshold.type = ThresholdFilter
appender.out.filter.threshold.level = warn
rootLogger.level = info
rootLogger.appenderRef.file.ref = file
rootLogger.appenderRef.out.ref = out
logger.kafka.name = kafka
logger.kafka.level = info
logger.state.name = state.change.logger
logger.state.level = warn
"""


def _pom_text() -> str:
    return resources.files("dlstream.tools.stack").joinpath(_POM).read_text()


def jar_dir(cache_dir: Path) -> Path:
    """The folder of jars for the current pom (a changed pom resolves into a new folder)."""
    digest = hashlib.sha256(_pom_text().encode()).hexdigest()[:12]
    return cache_dir / "kafka" / digest


def install_kafka_jars(cache_dir: Path) -> Path:
    """Resolve the broker and its runtime dependencies with Maven into the cache (once)."""
    target = jar_dir(cache_dir)
    marker = target / ".complete"
    if marker.exists():
        return target
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError("Maven (mvn) is not installed; run `make setup` first")
    target.mkdir(parents=True, exist_ok=True)
    pom = target / "pom.xml"
    pom.write_text(_pom_text())
    libs = target / "libs"
    cmd = [
        mvn,
        "--batch-mode",
        "--quiet",
        "-f",
        str(pom),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"Maven could not resolve the Kafka jars:\n{result.stdout}\n{result.stderr}")
    if not any(libs.glob("kafka_2.13-*.jar")):
        raise StackError(f"Maven finished but no kafka_2.13 jar is in {libs}")
    marker.touch()
    return target


class KafkaBroker(StackService):
    """One combined broker+controller KRaft node."""

    name = "kafka"

    def __init__(self, run_dir: Path, settings: Settings, *, security: StackSecurity | None = None) -> None:
        super().__init__(run_dir)
        self.settings = settings
        self.security = security
        self.host, self.port = settings.kafka.first_host_port
        self.controller_port = settings.stack.kafka_controller_port or self.port + 1
        self.service_user = settings.stack.service_user

    def ports(self) -> dict[str, tuple[str, int]]:
        return {"broker": (self.host, self.port), "controller": (self.host, self.controller_port)}

    @property
    def _classpath(self) -> str:
        return str(self._jars / "*")

    @property
    def _cached_jars(self) -> Path:
        return jar_dir(self.settings.stack.cache_dir) / "libs"

    @property
    def _jars(self) -> Path:
        # The cache is in the starting user's home, which the service user may not enter.
        return self._cached_jars if self.run_as is None else self.dir / "libs"

    def _link_jars(self) -> None:
        """The cached jars in the broker's own folder (hard links; copies across file systems)."""
        if self._jars == self._cached_jars:
            return
        if self._jars.exists():
            shutil.rmtree(self._jars)
        self._jars.mkdir()
        for jar in self._cached_jars.iterdir():
            try:
                os.link(jar, self._jars / jar.name)
            except OSError:
                shutil.copy2(jar, self._jars / jar.name)

    @property
    def _properties(self) -> Path:
        return self.dir / "server.properties"

    def install(self) -> None:
        install_kafka_jars(self.settings.stack.cache_dir)
        if shutil.which("java") is None:
            raise StackError("java is not installed; run `make setup` first")

    def prepare(self) -> None:
        self.install()
        data = self.dir / "data"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.check_reachable()
        self._link_jars()
        (self.dir / "log4j2.properties").write_text(_LOG4J2.format(log_dir=self.dir))
        # The secure broker's own password is in it.
        write_private(
            self._properties,
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
                    *self._listeners(),
                    f"log.dirs={data}",
                    f"num.partitions={self.settings.kafka.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=6",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "delete.topic.enable=true",
                    "log.retention.hours=168",
                    # Room above the contract's payload limit: oversize events arrive and are dead-lettered.
                    "message.max.bytes=16777216",
                    "",
                ]
            ),
        )
        secure_marker = self.dir / "formatted-with-scram-users"
        if not (data / "meta.properties").exists():
            self._format(data)
            if self.security is not None:
                secure_marker.touch()
        elif self.security is not None and not secure_marker.exists():
            raise StackError(
                f"{data} holds a broker formatted without SCRAM users (a plaintext stack); stop it and "
                f"remove {self.dir}, or give the secure stack another run directory (DLSTREAM_STACK__RUN_DIR)"
            )

    def _listeners(self) -> list[str]:
        broker = f"{self.host}:{self.port}"
        controller = f"CONTROLLER://{self.host}:{self.controller_port}"
        if self.security is None:
            return [
                f"listeners=PLAINTEXT://{broker},{controller}",
                f"advertised.listeners=PLAINTEXT://{broker}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        sec = self.security
        password = sec.password(BROKER, "kafka")
        login = "org.apache.kafka.common.security.scram.ScramLoginModule"
        mechanism = SCRAM_MECHANISM.lower()
        return [
            f"listeners=SASL_SSL://{broker},{controller}",
            f"advertised.listeners=SASL_SSL://{broker}",
            "controller.listener.names=CONTROLLER",
            # The controller listener takes only the broker itself: TLS with its certificate as the client's.
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "listener.name.controller.ssl.client.auth=required",
            "inter.broker.listener.name=SASL_SSL",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f'listener.name.sasl_ssl.{mechanism}.sasl.jaas.config={login} required username="{BROKER}" '
            f'password="{password}";',
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.own_copy(sec.keystore_path)}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.own_copy(sec.ca_path)}",
            # Only what an ACL allows (kafka_grants); the super users may do anything.
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=" + ";".join(f"User:{user}" for user in KAFKA_SUPER_USERS),
        ]

    def _format(self, data: Path) -> None:
        # --standalone makes this node the whole dynamic controller quorum.
        arguments = [
            *self.settings.stack.kafka_jvm_options,
            "-cp",
            self._classpath,
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "kafka.tools.StorageTool",
            "format",
            # One argument with "=": a generated id may begin with "-", which argparse takes for an option.
            f"--cluster-id={_cluster_id()}",
            "--config",
            str(self._properties),
            "--standalone",
        ]
        if self.security is not None:
            arguments += self.security.kafka_scram_arguments()
        # The SCRAM passwords go through an argument file (mode 0600), so they are on no command line.
        argfile = self.dir / "format.args"
        write_private(argfile, "".join(f'"{argument}"\n' for argument in arguments))
        try:
            result = subprocess.run(
                ["java", f"@{argfile}"], capture_output=True, text=True, check=False, umask=0o077
            )
        finally:
            argfile.unlink()
        if result.returncode != 0:
            raise StackError(f"formatting Kafka storage in {data} failed:\n{result.stdout}{result.stderr}")

    def argv(self) -> list[str]:
        heap = self.settings.stack.kafka_heap
        return self.as_service_user(
            [
                "java",
                f"-Xmx{heap}",
                f"-Xms{heap}",
                *self.settings.stack.kafka_jvm_options,
                "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.dir}",
                "-cp",
                self._classpath,
                "kafka.Kafka",
                str(self._properties),
            ]
        )

    def healthy(self) -> bool:
        return KafkaAdmin(self.settings.kafka).broker_ready()

    def after_healthy(self) -> None:
        admin = KafkaAdmin(self.settings.kafka)
        admin.ensure_topics(
            self.settings.topics.all(),
            partitions=self.settings.kafka.partitions,
            replication_factor=self.settings.kafka.replication_factor,
        )
        if self.security is not None:
            admin.grant(kafka_grants(self.settings))


def _cluster_id() -> str:
    # Kafka cluster ids are 16 random bytes in URL-safe base64 without padding.
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
