"""Start the embedded services in dependency order, and stop them all, whatever happens."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from devstack import services
from devstack.ports import ensure_free
from ops.process import ManagedProcess
from settings import DevstackSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    broker_url: str
    s3_endpoint: str
    redis_url: str
    credentials: Mapping[str, str]
    broker: str = "external"  # kafka or tansu when the stack started it

    @property
    def broker_settings(self) -> dict[str, str]:
        """What the broker needs of its clients' settings (Tansu: no idempotent producer)."""
        return dict(services.TANSU_CLIENT_SETTINGS) if self.broker == "tansu" else {}

    def s3_client(self) -> Any:
        """A boto3 S3 client for this stack's endpoint and credentials."""
        return services.s3_client(self.s3_endpoint, self.credentials)

    def env(self) -> dict[str, str]:
        """Environment for processes that use the stack (worker, producer, tests)."""
        return {
            **self.credentials,
            **self.broker_settings,
            "BROKER_URL": self.broker_url,
            "S3_ENDPOINT_URL": self.s3_endpoint,
            "REDIS_URL": self.redis_url,
        }


# Service URLs in an environment make the stack reuse those services (see Stack).
SERVICE_URL_SETTINGS = ("BROKER_URL", "S3_ENDPOINT_URL", "REDIS_URL")
# Ports an isolated stack uses from its base port: broker, Redis, SeaweedFS's block, then Kafka's controller.
ISOLATED_PORT_COUNT = 3 + services.SEAWEEDFS_PORT_COUNT


def without_service_urls(env: Mapping[str, str]) -> dict[str, str]:
    """`env` less the service URLs, so that every service is started, whatever runs on the machine."""
    return {name: value for name, value in env.items() if name not in SERVICE_URL_SETTINGS}


def isolated_settings(data_dir: str, base_port: int, storage: str) -> dict[str, str]:
    """Devstack settings for a stack of its own on ISOLATED_PORT_COUNT ports from base_port (tests, bench)."""
    return {
        "DEVSTACK_DIR": data_dir,
        "DEVSTACK_BROKER_PORT": str(base_port),
        "DEVSTACK_REDIS_PORT": str(base_port + 1),
        "DEVSTACK_S3_PORT": str(base_port + 2),
        "DEVSTACK_CONTROLLER_PORT": str(base_port + 2 + services.SEAWEEDFS_PORT_COUNT),
        "DEVSTACK_BROKER_STORAGE": storage,
    }


class Stack:
    """The embedded broker, S3 and Redis. A service given by an explicit URL is not started."""

    def __init__(self, config: DevstackSettings, *, buckets: list[str], env: Mapping[str, str]) -> None:
        self.config = config
        self.buckets = buckets
        self.data_dir = config.data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        self._env = env
        self._processes: list[ManagedProcess] = []
        self._stop_grace_s: dict[str, float] = {}

    def _credentials(self) -> dict[str, str]:
        if self.config.external_s3_endpoint:
            return {name: self._env[name] for name in services.DEV_CREDENTIALS if name in self._env}
        return dict(services.DEV_CREDENTIALS)

    def start(self) -> Endpoints:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> Endpoints:
        config = self.config
        credentials = self._credentials()
        s3_endpoint = config.external_s3_endpoint
        if s3_endpoint is None:
            s3_endpoint = f"http://{services.HOST}:{config.s3_port}"
            self._run(services.seaweedfs(self.data_dir / "s3", config.s3_port, credentials))
        buckets = list(self.buckets)
        if config.external_broker_url is None and config.broker == "tansu" and config.broker_storage == "s3":
            buckets.append(services.BROKER_BUCKET)
        services.ensure_buckets(s3_endpoint, credentials, buckets)

        broker_url = config.external_broker_url
        if broker_url is None:
            broker_url = f"kafka://{services.HOST}:{config.broker_port}"
            if config.broker == "kafka":
                self._run(services.kafka(self.data_dir / "kafka", config.broker_port, config.controller_port,
                                         fresh=config.broker_storage == "memory"))
            else:
                self._run(services.tansu(config.broker_port, config.broker_storage, s3_endpoint, credentials))

        redis_url = config.external_redis_url
        if redis_url is None:
            redis_url = f"redis://{services.HOST}:{config.redis_port}/0"
            self._run(services.redis(self.data_dir / "redis", config.redis_port))
        broker = "external" if config.external_broker_url else config.broker
        return Endpoints(broker_url, s3_endpoint, redis_url, credentials, broker)

    def _run(self, spec: services.ServiceSpec) -> None:
        for port, setting in spec.ports.items():
            ensure_free(port, service=spec.name, setting=setting)
        for directory in (self.data_dir / "s3", self.data_dir / "redis", self.log_dir):
            directory.mkdir(parents=True, exist_ok=True)
        if spec.prepare is not None:
            spec.prepare()
        slug = spec.name.split(" ")[0]
        process = ManagedProcess(spec.name, spec.argv, log_path=self.log_dir / f"{slug}.log",
                                 env={**self._env, **spec.env}, cwd=self.data_dir)
        self.add(process, stop_grace_s=spec.stop_grace_s)
        process.start()
        process.wait_ready(spec.ready, timeout_s=spec.ready_timeout_s)
        log.info("%s ready (pid %s)", spec.name, process.pid)

    def add(self, process: ManagedProcess, *, stop_grace_s: float = 10.0) -> None:
        """Own another process (worker, producer): it is stopped first, before the services."""
        self._processes.append(process)
        self._stop_grace_s[process.name] = stop_grace_s

    def pid(self, name_prefix: str) -> int | None:
        """Process id of the running service whose name starts with name_prefix (tests freeze stores)."""
        for process in self._processes:
            if process.name.startswith(name_prefix):
                return process.pid
        return None

    def stop(self) -> None:
        while self._processes:
            process = self._processes.pop()
            process.stop(grace_s=self._stop_grace_s.get(process.name, 10.0))

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
