"""The one typed settings tree of dlstream.

Every value can be set from the environment with the prefix ``DLSTREAM_`` and ``__`` between a group and its
field, e.g. ``DLSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092``. Nothing here is read at import time: call
:func:`load_settings` once in an entry point and pass the result down.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

Environment = Literal["development", "test", "production"]


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """How clients reach Kafka. The local stack binds its broker to the first host:port listed here."""

    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list of brokers.")
    security_protocol: Literal["PLAINTEXT", "SASL_PLAINTEXT", "SASL_SSL", "SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: str | None = Field(None, description="SASL mechanism, e.g. SCRAM-SHA-512.")
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password.")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs the brokers' certificates (SSL).")
    partitions: int = Field(6, ge=1, description="Partitions of each contract topic created by dlstream.")
    replication_factor: int = Field(1, ge=1, description="Replication factor of contract topics.")
    fetch_max_wait_ms: int = Field(
        20,
        ge=1,
        le=1500,
        description="Longest a service's consumer fetch waits at the broker for data (Faust's own: 1500).",
    )
    publisher_linger_ms: int = Field(
        5,
        ge=0,
        le=1000,
        description="How long the SDK's publisher holds a request open for more events (Kafka's Java "
        "client's default since 4.0): 0 sends a lone event at once, at a cost in CPU per event under load.",
    )

    @property
    def first_host_port(self) -> tuple[str, int]:
        """The first broker address as (host, port)."""
        first = self.bootstrap_servers.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return host or "127.0.0.1", int(port)


class RedisSettings(_Group):
    """How services reach Redis. The local stack starts redis-server on this port."""

    host: str = Field("127.0.0.1", description="Redis host.")
    port: int = Field(6379, ge=1, le=65535, description="Redis port.")
    db: int = Field(0, ge=0, description="Redis database number.")
    username: str | None = Field(None, description="Redis ACL user; none: the default user.")
    password: SecretStr | None = Field(None, description="Redis password (requirepass); none in development.")
    tls: bool = Field(False, description="Connect over TLS (the secure stack's Redis serves TLS only).")
    ssl_cafile: Path | None = Field(None, description="CA bundle that signs Redis's certificate (TLS).")

    @property
    def url(self) -> str:
        """A redis:// URL without the password (pass the password separately)."""
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class TritonSettings(_Group):
    """How services reach Triton and where its model repository lives."""

    host: str = Field("127.0.0.1", description="Triton host.")
    http_port: int = Field(8000, ge=1, le=65535, description="Triton HTTP port.")
    grpc_port: int = Field(8001, ge=1, le=65535, description="Triton gRPC port.")
    metrics_port: int = Field(8002, ge=1, le=65535, description="Triton Prometheus metrics port.")
    model_repository: Path = Field(Path("model_repo"), description="Triton model repository folder.")
    request_timeout_s: float = Field(30.0, gt=0, description="Timeout of one inference request.")
    reconnect_backoff_max_s: float = Field(
        1.0,
        gt=0,
        description="Longest wait of a gRPC client between attempts to reconnect to Triton (gRPC's own "
        "default, 120 s, kept workers waiting long after Triton was back).",
    )
    replicas: str = Field(
        "",
        description="HTTP host:port of every Triton replica a promotion must reach, comma-separated; "
        "dns:NAME:PORT stands for every address of NAME (a headless Service). Empty: host:http_port.",
    )
    optimise_modules: bool = Field(
        True,
        description="Serve TorchScript models frozen and optimised for inference (batch norm folded into "
        "the convolutions, oneDNN kernels); false: as traced, bit for bit.",
    )
    control_key: SecretStr | None = Field(
        None,
        description="Key of Triton's control API (model repository, shared memory, logging, trace), sent "
        "in the `control_header` header; only the identities that load, unload and promote models hold it. "
        "Empty: Triton's control API is open (the plain local stack).",
    )
    control_header: str = Field(
        "dlstream-control-key",
        pattern=r"^[a-z0-9-]+$",
        description="Name of the header that carries `control_key` (gRPC sends it as "
        "`triton-grpc-protocol-<name>`, as Triton expects).",
    )
    cpu_threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads of each model instance of the local stack's Triton (OMP_NUM_THREADS); "
        "empty: half the cores, at least one, leaving the rest to Kafka and the workers.",
    )

    def control_headers(self, protocol: Literal["http", "grpc"]) -> dict[str, str]:
        """The header that opens Triton's control API to this identity (none without a key)."""
        if self.control_key is None:
            return {}
        name = self.control_header if protocol == "http" else f"triton-grpc-protocol-{self.control_header}"
        return {name: self.control_key.get_secret_value()}

    def model_threads(self) -> int:
        """The CPU threads a model instance of the local stack's Triton uses."""
        return self.cpu_threads or max(1, (os.cpu_count() or 2) // 2)

    @property
    def grpc_url(self) -> str:
        """host:port of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """host:port of the HTTP endpoint."""
        return f"{self.host}:{self.http_port}"


class TopicSettings(_Group):
    """Names of the topics of the wire contract."""

    image: str = Field("events.image", description="Image request topic.")
    audio: str = Field("events.audio", description="Audio request topic.")
    text: str = Field("events.text", description="Text request topic.")
    predictions_prefix: str = Field("predictions.", description="Prefix of prediction topics (+ modality).")
    dlq: str = Field("events.dlq", description="Dead-letter topic.")
    labels: str = Field("feedback.labels", description="Labelled feedback topic.")
    alerts: str = Field("drift.alerts", description="Drift alert topic.")

    def under(self, prefix: str) -> TopicSettings:
        """These topics renamed ``<prefix>.<name>``, e.g. for a test's or a benchmark's own set."""
        return self.model_copy(update={k: f"{prefix}.{v}" for k, v in self.model_dump().items()})

    def request(self, modality: str) -> str:
        """The request topic of ``modality`` (image, audio or text)."""
        return {"image": self.image, "audio": self.audio, "text": self.text}[modality]

    def prediction(self, modality: str) -> str:
        """The prediction topic of ``modality``."""
        return f"{self.predictions_prefix}{modality}"

    def all(self) -> list[str]:
        """Every topic of the contract, requests first."""
        modalities = ("image", "audio", "text")
        requests = [self.request(m) for m in modalities]
        predictions = [self.prediction(m) for m in modalities]
        return [*requests, *predictions, self.dlq, self.labels, self.alerts]


class ContractSettings(_Group):
    """Limits applied when validating request events."""

    max_payload_bytes: int = Field(1024 * 1024, ge=1, description="Largest inline payload accepted.")


class InferenceSettings(_Group):
    """How requests are routed to models and how predictions are shaped."""

    default_models: dict[str, str] = Field(
        default_factory=dict,
        description="Overrides the model per modality that events naming none get (JSON object); by default "
        "the model whose card says default, or the only model of the modality.",
    )
    model_wait_s: float = Field(
        30.0,
        ge=0,
        description="How long an event waits for its model to be served before it is dead-lettered "
        "model-unavailable (the clock stops while Triton is unreachable).",
    )
    max_waiting: int = Field(
        10_000, ge=1, description="Events waiting for a model at once; beyond it consumption pauses."
    )
    discovery_interval_s: float = Field(
        2.0, gt=0, description="How often a worker asks Triton which models it serves."
    )
    top_k: int = Field(5, ge=1, le=100, description="How many classes a prediction lists.")
    full_probabilities_max_classes: int = Field(
        32, ge=0, description="Predictions carry the whole probability vector for label sets up to this size."
    )
    group_id: str = Field(
        "dlstream-inference", description="Consumer group (and Faust app id) of the workers."
    )
    max_batch: int = Field(64, ge=1, description="Most events a worker takes from the stream at once.")
    max_wait_ms: float = Field(
        0.0,
        ge=0,
        description="Longest a batch waits for more events after its first one while Triton is free (0: none;"
        " events that arrive while Triton works form the next batch anyway).",
    )
    request_size: int = Field(
        16,
        ge=1,
        description="Most events of one model per Triton request; a larger batch goes as several concurrent"
        " requests of near-equal size, so Triton reads the next while it runs one (at most the model's"
        " max_batch_size).",
    )
    triton_depth: int = Field(
        2,
        ge=1,
        le=8,
        description="Batches a worker has in Triton at once: the next one is sent while Triton works on one,"
        " so Triton never waits for the worker between batches (1: the next batch is formed once Triton"
        " answered).",
    )
    triton_just_in_time: bool = Field(
        True,
        description="With triton_depth > 1, a batch formed while Triton works on another keeps filling"
        " until shortly before Triton is expected to free up (learnt from its answers), until a full batch"
        " waits, or until Triton answers, instead of queueing in Triton (false: it goes as soon as a place is"
        " free).",
    )
    pipeline_depth: int = Field(
        2,
        ge=1,
        le=8,
        description="1: one batch at a time, end to end; N: besides those in Triton, up to N - 1 batches"
        " whose outcomes are being produced.",
    )
    web_port: int = Field(6066, ge=1, le=65535, description="Faust web port of a worker (health: /health).")
    bind_host: str = Field(
        "127.0.0.1", description="Address the web and metrics ports bind (0.0.0.0 in containers)."
    )
    lag_interval_s: float = Field(5.0, gt=0, description="How often a worker measures its consumer lag.")
    session_timeout_s: float = Field(
        10.0,
        ge=6,
        description="A worker silent this long leaves its group; its partitions move to the others.",
    )
    drain_timeout_s: float = Field(
        20.0,
        gt=0,
        description="On SIGTERM or a rebalance, how long a worker or the monitor waits for the events it "
        "already took; those still waiting (Triton or Redis away) stay uncommitted and are redelivered. "
        "The process exits at most 8 s later (exit code 3 if its shutdown still hangs, e.g. with the broker "
        "away). Keep the sum below the stop timeout (`stack.stop_timeout_s`, the pod's grace period).",
    )
    data_dir: Path = Field(
        Path(".dlstream/faust"), description="Faust's data folder of a worker (one subfolder per group)."
    )
    metrics_port: int = Field(
        9108, ge=0, le=65535, description="Prometheus metrics port of a worker; 0: none."
    )


class RetrySettings(_Group):
    """How the worker and the monitor wait out a transient failure (Triton, Kafka or Redis away)."""

    initial_s: float = Field(0.2, gt=0, description="First wait before retrying a transient failure.")
    max_s: float = Field(5.0, gt=0, description="Longest wait between retries (exponential backoff).")


class DriftSettings(_Group):
    """The drift monitor: windows, detectors, alerts and the retraining trigger."""

    group_id: str = Field("dlstream-drift", description="Consumer group (and Faust app id) of the monitor.")
    key_prefix: str = Field("dlstream:drift", description="Prefix of every Redis key the monitor writes.")
    window_size: int = Field(200, ge=10, description="Predictions per window of one model version.")
    false_alarm_rate: float = Field(
        0.01, gt=0, lt=0.5, description="Share of windows of undrifted traffic that a test may flag."
    )
    alert_after_windows: int = Field(
        2, ge=1, description="Consecutive flagged windows that raise an alert (debounce)."
    )
    resolve_after_windows: int = Field(
        5, ge=1, description="Consecutive clean windows that resolve an open alert of the same version."
    )
    alert_cooldown_s: float = Field(
        3600.0, ge=0, description="After an alert of a model is resolved, no new one for this long."
    )
    calibration_windows: int = Field(
        20000,
        ge=100,
        description="Null windows drawn from a version's calibration sample to set its tests' thresholds.",
    )
    max_batch: int = Field(500, ge=1, description="Most predictions the monitor takes at once.")
    max_wait_ms: float = Field(200.0, gt=0, description="Longest wait to fill a batch.")
    label_ttl_s: int = Field(
        7 * 24 * 3600,
        ge=60,
        description="How long a prediction waits in Redis for its label (at least; at most one and a half "
        "times as long).",
    )
    state_ttl_s: int = Field(
        30 * 24 * 3600, ge=60, description="Expiry of a model version's windows and state when idle."
    )
    max_feedback: int = Field(20000, ge=1, description="Labelled feedback kept per model (newest).")
    webhook_url: str | None = Field(None, description="Alerts are also POSTed here as JSON when set.")
    webhook_timeout_s: float = Field(5.0, gt=0, description="Timeout of one webhook call.")
    retrain_launcher: Literal["local", "kubernetes", "queue", "none"] = Field(
        "local",
        description="How retraining runs: a local process, a Kubernetes Job, a request on a Redis queue "
        "that `dlstream models retrain-worker` serves (a service that mounts the repository), or not at all.",
    )
    retrain_min_feedback: int = Field(
        200, ge=1, description="Labelled feedback a model needs before an alert starts a retraining job."
    )
    retrain_cooldown_s: float = Field(
        3600.0, ge=0, description="Shortest time between two retraining jobs of one model."
    )
    retrain_lock_ttl_s: int = Field(
        7200, ge=60, description="A retraining job's lock expires after this long (a crashed job's lock)."
    )
    job_template: Path = Field(
        Path("k8s/base/retrain/job-template.yaml"), description="The Kubernetes Job template of retraining."
    )
    namespace: str | None = Field(None, description="Namespace of retraining Jobs (default: POD_NAMESPACE).")
    log_dir: Path = Field(Path(".dlstream/retrain"), description="Logs of local retraining processes.")
    web_port: int = Field(6067, ge=1, le=65535, description="Web port of the monitor (health: /health).")
    metrics_port: int = Field(9109, ge=0, le=65535, description="Prometheus metrics port; 0: none.")
    bind_host: str = Field("127.0.0.1", description="Address the web and metrics ports bind.")
    data_dir: Path = Field(Path(".dlstream/faust"), description="Faust's data folder of the monitor.")


class RetrainSettings(_Group):
    """One retraining job (``dlstream models retrain``); the monitor fills in the model and the alert."""

    model: str | None = Field(None, description="The model to retrain.")
    alert_id: str | None = Field(None, description="The alert that started this job.")
    epochs: int | None = Field(None, ge=1, description="Training epochs (default: the model build's).")
    eval_fraction: float = Field(
        0.5, gt=0, lt=1, description="Share of the labelled feedback held out to compare the versions."
    )
    feedback_weight: int = Field(
        3, ge=1, description="How many times each labelled feedback sample appears in the training set."
    )
    min_gain: float = Field(
        0.02, ge=0, description="Accuracy on held-out feedback the new version must gain to be promoted."
    )
    max_base_drop: float = Field(
        0.03, ge=0, description="Accuracy on the base held-out data the new version may lose."
    )
    seed: int = Field(0, description="Seed of the split, initialisation and data order.")


def default_cache_dir() -> Path:
    """``~/.cache/dlstream``: where ``DLSTREAM_STACK__CACHE_DIR`` points unless it is set."""
    return Path.home() / ".cache" / "dlstream"


class StackSettings(_Group):
    """The local stack started by ``dlstream stack up`` (no Docker)."""

    run_dir: Path = Field(Path(".dlstream/run"), description="Pids, logs, configs and data of the stack.")
    cache_dir: Path = Field(
        default_factory=default_cache_dir,
        description="Downloaded Kafka jars and kept model builds (`builds/`), across runs and clones.",
    )
    kafka_controller_port: int | None = Field(
        None, description="KRaft controller port; default is the broker port + 1."
    )
    kafka_heap: str = Field("768m", description="JVM heap of the local broker (-Xmx).")
    kafka_jvm_options: tuple[str, ...] = Field(
        ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"),
        description="JVM options of the local broker and its storage formatting. The default (the serial "
        "collector, the client compiler only) about halves the broker's CPU time on a machine whose few "
        "cores it shares with Triton and the workers; a dedicated broker host does better with "
        '["-XX:+UseG1GC"].',
    )
    start_timeout_s: float = Field(120.0, gt=0, description="How long `up` waits for each service's health.")
    stop_timeout_s: float = Field(30.0, gt=0, description="How long `down` waits before SIGKILL.")
    secure: bool = Field(
        False,
        description="Kafka with SASL_SSL and SCRAM-SHA-512, Redis with TLS and ACL users, one identity per "
        "service, Triton's control API behind a key; it runs in `<run_dir>-secure`, its own run directory, "
        "where certificates and secrets are generated under `secure/` at the first start.",
    )
    service_user: str = Field(
        "dlstream",
        description="The unprivileged user Kafka, Redis and Triton run as when the stack is started as root "
        "(made by `make setup`); empty, or a user that does not exist: the user that starts the stack.",
    )
    services: tuple[Literal["kafka", "redis", "triton", "inference", "drift"], ...] = Field(
        ("kafka", "redis", "triton", "inference", "drift"),
        description="Which services `stack up` starts (inference: one worker; drift: the drift monitor).",
    )

    @property
    def stack_dir(self) -> Path:
        """Where this stack runs: ``run_dir``, or ``<run_dir>-secure`` for the secure stack, so a secure
        stack never meets a plain one's broker storage."""
        return self.run_dir.with_name(f"{self.run_dir.name}-secure") if self.secure else self.run_dir


class LogSettings(_Group):
    """Structured logging."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    json_logs: bool = Field(True, description="JSON lines (true) or human-readable console lines (false).")


class Settings(BaseSettings):
    """Root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix="DLSTREAM_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    environment: Environment = Field("development", description="development, test or production.")
    secrets_dir: Path | None = Field(
        None,
        description="Folder of secret files named `<group>__<field>` (e.g. `kafka__sasl_password`), read "
        "below the environment: a mounted Kubernetes Secret, or a service's folder of the secure stack. "
        "Child processes are handed the folder, never the secrets.",
    )
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    triton: TritonSettings = TritonSettings()
    topics: TopicSettings = TopicSettings()
    contract: ContractSettings = ContractSettings()
    inference: InferenceSettings = InferenceSettings()
    retry: RetrySettings = RetrySettings()
    drift: DriftSettings = DriftSettings()
    retrain: RetrainSettings = RetrainSettings()
    stack: StackSettings = StackSettings()
    log: LogSettings = LogSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the environment, then the files of ``secrets_dir``."""
        secret_files = SecretFilesSource(settings_cls, init_settings, env_settings)
        return init_settings, env_settings, dotenv_settings, secret_files, file_secret_settings

    @model_validator(mode="after")
    def _production_needs_secrets(self) -> Settings:
        if self.environment != "production":
            return self
        if self.redis.password is None or not self.redis.password.get_secret_value():
            raise ValueError("production needs DLSTREAM_REDIS__PASSWORD")
        if self.kafka.security_protocol == "PLAINTEXT":
            raise ValueError("production refuses Kafka PLAINTEXT; set DLSTREAM_KAFKA__SECURITY_PROTOCOL")
        return self


class SecretFilesSource(PydanticBaseSettingsSource):
    """Settings from the files of the ``secrets_dir`` folder (named by keyword or environment): a file
    ``<group>__<field>`` holds the value of that field, e.g. ``redis__password``. Dot-files (a mounted
    Kubernetes Secret's own bookkeeping) and names without ``__`` are skipped; a ``__`` name that is no
    setting is an error, so a misspelt secret is not silently ignored."""

    def __init__(self, settings_cls: type[BaseSettings], *sources: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._sources = sources

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: :meth:`__call__` reads the folder as a whole."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        named = (source().get("secrets_dir") for source in self._sources)
        folder = next((value for value in named if value), None)
        if folder is None:
            return {}
        folder = Path(folder)
        if not folder.is_dir():
            raise ValueError(f"secrets_dir {folder} is not a folder")
        values: dict[str, dict[str, str]] = {}
        groups = self.settings_cls.model_fields
        for path in sorted(folder.iterdir()):
            group, sep, name = path.name.partition("__")
            if path.name.startswith(".") or not sep:
                continue
            annotation = groups[group].annotation if group in groups else None
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or (
                name not in annotation.model_fields
            ):
                raise ValueError(f"secret file {path} names no setting (expected <group>__<field>)")
            values.setdefault(group, {})[name] = path.read_text().rstrip("\n")
        return values


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``DLSTREAM_*`` variables that make a child process load these same settings. Secrets go too,
    unless ``secrets_dir`` is set: then the child reads them from there, and no secret is in its
    environment (which ``ps e`` and /proc show)."""
    env: dict[str, str] = {"DLSTREAM_ENVIRONMENT": settings.environment}
    if settings.secrets_dir is not None:
        env["DLSTREAM_SECRETS_DIR"] = str(settings.secrets_dir.resolve())
    for group_name in type(settings).model_fields:
        group = getattr(settings, group_name)
        if not isinstance(group, BaseModel):
            continue
        for field_name in type(group).model_fields:
            raw = getattr(group, field_name)
            if isinstance(raw, SecretStr) and settings.secrets_dir is not None:
                continue
            value = _env_value(raw)
            if value is not None:
                env[f"DLSTREAM_{group_name.upper()}__{field_name.upper()}"] = value
    return env


def _env_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value)
    return str(value)


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment, with keyword overrides taking precedence."""
    return Settings(**overrides)  # type: ignore[arg-type]
