"""Typed, immutable settings: the only module that reads the environment.

`load(env)` turns a mapping of environment variables into a frozen `Settings`;
every value is parsed explicitly and a bad one raises `SettingsError` naming the
variable. `load_or_exit()` is what entry points call: it prints that one line and
exits with status 2 instead of a traceback.

Every setting is listed in `SETTINGS_DOC` (name, default, meaning), which is the
source of the README's settings table.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn, TypeVar
from urllib.parse import urlsplit

from aggregations.spec import Spec, SpecError, article_spec, parse_spec
from alerts.rules import Rule, RuleError, parse_rules
from ops.faults import parse_faults
from tables.windows import DEFAULT_WINDOWS, RESERVED_NAMES, WindowSpec, parse_duration_ms, parse_windows

T = TypeVar("T")


class SettingsError(ValueError):
    """A setting has a value the application cannot run with."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    default: str
    meaning: str
    secret: bool = False


# One row per environment variable. Defaults are strings, parsed like user input,
# so the documented default and the effective default cannot drift apart.
SETTINGS_DOC: tuple[Setting, ...] = (
    Setting("APP_ID", "events-pipeline", "Faust app id: consumer group and prefix of changelog topics."),
    Setting("BROKER_URL", "kafka://127.0.0.1:9092", "Kafka bootstrap servers, `kafka://host:port`, several separated by `,` or `;`."),
    Setting("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT", "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."),
    Setting("KAFKA_SSL_CAFILE", "", "CA bundle (PEM) that verifies the brokers (SSL protocols); empty means the system's."),
    Setting("KAFKA_SSL_CERTFILE", "", "Client certificate (PEM) for mutual TLS (SSL protocols); needs KAFKA_SSL_KEYFILE."),
    Setting("KAFKA_SSL_KEYFILE", "", "Private key (PEM) of the client certificate."),
    Setting("KAFKA_SSL_KEY_PASSWORD", "", "Passphrase of an encrypted KAFKA_SSL_KEYFILE (never logged).", secret=True),
    Setting("KAFKA_SASL_MECHANISM", "PLAIN", "PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER (SASL protocols only)."),
    Setting("KAFKA_SASL_USERNAME", "", "SASL user name (required with PLAIN and SCRAM)."),
    Setting("KAFKA_SASL_PASSWORD", "", "SASL password (required with PLAIN and SCRAM; never logged).", secret=True),
    Setting("KAFKA_SASL_OAUTH_TOKEN_FILE", "", "OAUTHBEARER: a file holding the current token, read at every authentication, so that a sidecar can refresh it (e.g. an MSK IAM or OIDC token)."),
    Setting("KAFKA_TRANSACTIONS", "true", "Kafka transactions (`true` or `false`): each stage partition writes through a transactional producer of its own (transactional id `APP_ID-<stage>-<partition>`), so that a worker that was paused past the session timeout and replaced cannot write once it resumes (zombie fencing), and readers see a partition's writes only once committed. Needs the idempotent producer, and on a broker with ACLs `Write` on those transactional ids. `false` only for a broker without transactions, such as Tansu (the embedded stack sets it for Tansu)."),
    Setting("KAFKA_IDEMPOTENCE", "true", "The idempotent producer (`true` or `false`): a send the client retries after a lost answer is written once. Every Kafka since 0.11 has it; `false` only for a broker without it, such as Tansu (the embedded stack sets it for Tansu). Off for the produce command when `PRODUCE_ACKS` is not `all`."),
    Setting("KAFKA_COMPRESSION", "none", "Compression of what the worker and the produce command write: none, gzip, snappy, lz4 or zstd."),
    Setting("KAFKA_LINGER", "5ms", "How long a producer waits to fill a batch (the article's producer: 10ms)."),
    Setting("KAFKA_BATCH_BYTES", "262144", "Largest record batch a producer builds, in bytes (the article's: 32768)."),
    Setting("PRODUCE_ACKS", "all", "Acknowledgements the produce command waits for: all, 1 or 0 (the worker always uses all: its exactly-once rests on it)."),
    Setting("TOPIC_EVENTS", "events", "Input topic of JSON events, keyed by user_id."),
    Setting("TOPIC_DLQ", "events-dlq", "Dead-letter topic for records that fail validation."),
    Setting("TOPIC_LATE", "events-late", "Topic for events whose window had already closed."),
    Setting("TOPIC_ALERTS", "events-alerts", "Topic of the alerts the rules of ALERT_RULES fire and resolve (JSON)."),
    Setting("TOPIC_PARTITIONS", "4", "Partitions of topics the app creates (input, changelogs); bounds parallelism."),
    Setting("TOPIC_REPLICATION", "1", "Replication factor of topics the app creates (3 on a production cluster)."),
    Setting("WEB_BIND", "127.0.0.1", "Address the web server binds to (`0.0.0.0` to expose it)."),
    Setting("WEB_PORT", "6066", "Port of the web server (views, metrics, health)."),
    Setting("WEB_HOST", "127.0.0.1", "Host name other workers use to reach this one (table routing)."),
    Setting("WEB_AUTH_TOKEN", "", "If set, every `/v1` request needs `Authorization: Bearer <token>` (the dashboard asks for it); the probes, `/metrics` and the dashboard's files stay open (see [Deploy](#deploy), Security checklist). Required when `WEB_BIND` is not a loopback address (see `WEB_AUTH`).", secret=True),
    Setting("WEB_AUTH", "token", "`token`: the worker refuses to start with `WEB_BIND` beyond loopback and no `WEB_AUTH_TOKEN`; `none`: serve the API without a token to whoever reaches the port (say so explicitly)."),
    Setting("WEB_RATE_LIMIT", "20", "`/v1` requests a worker serves per second (health, `/metrics` and `/v1/status`, answered from memory, not counted). The web server shares the pipeline's event loop: more wait their turn, up to 5 s, and are then answered 503 with `Retry-After`. A dashboard tab makes 2 a second; NOTES.md has what a client asking without pause costs the pipeline."),
    Setting("WEB_PEER_HOSTS", "", "With `WEB_AUTH_TOKEN`: the other workers this one sends the token to when it routes a request to a key's owner or gathers open windows, as host names, IP addresses or networks (`10.0.0.0/8`), comma-separated; loopback addresses always. Their URLs come from the consumer group, where any client allowed to join it could advertise one: a worker not listed is not asked (the answer names it)."),
    Setting("WEB_ALLOWED_HOSTS", "", "Without `WEB_AUTH_TOKEN`: host names a request's `Host` header may name besides IP addresses, `localhost` and `WEB_HOST`, comma-separated (`*`: any). Another name is answered 421, so that a web page elsewhere cannot read the API through DNS rebinding."),
    Setting("STATE_DIR", "var/state", "Directory of the worker's local state (RocksDB tables)."),
    Setting("LAKE_URL", "s3://lake/", "Data lake root, `s3://bucket/prefix`."),
    Setting("S3_ENDPOINT_URL", "", "S3 API endpoint (`http(s)://host:port`, no credentials in it); empty means AWS S3. Credentials come from the standard AWS chain (AWS_ACCESS_KEY_ID, profile, instance role)."),
    Setting("S3_REGION", "us-east-1", "S3 region."),
    Setting("REDIS_URL", "redis://127.0.0.1:6379/0", "Redis server, `redis://`, `rediss://` (TLS) or `unix://`; a password goes in it (`rediss://:password@host:6379/0`) and is never shown.", secret=True),
    Setting("REDIS_KEY_PREFIX", "events:", "Prefix of every Redis key the app writes."),
    Setting("REDIS_TTL", "168h", "Time to live of exported windows in Redis."),
    Setting("REDIS_LATEST_N", "60", "How many latest windows per (window, event_type) the Redis index keeps."),
    Setting("WINDOWS", DEFAULT_WINDOWS, "Windows, `name:size[:step]` separated by commas; no step means tumbling. `hourly` and `daily` are reserved (the batch layer's rollups)."),
    Setting("ALLOWED_LATENESS", "60s", "How far behind the highest event time an event may arrive before its window closes."),
    Setting("IDLE_TIMEOUT", "30s", "After this long without events, a partition's event time follows the wall clock."),
    Setting("MAX_CLOCK_SKEW", "5m", "Events timestamped further than this after their Kafka record timestamp are dead-lettered (they would close every window)."),
    Setting("MAX_EVENT_BYTES", "65536", "Records larger than this go to the dead-letter topic."),
    Setting("ARCHIVE_MAX_RECORDS", "50000", "Raw archive files are rolled after this many records..."),
    Setting("ARCHIVE_MAX_AGE", "60s", "...or when their oldest record is this old."),
    Setting("EXPORT_LEDGER_RETENTION", "24h", "How long stage 2 remembers that a window was exported, after the window's end: a replay of its partials within this horizon cannot re-open it (stage 2 stores its input position at least every 5 s, so a crash replays at most that much of its own input)."),
    Setting("AGGREGATIONS", "", "Path of the aggregation spec (TOML, see [Your own events](docs/your-own-events.md)): the event's time field and the aggregations to keep; empty means the article's job. A bad spec stops startup with one line naming the aggregation and the field."),
    Setting("ALERT_RULES", "", "Path of the alert rules file (TOML, see [Alert rules](docs/alert-rules.md)); empty means no rules. A bad rule stops startup with one line naming the rule and the field."),
    Setting("LAG_WARNING", "100000", "Log a warning while the input consumer lag of this worker exceeds this many records."),
    Setting("FAULT_INJECTION", "", "Testing only: `point@N` makes the Nth call of a step fail (points: ingest.send, export.write, archive.write, alerts.send). Empty in production."),
    Setting("STARTUP_TIMEOUT", "60s", "How long the worker, `produce` and `batch` wait at start for a Kafka broker, S3 and Redis to answer. One that still does not, or that refuses (a missing bucket, refused credentials, a certificate that does not verify), stops the process with one line naming the setting and status 2, which supervisors are told not to restart."),
    Setting("LOG_LEVEL", "info", "Level of the pipeline's own logs: debug, info, warning or error (faust's logs follow `faust worker -l`)."),
    Setting("DEVSTACK_DIR", "var", "Embedded stack only: directory of the services' data and logs."),
    Setting("DEVSTACK_BROKER", "kafka", "Embedded stack only: the broker it runs, `kafka` (Apache Kafka in KRaft mode: Java 17, and `make kafka` fetches it with Maven) or `tansu` (Tansu, from the Python requirements; no transactions, so no fencing: see [Brokers](docs/development.md#brokers))."),
    Setting("DEVSTACK_BROKER_PORT", "9092", "Embedded stack only: port of the broker."),
    Setting("DEVSTACK_CONTROLLER_PORT", "9093", "Embedded stack only: port of Kafka's KRaft controller (`DEVSTACK_BROKER=kafka`)."),
    Setting("DEVSTACK_BROKER_STORAGE", "s3", "Embedded stack only: where Tansu keeps its topics, `s3` (they survive restarts) or `memory`; Kafka keeps them under `DEVSTACK_DIR`, and `memory` starts it empty."),
    Setting("DEVSTACK_S3_PORT", "8333", "Embedded stack only: S3 port of SeaweedFS, which also uses the 9 ports above it."),
    Setting("DEVSTACK_REDIS_PORT", "6379", "Embedded stack only: port of Redis."),
)
_DEFAULTS = {s.name: s.default for s in SETTINGS_DOC}

# The floor and ceiling of every duration and size, and why: a value outside is refused at start, and the
# settings table states the range. Durations as a user writes them.
DURATION_BOUNDS: dict[str, tuple[str, str, str]] = {
    "KAFKA_LINGER": ("0ms", "1s", "every send waits this long, and each stage's commit waits for its sends"),
    "REDIS_TTL": ("1m", "8760h", "Redis serves recent windows (a year at most); the lake keeps them all"),
    "ALLOWED_LATENESS": ("0s", "24h", "a window stays open, in memory and RocksDB, this long after its end"),
    "IDLE_TIMEOUT": ("1s", "24h", "a quiet input partition holds back the close of every window this long"),
    "MAX_CLOCK_SKEW": ("1s", "24h", "an event further ahead of its record's time would close every window at "
                                    "once"),
    "ARCHIVE_MAX_AGE": ("100ms", "1h", "each roll is an S3 object per input partition, and a file's records "
                                       "wait in memory (and are replayed after a crash) until it is written"),
    "EXPORT_LEDGER_RETENTION": ("1m", "720h", "it must outlast a replay of stage 2's input (up to 5 s), and it "
                                              "keeps an entry per window exported in it"),
    "STARTUP_TIMEOUT": ("1s", "1h", "a process that cannot reach its stores should say so, not hang"),
}
SIZE_BOUNDS: dict[str, tuple[int, int, str]] = {
    "KAFKA_BATCH_BYTES": (1024, 64 * 1024 * 1024, "a batch is built in memory and must fit the broker's "
                                                  "message.max.bytes"),
    "MAX_EVENT_BYTES": (64, 16 * 1024 * 1024, "a record is held whole in memory and forwarded whole to the "
                                              "dead-letter topic"),
    "ARCHIVE_MAX_RECORDS": (1, 10_000_000, "a raw file is built in memory before its upload"),
    "REDIS_LATEST_N": (1, 100_000, "each index is trimmed to this many windows at every write"),
    "TOPIC_PARTITIONS": (1, 10_000, "each partition is a consumer, a RocksDB store and a producer's state"),
    "TOPIC_REPLICATION": (1, 100, "a replication factor above the brokers' count cannot be met"),
    "LAG_WARNING": (1, 10**12, "a lag is a count of records"),
    "WEB_RATE_LIMIT": (1, 10_000, "the web server shares the pipeline's event loop"),
}
# A window family's bounds (WINDOWS): what the speed layer is for, and what one event costs.
WINDOW_SIZE_BOUNDS = ("1s", "24h", "a window is a row per key when it closes, and longer periods are the batch "
                                   "layer's daily rollups")
MAX_WINDOWS_PER_EVENT = 60  # a hopping window's size / step: each event is folded into that many windows
_SECRETS = frozenset(s.name for s in SETTINGS_DOC if s.secret)

_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER")
_LOG_LEVELS = ("debug", "info", "warning", "error")
# The codecs KAFKA_COMPRESSION offers (aiokafka's compression_type, "none" for None).
KAFKA_COMPRESSIONS = ("none", "gzip", "snappy", "lz4", "zstd")
_TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,200}$")
_APP_ID = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_KEY_PREFIX = re.compile(r"^[A-Za-z0-9:_.-]{0,64}$")
# Other programs' variables that share the settings' prefixes (Kafka's launch scripts).
_FOREIGN_VARIABLES = frozenset({"KAFKA_HEAP_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS", "KAFKA_GC_LOG_OPTS", "KAFKA_LOG4J_OPTS",
                                "KAFKA_JMX_OPTS", "KAFKA_OPTS", "KAFKA_DEBUG", "KAFKA_HOME"})
# Kubernetes injects a Service's address as <SERVICE>_SERVICE_HOST, <SERVICE>_PORT=tcp://..., and so on
# (enableServiceLinks): a Service named `redis` or `kafka` would otherwise be taken for typos.
_SERVICE_LINK_NAME = re.compile(r"^[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_[0-9]+_(TCP|UDP|SCTP)"
                                r"(_PROTO|_PORT|_ADDR)?)$")
_SERVICE_LINK_VALUE = re.compile(r"^(tcp|udp|sctp)://[0-9a-fA-F.:\[\]]+:[0-9]+$")
_HOST = re.compile(r"^[A-Za-z0-9.:_-]{1,253}$")
_HOST_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_USERINFO = re.compile(r"//[^/@\s]*@")


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    bootstrap_servers: tuple[str, ...]  # host:port
    security_protocol: str
    sasl_mechanism: str
    sasl_username: str
    sasl_password: str = field(repr=False)
    ssl_cafile: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_key_password: str = field(repr=False)
    sasl_oauth_token_file: str | None
    compression: str  # aiokafka's compression_type: "none" is None
    linger_ms: int
    batch_bytes: int
    idempotence: bool
    transactions: bool
    produce_acks: str
    topic_events: str
    topic_dlq: str
    topic_late: str
    topic_alerts: str
    topic_partitions: int
    topic_replication: int

    @property
    def broker_urls(self) -> list[str]:
        return [f"kafka://{server}" for server in self.bootstrap_servers]


@dataclass(frozen=True, slots=True)
class HostList:
    """Hosts named by a setting: host names (any case), IP addresses and networks, or any host (`*`)."""

    names: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    any_host: bool = False

    def matches(self, host: str | None) -> bool:
        """Whether `host` (a name, or an address; IPv6 with or without its brackets) is one of them."""
        if self.any_host:
            return True
        if not host:
            return False
        host = host.strip("[]").lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names
        return any(address in network for network in self.networks)


LOOPBACK = HostList(frozenset({"localhost"}), (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")))


@dataclass(frozen=True, slots=True)
class WebSettings:
    bind: str
    port: int
    host: str
    auth_token: str = field(default="", repr=False)
    rate_limit: int = 20  # /v1 requests served per second (web/admission.py)
    peer_hosts: HostList = LOOPBACK  # workers the token may be sent to (loopback always)
    allowed_hosts: HostList = HostList(any_host=True)  # Host headers answered (checked only without a token)


@dataclass(frozen=True, slots=True)
class LakeSettings:
    bucket: str
    prefix: str  # "" or ends with "/"
    endpoint_url: str | None
    region: str


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = field(repr=False)  # may carry a password
    key_prefix: str
    ttl_ms: int
    latest_n: int


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    windows: tuple[WindowSpec, ...]
    allowed_lateness_ms: int
    idle_timeout_ms: int
    max_event_bytes: int
    max_clock_skew_ms: int
    archive_max_records: int
    archive_max_age_ms: int
    lag_warning_records: int
    ledger_retention_ms: int = 24 * 3_600_000
    fault_injection: tuple[tuple[str, int], ...] = ()
    alert_rules: tuple[Rule, ...] = ()  # from the ALERT_RULES file
    spec: Spec | None = None  # from the AGGREGATIONS file; None: the article's job


@dataclass(frozen=True, slots=True)
class Settings:
    app_id: str
    kafka: KafkaSettings
    web: WebSettings
    state_dir: Path
    lake: LakeSettings
    redis: RedisSettings
    pipeline: PipelineSettings
    log_level: str
    startup_timeout_ms: int  # how long a process waits for its broker and stores at start


@dataclass(frozen=True, slots=True)
class DevstackSettings:
    """The embedded stack. A service whose URL is set explicitly is not started."""

    data_dir: Path
    broker: str  # kafka or tansu
    broker_port: int
    controller_port: int
    broker_storage: str
    s3_port: int
    redis_port: int
    external_broker_url: str | None
    external_s3_endpoint: str | None
    external_redis_url: str | None = field(repr=False)


class _Reader:
    """Reads raw values with documented defaults and wraps parse errors."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def raw(self, name: str) -> str:
        return self._env.get(name, _DEFAULTS[name]).strip()

    def is_set(self, name: str) -> bool:
        return bool(self._env.get(name, "").strip())

    def parse(self, name: str, parser: Callable[[str], T]) -> T:
        value = self.raw(name)
        try:
            return parser(value)
        except ValueError as exc:
            shown = "<hidden>" if name in _SECRETS else repr(redact_userinfo(value))
            raise SettingsError(name, f"{exc} (got {shown})") from None


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"expected an integer from {low} to {high}")
        number = int(text)
        if not low <= number <= high:
            raise ValueError(f"expected an integer from {low} to {high}")
        return number

    return parse


_port = _integer(1, 65535)


def _bounded_duration_ms(name: str) -> Callable[[str], int]:
    """The parser of a duration setting: from its floor to its ceiling (DURATION_BOUNDS), or one line why not."""
    low, high, why = DURATION_BOUNDS[name]

    def parse(text: str) -> int:
        duration_ms = parse_duration_ms(text)
        if not parse_duration_ms(low) <= duration_ms <= parse_duration_ms(high):
            raise ValueError(f"expected a duration from {low} to {high}: {why}")
        return duration_ms

    return parse


def _bounded_size(name: str) -> Callable[[str], int]:
    """The parser of a size or count setting: from its floor to its ceiling (SIZE_BOUNDS)."""
    low, high, why = SIZE_BOUNDS[name]
    integer = _integer(low, high)

    def parse(text: str) -> int:
        try:
            return integer(text)
        except ValueError as exc:
            raise ValueError(f"{exc}: {why}") from None

    return parse


def _bounded_windows(text: str) -> tuple[WindowSpec, ...]:
    """WINDOWS, each family within WINDOW_SIZE_BOUNDS and at most MAX_WINDOWS_PER_EVENT windows per event."""
    low, high, why = WINDOW_SIZE_BOUNDS
    windows = parse_windows(text)
    for window in windows:
        if not parse_duration_ms(low) <= window.size_ms <= parse_duration_ms(high):
            raise ValueError(f"window {window.name!r}: expected a size from {low} to {high}: {why}")
        if window.step_ms < parse_duration_ms(low):
            raise ValueError(f"window {window.name!r}: expected a step of at least {low}")
        if window.size_ms // window.step_ms > MAX_WINDOWS_PER_EVENT:
            raise ValueError(f"window {window.name!r}: its size is {window.size_ms // window.step_ms} steps, and "
                             f"each event is folded into that many windows: expected at most "
                             f"{MAX_WINDOWS_PER_EVENT}")
    return windows


def _choice(options: tuple[str, ...], *, lower: bool = False) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.lower() if lower else text.upper()
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return value

    return parse


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(f"expected {what}")
        return text

    return parse


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not _HOST.fullmatch(host):
        raise ValueError("expected host:port")
    return host, _port(port)


def _bootstrap_servers(text: str) -> tuple[str, ...]:
    servers = []
    for item in re.split(r"[,;]", text):
        item = item.strip()
        if not item:
            continue
        scheme, sep, rest = item.partition("://")
        if not sep or scheme != "kafka":
            raise ValueError(f"unknown URL scheme in {item!r}: expected kafka://host:port")
        host, port = _host_port(rest.rstrip("/"))
        servers.append(f"{host}:{port}")
    if not servers:
        raise ValueError("expected at least one kafka://host:port")
    return tuple(servers)


def _lake_url(text: str) -> tuple[str, str]:
    parts = urlsplit(text)
    if parts.scheme != "s3":
        raise ValueError("unknown URL scheme: expected s3://bucket/prefix")
    if not _BUCKET.fullmatch(parts.netloc):
        raise ValueError("expected a valid S3 bucket name in s3://bucket/prefix")
    if parts.query or parts.fragment:
        raise ValueError("expected s3://bucket/prefix without query or fragment")
    prefix = parts.path.strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")) and prefix:
        raise ValueError("expected a prefix of plain path segments")
    return parts.netloc, f"{prefix}/" if prefix else ""


def redact_userinfo(text: str) -> str:
    """`text` with the user and password of any URL in it replaced by `***`: safe to show."""
    return _USERINFO.sub("//***@", text)


def _http_url(text: str) -> str | None:
    if not text:
        return None
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("unknown URL scheme: expected http://host:port or https://host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("credentials do not belong in the URL: the AWS chain gives them (AWS_ACCESS_KEY_ID and "
                         "AWS_SECRET_ACCESS_KEY, a profile, an instance role)")
    parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    return text.rstrip("/")


def _redis_url(text: str) -> str:
    parts = urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ValueError("unknown URL scheme: expected redis://, rediss:// or unix://")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("expected redis://host:port/db")
    parts.port  # noqa: B018 - raises ValueError on a non-numeric port
    return text


def _readable_file(text: str) -> str:
    path = Path(text)
    if not path.is_file():
        raise ValueError("expected the path of a readable file")
    try:
        path.open("rb").close()
    except OSError as exc:
        raise ValueError(f"expected the path of a readable file ({exc.strerror})") from None
    return text


def _read_text(setting: str, path: str, what: str) -> str:
    """The text of the file a setting names, or one line saying why it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(setting, f"cannot read {what} {path!r}: "
                                     f"{getattr(exc, 'strerror', None) or exc}") from None


def _alert_rules(path: str, windows: tuple[WindowSpec, ...], spec: Spec | None) -> tuple[Rule, ...]:
    """The rules of the ALERT_RULES file (with a spec, of its aggregations): its problem, if any, named
    with the rule and the field."""
    if not path:
        return ()
    text = _read_text("ALERT_RULES", path, "the rules file")
    try:
        return parse_rules(text, windows, spec)
    except RuleError as exc:
        raise SettingsError("ALERT_RULES", f"{path}: {exc}") from None


def _aggregations(path: str, windows: tuple[WindowSpec, ...]) -> Spec | None:
    """The spec of the AGGREGATIONS file (None: the article's job): its problem, if any, named with the
    aggregation and the field."""
    if not path:
        return None
    text = _read_text("AGGREGATIONS", path, "the spec")
    try:
        spec = parse_spec(text, [w.name for w in windows])
    except SpecError as exc:
        raise SettingsError("AGGREGATIONS", f"{path}: {exc}") from None
    if spec == article_spec([w.name for w in windows]):
        return None  # the article's job declared as a spec: run it as without one (docs/your-own-events.md)
    taken = {w.name for w in windows} | set(RESERVED_NAMES)
    for aggregation in spec.aggregations:
        if aggregation.name in taken:
            raise SettingsError("AGGREGATIONS", f"{path}: aggregation {aggregation.name!r}: field 'name': a window's "
                                                "or the batch layer's folder in the lake has that name")
    return spec


def _web(read: _Reader) -> WebSettings:
    host = read.parse("WEB_HOST", _matching(_HOST, "a host name"))
    # Any IP address: DNS rebinding needs a name; and the names this worker is known by.
    own = HostList(frozenset({host.lower().rstrip("."), "localhost"}),
                   (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")))
    web = WebSettings(
        bind=read.parse("WEB_BIND", _matching(_HOST, "an IP address or host name")),
        port=read.parse("WEB_PORT", _port),
        host=host,
        auth_token=read.parse("WEB_AUTH_TOKEN", _matching(re.compile(r"^(|[!-~]{16,256})$"),
                                                          "empty, or 16 to 256 printable ASCII characters")),
        rate_limit=read.parse("WEB_RATE_LIMIT", _bounded_size("WEB_RATE_LIMIT")),
        peer_hosts=read.parse("WEB_PEER_HOSTS", _host_list(wildcard=False, always=LOOPBACK)),
        allowed_hosts=read.parse("WEB_ALLOWED_HOSTS", _host_list(wildcard=True, always=own)),
    )
    auth = read.parse("WEB_AUTH", _choice(("token", "none"), lower=True))
    if auth == "none" and web.auth_token:
        raise SettingsError("WEB_AUTH", "none, but WEB_AUTH_TOKEN is set: unset one of them")
    if auth == "token" and not web.auth_token and not is_loopback(web.bind):
        raise SettingsError("WEB_BIND", f"{web.bind} is reachable beyond this host, and WEB_AUTH_TOKEN is empty: "
                                        "set WEB_AUTH_TOKEN, or WEB_AUTH=none to serve every window, alert and "
                                        "rollup to whoever reaches the port")
    return web


def _host_list(*, wildcard: bool, always: HostList) -> Callable[[str], HostList]:
    """A comma-separated list of host names, IP addresses and networks (`*` too if `wildcard`), with
    `always`'s entries added."""
    def parse(text: str) -> HostList:
        names, networks = set(always.names), list(always.networks)
        for item in (part.strip().lower().rstrip(".") for part in text.split(",")):
            if not item:
                continue
            if item == "*" and wildcard:
                return HostList(any_host=True)
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                if not _HOST_NAME.fullmatch(item):
                    raise ValueError(f"{item[:64]!r} is not a host name, IP address or network") from None
                names.add(item)
        return HostList(frozenset(names), tuple(networks))

    return parse


def is_loopback(bind: str) -> bool:
    if bind == "localhost":
        return True
    try:
        return ipaddress.ip_address(bind).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def _optional_url(reader: _Reader, name: str, parser: Callable[[str], T]) -> T | None:
    return reader.parse(name, parser) if reader.is_set(name) else None


# Set by faust's own CLI for its --workdir/--datadir options: not the user's configuration.
_FAUST_CLI_VARIABLES = frozenset({"F_WORKDIR", "F_DATADIR"})


# The settings' families: another variable named with one of these is taken for a mistyped setting.
# (APP_ID, LOG_LEVEL and the few others stand alone: APP_ and LOG_ are too common in other programs' names.)
_PREFIXES = ("AGGREGATION", "ALERT_", "ARCHIVE_", "BROKER_", "DEVSTACK_", "EXPORT_", "KAFKA_", "LAKE_", "PRODUCE_",
             "REDIS_", "S3_", "STARTUP_", "STATE_", "TOPIC_", "WEB_")


def _refuse_unknown_variables(env: Mapping[str, str]) -> None:
    """A variable named like a setting but not one (`BROKER_ULR`, `WEB_PROT`, `web_port`) would be ignored and
    the default used: refused, naming the closest setting."""
    import difflib

    known = sorted(_DEFAULTS)
    for name in sorted(env):
        upper = name.upper()
        if name in _DEFAULTS or name in _FOREIGN_VARIABLES or not upper.startswith(_PREFIXES):
            continue
        if _SERVICE_LINK_NAME.fullmatch(name) or (upper.endswith("_PORT") and _SERVICE_LINK_VALUE.fullmatch(
                env[name].strip())):
            continue
        if upper in _DEFAULTS:
            raise SettingsError(name, f"settings are named in capitals: set {upper}")
        close = difflib.get_close_matches(upper, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else "the README's settings table lists them"
        raise SettingsError(name, f"not a setting of this application, which would ignore it: {hint}")


def _refuse_faust_variables(env: Mapping[str, str]) -> None:
    """faust reads F_*/FAUST_* variables into its settings in other setups; here they would bypass
    this module (and the pipeline's own clients would not follow them): refused, naming the one to use."""
    for name in sorted(env):
        if (name.startswith("FAUST_") or name.startswith("F_")) and name not in _FAUST_CLI_VARIABLES:
            raise SettingsError(name, "faust's own variables are not read; the settings are the variables in "
                                      "the README's table (e.g. BROKER_URL, WEB_PORT)")


class _KeyIsEncryptedError(Exception):
    """The client key asks for a passphrase and KAFKA_SSL_KEY_PASSWORD gives none."""


def _check_tls_files(cafile: str | None, certfile: str | None, keyfile: str | None, key_password: str) -> None:
    """Load the TLS files as the Kafka clients will, so that a bad one is one line at start-up (naming the
    setting) rather than a traceback at the first connection. OpenSSL would prompt on the terminal for an
    encrypted key's passphrase: the callback answers instead, or refuses."""
    import ssl

    if cafile:
        try:
            ssl.create_default_context(cafile=cafile)
        except (ssl.SSLError, ValueError) as exc:
            raise SettingsError("KAFKA_SSL_CAFILE", f"{cafile} holds no PEM CA certificate ({exc})") from None

    def passphrase() -> str:
        if not key_password:
            raise _KeyIsEncryptedError
        return key_password

    if certfile and keyfile:
        try:
            text = Path(certfile).read_text(errors="replace")
            ssl.PEM_cert_to_DER_cert(text[text.index("-----BEGIN CERTIFICATE-----"):])
        except ValueError:
            raise SettingsError("KAFKA_SSL_CERTFILE", f"{certfile} holds no PEM certificate") from None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_cert_chain(certfile, keyfile, password=passphrase)
        except _KeyIsEncryptedError:
            raise SettingsError("KAFKA_SSL_KEY_PASSWORD", f"{keyfile} is encrypted: set its passphrase") from None
        except ssl.SSLError as exc:
            # OpenSSL says only "PEM lib" for a wrong passphrase: an encrypted key that did not load, and
            # not for a certificate that does not match it, is taken for one.
            if key_password and _is_encrypted_pem(keyfile) and "KEY_VALUES_MISMATCH" not in str(exc):
                raise SettingsError("KAFKA_SSL_KEY_PASSWORD", f"does not decrypt {keyfile}") from None
            raise SettingsError("KAFKA_SSL_CERTFILE", f"{certfile} and {keyfile} are not a PEM certificate and its "
                                f"private key ({exc.reason or exc})") from None


def _is_encrypted_pem(path: str) -> bool:
    """A PEM private key under a passphrase: PKCS#8's ENCRYPTED PRIVATE KEY, or OpenSSL's legacy header."""
    try:
        head = Path(path).read_bytes()[:4096]
    except OSError:
        return False
    return b"ENCRYPTED PRIVATE KEY" in head or b"Proc-Type: 4,ENCRYPTED" in head


def load(env: Mapping[str, str]) -> Settings:
    """Parse the worker's settings from `env`; raise SettingsError on a bad value."""
    _refuse_faust_variables(env)
    _refuse_unknown_variables(env)
    read = _Reader(env)
    protocol = read.parse("KAFKA_SECURITY_PROTOCOL", _choice(_SECURITY_PROTOCOLS))
    if not protocol.startswith("SASL"):
        # Under PLAINTEXT or SSL the clients never log in: credentials set for nothing would hide that.
        for name in ("KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_OAUTH_TOKEN_FILE"):
            if read.is_set(name):
                raise SettingsError(name, f"a SASL setting, and KAFKA_SECURITY_PROTOCOL={protocol} does not log in: "
                                          "set SASL_SSL (or SASL_PLAINTEXT), or unset it")
    mechanism = read.parse("KAFKA_SASL_MECHANISM", _choice(_SASL_MECHANISMS))
    username = read.raw("KAFKA_SASL_USERNAME")
    password = read.raw("KAFKA_SASL_PASSWORD")
    files = {name: _optional_url(read, name, _readable_file) for name in (
        "KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE", "KAFKA_SSL_KEYFILE", "KAFKA_SASL_OAUTH_TOKEN_FILE")}
    if protocol.startswith("SASL") and mechanism == "OAUTHBEARER":
        if not files["KAFKA_SASL_OAUTH_TOKEN_FILE"]:
            raise SettingsError("KAFKA_SASL_OAUTH_TOKEN_FILE", "required with KAFKA_SASL_MECHANISM=OAUTHBEARER")
    elif protocol.startswith("SASL"):
        if not username:
            raise SettingsError("KAFKA_SASL_USERNAME", f"required with KAFKA_SECURITY_PROTOCOL={protocol}")
        if not password:
            raise SettingsError("KAFKA_SASL_PASSWORD", f"required with KAFKA_SECURITY_PROTOCOL={protocol}")
    if bool(files["KAFKA_SSL_CERTFILE"]) != bool(files["KAFKA_SSL_KEYFILE"]):
        missing = "KAFKA_SSL_KEYFILE" if files["KAFKA_SSL_CERTFILE"] else "KAFKA_SSL_CERTFILE"
        raise SettingsError(missing, "KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE go together (mutual TLS)")
    for name in ("KAFKA_SSL_CAFILE", "KAFKA_SSL_CERTFILE"):
        if files[name] and protocol not in ("SSL", "SASL_SSL"):
            raise SettingsError(name, f"needs KAFKA_SECURITY_PROTOCOL=SSL or SASL_SSL (got {protocol})")
    key_password = read.raw("KAFKA_SSL_KEY_PASSWORD")
    if key_password and not files["KAFKA_SSL_KEYFILE"]:
        raise SettingsError("KAFKA_SSL_KEY_PASSWORD", "is the passphrase of KAFKA_SSL_KEYFILE, which is not set")
    _check_tls_files(files["KAFKA_SSL_CAFILE"], files["KAFKA_SSL_CERTFILE"], files["KAFKA_SSL_KEYFILE"],
                     key_password)
    topic = _matching(_TOPIC_NAME, "a topic name of letters, digits, '.', '_' or '-'")
    idempotence = read.parse("KAFKA_IDEMPOTENCE", _choice(("true", "false"), lower=True)) == "true"
    transactions = read.parse("KAFKA_TRANSACTIONS", _choice(("true", "false"), lower=True)) == "true"
    if transactions and not idempotence:
        raise SettingsError("KAFKA_TRANSACTIONS", "transactions need the idempotent producer: set KAFKA_IDEMPOTENCE=true, "
                            "or KAFKA_TRANSACTIONS=false on a broker without either")
    kafka = KafkaSettings(
        bootstrap_servers=read.parse("BROKER_URL", _bootstrap_servers),
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=username,
        sasl_password=password,
        ssl_cafile=files["KAFKA_SSL_CAFILE"],
        ssl_certfile=files["KAFKA_SSL_CERTFILE"],
        ssl_keyfile=files["KAFKA_SSL_KEYFILE"],
        ssl_key_password=key_password,
        sasl_oauth_token_file=files["KAFKA_SASL_OAUTH_TOKEN_FILE"],
        compression=read.parse("KAFKA_COMPRESSION", _choice(KAFKA_COMPRESSIONS, lower=True)),
        linger_ms=read.parse("KAFKA_LINGER", _bounded_duration_ms("KAFKA_LINGER")),
        batch_bytes=read.parse("KAFKA_BATCH_BYTES", _bounded_size("KAFKA_BATCH_BYTES")),
        idempotence=idempotence,
        transactions=transactions,
        produce_acks=read.parse("PRODUCE_ACKS", _choice(("all", "1", "0"), lower=True)),
        topic_events=read.parse("TOPIC_EVENTS", topic),
        topic_dlq=read.parse("TOPIC_DLQ", topic),
        topic_late=read.parse("TOPIC_LATE", topic),
        topic_alerts=read.parse("TOPIC_ALERTS", topic),
        topic_partitions=read.parse("TOPIC_PARTITIONS", _bounded_size("TOPIC_PARTITIONS")),
        topic_replication=read.parse("TOPIC_REPLICATION", _bounded_size("TOPIC_REPLICATION")),
    )
    topics = [kafka.topic_events, kafka.topic_dlq, kafka.topic_late, kafka.topic_alerts]
    if len(set(topics)) != len(topics):
        raise SettingsError("TOPIC_DLQ", "TOPIC_EVENTS, TOPIC_DLQ, TOPIC_LATE and TOPIC_ALERTS must differ")
    windows = read.parse("WINDOWS", _bounded_windows)
    bucket, prefix = read.parse("LAKE_URL", _lake_url)
    lateness_ms = read.parse("ALLOWED_LATENESS", _bounded_duration_ms("ALLOWED_LATENESS"))
    spec = _aggregations(read.raw("AGGREGATIONS"), windows)
    rules = _alert_rules(read.raw("ALERT_RULES"), windows, spec)
    return Settings(
        app_id=read.parse("APP_ID", _matching(_APP_ID, "letters, digits, '.', '_' or '-'")),
        kafka=kafka,
        web=_web(read),
        state_dir=Path(read.raw("STATE_DIR") or _DEFAULTS["STATE_DIR"]),
        lake=LakeSettings(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=_optional_url(read, "S3_ENDPOINT_URL", _http_url),
            region=read.parse("S3_REGION", _matching(re.compile(r"^[a-z0-9-]{1,40}$"), "a region such as us-east-1")),
        ),
        redis=RedisSettings(
            url=read.parse("REDIS_URL", _redis_url),
            key_prefix=read.parse("REDIS_KEY_PREFIX", _matching(_KEY_PREFIX, "up to 64 letters, digits, ':', '_', '.' or '-'")),
            ttl_ms=read.parse("REDIS_TTL", _bounded_duration_ms("REDIS_TTL")),
            latest_n=read.parse("REDIS_LATEST_N", _bounded_size("REDIS_LATEST_N")),
        ),
        pipeline=PipelineSettings(
            windows=windows,
            allowed_lateness_ms=lateness_ms,
            idle_timeout_ms=read.parse("IDLE_TIMEOUT", _bounded_duration_ms("IDLE_TIMEOUT")),
            max_event_bytes=read.parse("MAX_EVENT_BYTES", _bounded_size("MAX_EVENT_BYTES")),
            max_clock_skew_ms=read.parse("MAX_CLOCK_SKEW", _bounded_duration_ms("MAX_CLOCK_SKEW")),
            archive_max_records=read.parse("ARCHIVE_MAX_RECORDS", _bounded_size("ARCHIVE_MAX_RECORDS")),
            archive_max_age_ms=read.parse("ARCHIVE_MAX_AGE", _bounded_duration_ms("ARCHIVE_MAX_AGE")),
            lag_warning_records=read.parse("LAG_WARNING", _bounded_size("LAG_WARNING")),
            ledger_retention_ms=read.parse("EXPORT_LEDGER_RETENTION", _bounded_duration_ms("EXPORT_LEDGER_RETENTION")),
            fault_injection=tuple(read.parse("FAULT_INJECTION", parse_faults).items()),
            alert_rules=rules,
            spec=spec,
        ),
        log_level=read.parse("LOG_LEVEL", _choice(_LOG_LEVELS, lower=True)),
        startup_timeout_ms=read.parse("STARTUP_TIMEOUT", _bounded_duration_ms("STARTUP_TIMEOUT")),
    )


def load_devstack(env: Mapping[str, str]) -> DevstackSettings:
    """Parse the embedded stack's settings; explicitly set service URLs mean 'already running'."""
    read = _Reader(env)
    ports = {name: read.parse(name, _port) for name in ("DEVSTACK_BROKER_PORT", "DEVSTACK_CONTROLLER_PORT",
                                                          "DEVSTACK_S3_PORT", "DEVSTACK_REDIS_PORT")}
    if ports["DEVSTACK_S3_PORT"] > 65535 - 9:
        raise SettingsError("DEVSTACK_S3_PORT", "SeaweedFS needs this port and the 9 above it: expected at most 65526")
    return DevstackSettings(
        data_dir=Path(read.raw("DEVSTACK_DIR") or _DEFAULTS["DEVSTACK_DIR"]),
        broker=read.parse("DEVSTACK_BROKER", _choice(("kafka", "tansu"), lower=True)),
        broker_port=ports["DEVSTACK_BROKER_PORT"],
        controller_port=ports["DEVSTACK_CONTROLLER_PORT"],
        broker_storage=read.parse("DEVSTACK_BROKER_STORAGE", _choice(("s3", "memory"), lower=True)),
        s3_port=ports["DEVSTACK_S3_PORT"],
        redis_port=ports["DEVSTACK_REDIS_PORT"],
        external_broker_url=read.raw("BROKER_URL") if read.is_set("BROKER_URL") else None,
        external_s3_endpoint=_optional_url(read, "S3_ENDPOINT_URL", _http_url),
        external_redis_url=read.raw("REDIS_URL") if read.is_set("REDIS_URL") else None,
    )


def exit_on_error(loader: Callable[[Mapping[str, str]], T], env: Mapping[str, str]) -> T:
    """Run `loader(env)`; on a bad setting print one line naming it and exit 2."""
    try:
        return loader(env)
    except SettingsError as exc:
        _fail(f"error: invalid setting {exc}")


def load_or_exit(env: Mapping[str, str]) -> Settings:
    return exit_on_error(load, env)


def _fail(line: str) -> NoReturn:
    print(line, file=sys.stderr)
    raise SystemExit(2)


def markdown_table() -> str:
    """The README's settings table, generated so that docs and code cannot disagree."""
    rows = ["| Setting | Default | Meaning |", "| --- | --- | --- |"]
    for s in SETTINGS_DOC:
        default = f"`{s.default}`" if s.default else "(empty)"
        rows.append(f"| `{s.name}` | {default} | {s.meaning}{_range(s.name)} |")
    return "\n".join(rows)


def _range(name: str) -> str:
    """The range of a bounded setting, as the table states it."""
    if name in DURATION_BOUNDS:
        low, high, _why = DURATION_BOUNDS[name]
    elif name in SIZE_BOUNDS:
        low_n, high_n, _why = SIZE_BOUNDS[name]
        low, high = f"{low_n:,}", f"{high_n:,}"
    elif name == "WINDOWS":
        low, high, _why = WINDOW_SIZE_BOUNDS
        return f" Sizes from {low} to {high}, steps of at least {low}, at most {MAX_WINDOWS_PER_EVENT} steps in a size."
    else:
        return ""
    return f" From {low} to {high}."
