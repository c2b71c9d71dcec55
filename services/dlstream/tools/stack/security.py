"""The secure local stack's material: a local CA, the servers' certificate, and one identity per service.

Everything lives in ``<run_dir>/secure`` (mode 0700), made once by :meth:`StackSecurity.ensure` with the
``openssl`` command line (no secret is ever on a command line: keys are written to files, passwords are
generated here). Each identity's secrets sit in ``secrets/<identity>/`` as files named for the settings they
fill (``kafka__sasl_password``, ``redis__password``): a process is handed that folder as ``secrets_dir``,
never the secrets themselves.
"""

from __future__ import annotations

import hashlib
import secrets
import shlex
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from pydantic import SecretStr

from dlstream.adapters.kafka.admin import KafkaGrant, Operation
from dlstream.config.settings import Settings, settings_env
from dlstream.domain.contract import Modality
from dlstream.domain.errors import StackError

SCRAM_MECHANISM = "SCRAM-SHA-512"
BROKER = "broker"  # the broker's own identity, between its listeners
# Who connects to what, and what each identity may do in Redis (None: no Redis user). Every key dlstream
# writes is under the drift key prefix; `client` is the CLI and the SDK of a person or an application.
REDIS_RIGHTS: dict[str, str | None] = {
    "stack": "+@all -@dangerous",
    "inference": None,
    "drift": "+@all -@dangerous",
    "client": "+@read +@connection -@dangerous",
}
IDENTITIES = (BROKER, *REDIS_RIGHTS)
# Who may load, unload and promote models through Triton's control API: the stack (and a person running
# `models add/rollback/remove` with admin.env), the monitor and the retraining jobs it starts. The worker
# only infers, and the client never reaches Triton.
TRITON_CONTROLLERS = ("stack", "drift")
_CONTROL_KEY = "triton__control_key"
# Kafka lets these do anything: the broker between its own listeners, the stack to create topics and ACLs.
# The controller listener authenticates the broker by its certificate, whose subject is this name.
SERVER_SUBJECT = "CN=dlstream local stack"
KAFKA_SUPER_USERS = (BROKER, "stack", SERVER_SUBJECT)
# What a service may do with the topics its group's name prefixes (Faust creates and uses them).
_FAUST_TOPIC_OPS: tuple[Operation, ...] = ("create", "read", "write")
_DAYS = "825"


class StackSecurity:
    """The CA, certificate and identities of one run directory's secure stack."""

    def __init__(self, folder: Path) -> None:
        self.dir = folder

    @property
    def ca_path(self) -> Path:
        """The CA certificate every client trusts."""
        return self.dir / "ca.pem"

    @property
    def cert_path(self) -> Path:
        """The servers' certificate (Kafka and Redis), signed by the CA."""
        return self.dir / "server.pem"

    @property
    def key_path(self) -> Path:
        """The servers' private key (PKCS#8, mode 0600)."""
        return self.dir / "server.key"

    @property
    def keystore_path(self) -> Path:
        """The broker's PEM keystore: the private key followed by the certificate."""
        return self.dir / "kafka-keystore.pem"

    @property
    def client_env_path(self) -> Path:
        """``DLSTREAM_*`` variables that point the CLI and the SDK at this stack as ``client``."""
        return self.dir / "client.env"

    @property
    def admin_env_path(self) -> Path:
        """``DLSTREAM_*`` variables for an operator (``models add/rollback/remove``), as ``stack``."""
        return self.dir / "admin.env"

    def triton_control_key(self) -> str:
        """The key of Triton's control API."""
        return self._control_key_path.read_text().strip()

    @property
    def _control_key_path(self) -> Path:
        return self.secrets_dir(TRITON_CONTROLLERS[0]) / _CONTROL_KEY

    def exists(self) -> bool:
        """True once :meth:`ensure` has made the material."""
        return (self.dir / ".complete").exists()

    def secrets_dir(self, identity: str) -> Path:
        """The folder of ``identity``'s secret files."""
        return self.dir / "secrets" / identity

    def password(self, identity: str, service: str) -> str:
        """The password of ``identity`` at ``service`` (kafka or redis)."""
        name = "kafka__sasl_password" if service == "kafka" else "redis__password"
        return (self.secrets_dir(identity) / name).read_text().strip()

    def ensure(self, hosts: Iterable[str]) -> None:
        """Make the CA, the certificate for ``hosts`` (plus localhost and 127.0.0.1) and the identities'
        passwords, unless they exist.

        Raises:
            StackError: when openssl is missing or fails.
        """
        if self.exists():
            self._ensure_control_key()  # material made before Triton's control API had a key
            return
        if shutil.which("openssl") is None:
            raise StackError("openssl is not installed; run `make setup`")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)
        self._certificates(sorted({"localhost", "127.0.0.1", *hosts}))
        for identity in IDENTITIES:
            folder = self.secrets_dir(identity)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o700)
            write_private(folder / "kafka__sasl_password", secrets.token_urlsafe(24))
            if REDIS_RIGHTS.get(identity):
                write_private(folder / "redis__password", secrets.token_urlsafe(24))
        self._ensure_control_key()
        (self.dir / ".complete").touch()

    def _ensure_control_key(self) -> None:
        if self._control_key_path.exists():
            return
        control_key = secrets.token_urlsafe(32)
        for identity in TRITON_CONTROLLERS:
            write_private(self.secrets_dir(identity) / _CONTROL_KEY, control_key)

    def _certificates(self, hosts: list[str]) -> None:
        issue_certificates(self.dir, hosts, ca_name="dlstream local CA", days=_DAYS)
        write_private(self.keystore_path, self.key_path.read_text() + self.cert_path.read_text())

    def apply(self, settings: Settings, identity: str) -> Settings:
        """``settings`` as ``identity`` connects: Kafka over SASL_SSL with SCRAM, Redis over TLS as an ACL
        user, both trusting the local CA; secrets loaded from, and handed on as, its secrets folder."""
        kafka = settings.kafka.model_copy(
            update={
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": SCRAM_MECHANISM,
                "sasl_username": identity,
                "sasl_password": SecretStr(self.password(identity, "kafka")),
                "ssl_cafile": self.ca_path,
            }
        )
        redis_update: dict[str, object] = {"tls": True, "ssl_cafile": self.ca_path}
        if REDIS_RIGHTS.get(identity):
            redis_update |= {"username": identity, "password": SecretStr(self.password(identity, "redis"))}
        redis = settings.redis.model_copy(update=redis_update)
        key = SecretStr(self.triton_control_key()) if identity in TRITON_CONTROLLERS else None
        triton = settings.triton.model_copy(update={"control_key": key})
        return settings.model_copy(
            update={
                "kafka": kafka,
                "redis": redis,
                "triton": triton,
                "secrets_dir": self.secrets_dir(identity),
            }
        )

    def write_client_env(self, settings: Settings) -> Path:
        """Write :attr:`client_env_path` for ``settings`` (no secret: it names the client's folder)."""
        return self._write_env(self.client_env_path, settings, "client")

    def write_admin_env(self, settings: Settings) -> Path:
        """Write :attr:`admin_env_path` for ``settings`` (no secret: it names the stack's folder)."""
        return self._write_env(self.admin_env_path, settings, "stack")

    def _write_env(self, path: Path, settings: Settings, identity: str) -> Path:
        env = settings_env(self.apply(settings, identity))
        lines = [f"{name}={shlex.quote(value)}" for name, value in sorted(env.items())]
        write_private(path, "\n".join(lines) + "\n")
        return path

    def kafka_scram_arguments(self) -> list[str]:
        """``--add-scram`` arguments that create every identity's SCRAM user when the broker is formatted."""
        return [
            f"--add-scram={SCRAM_MECHANISM}=[name={identity},password={self.password(identity, 'kafka')}]"
            for identity in IDENTITIES
        ]

    def redis_acl_lines(self, key_prefix: str) -> list[str]:
        """redis.conf ``user`` lines: the default user off, each identity with a SHA-256 of its password,
        limited to dlstream's keys."""
        lines = ["user default off"]
        for identity, rights in REDIS_RIGHTS.items():
            if rights is None:
                continue
            digest = hashlib.sha256(self.password(identity, "redis").encode()).hexdigest()
            lines.append(f"user {identity} on #{digest} resetkeys ~{key_prefix}:* resetchannels {rights}")
        return lines


def kafka_grants(settings: Settings) -> list[KafkaGrant]:
    """What each identity may do in Kafka; nothing else is allowed (the broker denies what no ACL allows).

    - ``inference`` reads the request topics and writes predictions and dead letters, in its group;
    - ``drift`` reads predictions and labels and writes alerts, in its group;
    - ``client`` writes requests and labels and reads predictions, dead letters and alerts, without a group.

    Faust creates its own topics (``<app id>-__assignor-__leader``, changelogs) named after the service's
    group, so each service may create and use the topics that its group's name prefixes.
    """
    t = settings.topics
    requests = [t.request(m) for m in Modality]
    predictions = [t.prediction(m) for m in Modality]

    def topics(principal: str, operation: Operation, names: Iterable[str]) -> list[KafkaGrant]:
        return [KafkaGrant(principal, "topic", n, operation) for n in names]

    def group(principal: str, group_id: str) -> list[KafkaGrant]:
        own = [KafkaGrant(principal, "group", group_id, "read")]
        return own + [
            KafkaGrant(principal, "topic", f"{group_id}-", op, prefixed=True) for op in _FAUST_TOPIC_OPS
        ]

    return [
        *topics("inference", "read", requests),
        *topics("inference", "write", [*predictions, t.dlq]),
        *group("inference", settings.inference.group_id),
        *topics("drift", "read", [*predictions, t.labels]),
        *topics("drift", "write", [t.alerts]),
        *group("drift", settings.drift.group_id),
        *topics("client", "write", [*requests, t.labels]),
        *topics("client", "read", [*predictions, t.dlq, t.alerts]),
    ]


def issue_certificates(folder: Path, hosts: Iterable[str], *, ca_name: str, days: str) -> None:
    """A CA (``ca.pem``, ``ca.key``) and a server certificate it signs (``server.pem``, ``server.key``) for
    ``hosts`` (IP addresses or DNS names), good for server and client authentication; keys mode 0600.

    Raises:
        StackError: when openssl fails.
    """
    ca_key, ca, key, csr = (folder / n for n in ("ca.key", "ca.pem", "server.key", "server.csr"))
    names = ",".join(f"IP:{h}" if _is_ip(h) else f"DNS:{h}" for h in hosts)
    extensions = folder / "server.ext"
    extensions.write_text(
        f"subjectAltName={names}\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-noenc", "-keyout", str(ca_key),
        "-out", str(ca), "-days", days, "-subj", f"/CN={ca_name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-noenc", "-keyout", str(key), "-out", str(csr),
        "-subj", f"/{SERVER_SUBJECT}",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(folder / "server.pem"), "-days", days, "-extfile", str(extensions),
    )  # fmt: skip
    for private in (ca_key, key):
        private.chmod(0o600)
    csr.unlink()


def _is_ip(host: str) -> bool:
    return all(part.isdigit() for part in host.split(".")) and host.count(".") == 3


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, readable by its owner only from the first byte."""
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)


def _openssl(*args: str) -> None:
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise StackError(f"openssl {args[0]} failed:\n{result.stderr}")
