"""Settings: defaults, every kind of bad value, and the one-line failure of the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from settings import (
    DURATION_BOUNDS,
    MAX_WINDOWS_PER_EVENT,
    SETTINGS_DOC,
    SIZE_BOUNDS,
    SettingsError,
    load,
    load_devstack,
    markdown_table,
)
from tables.windows import parse_duration_ms

ROOT = Path(__file__).resolve().parents[2]


def test_defaults() -> None:
    settings = load({})
    assert settings.kafka.bootstrap_servers == ("127.0.0.1:9092",)
    assert settings.web.bind == "127.0.0.1" and settings.web.port == 6066
    assert (settings.lake.bucket, settings.lake.prefix, settings.lake.endpoint_url) == ("lake", "", None)
    assert [(w.name, w.size_ms, w.step_ms) for w in settings.pipeline.windows] == [
        ("tumbling_1m", 60_000, 60_000),
        ("hopping_1m", 60_000, 30_000),
    ]
    assert settings.pipeline.allowed_lateness_ms == 60_000
    assert settings.redis.ttl_ms == 168 * 3_600_000


def test_values_are_parsed() -> None:
    settings = load({
        "BROKER_URL": "kafka://b1:9092; kafka://b2:9093",
        "LAKE_URL": "s3://my-lake/raw/zone/",
        "S3_ENDPOINT_URL": "http://127.0.0.1:9000/",
        "WINDOWS": "five:5m,ten:10m:5m",
        "LOG_LEVEL": "DEBUG",
        "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
        "KAFKA_SASL_USERNAME": "svc",
        "KAFKA_SASL_PASSWORD": "s3cret",
    })
    assert settings.kafka.broker_urls == ["kafka://b1:9092", "kafka://b2:9093"]
    assert (settings.lake.bucket, settings.lake.prefix) == ("my-lake", "raw/zone/")
    assert settings.lake.endpoint_url == "http://127.0.0.1:9000"
    assert [(w.name, w.size_ms, w.step_ms) for w in settings.pipeline.windows] == [
        ("five", 300_000, 300_000),
        ("ten", 600_000, 300_000),
    ]
    assert settings.log_level == "debug"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WEB_PORT", "abc"),
        ("WEB_PORT", "0"),
        ("WEB_PORT", "70000"),
        ("BROKER_URL", "http://127.0.0.1:9092"),
        ("BROKER_URL", "kafka://host-without-port"),
        ("BROKER_URL", "kafka://h:port"),
        ("LAKE_URL", "gs://bucket/"),
        ("LAKE_URL", "s3://Bad_Bucket/"),
        ("LAKE_URL", "s3://lake/a/../b"),
        ("S3_ENDPOINT_URL", "ftp://127.0.0.1"),
        ("S3_ENDPOINT_URL", "http://127.0.0.1:xyz"),
        ("REDIS_URL", "memcached://127.0.0.1"),
        ("REDIS_URL", "redis://127.0.0.1:nope/0"),
        ("WINDOWS", "zero:0s"),
        ("WINDOWS", "neg:-60s"),
        ("WINDOWS", "bad:60s:45s"),
        ("WINDOWS", ""),
        ("ALLOWED_LATENESS", "soon"),
        ("IDLE_TIMEOUT", "0s"),
        ("REDIS_TTL", "0"),
        ("TOPIC_PARTITIONS", "0"),
        ("TOPIC_EVENTS", "events/../x"),
        ("KAFKA_SECURITY_PROTOCOL", "TLS"),
        ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),  # without user and password
        ("LOG_LEVEL", "chatty"),
        ("MAX_EVENT_BYTES", "1"),
    ],
)
def test_bad_value_names_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load({name: value})
    # A SASL protocol without credentials is reported against the missing credential.
    expected = "KAFKA_SASL_USERNAME" if value == "SASL_SSL" else name
    assert caught.value.name == expected
    assert str(caught.value).startswith(f"{expected}: ")
    assert "\n" not in str(caught.value)


def test_secret_values_are_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "hunter2",
              "KAFKA_SASL_MECHANISM": "ROT13"})
    assert caught.value.name == "KAFKA_SASL_MECHANISM"
    assert "hunter2" not in str(caught.value)
    settings = load({"REDIS_URL": "redis://:hunter2@cache:6379/0"})
    assert "hunter2" not in repr(settings)


def test_a_password_in_a_url_is_never_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        load({"REDIS_URL": "redis://:hunter2@cache:port/0"})
    assert caught.value.name == "REDIS_URL" and "hunter2" not in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        load({"S3_ENDPOINT_URL": "https://key:hunter2@s3.example:9000"})
    assert caught.value.name == "S3_ENDPOINT_URL" and "credentials do not belong in the URL" in str(caught.value)
    assert "hunter2" not in str(caught.value) and "key" not in str(caught.value).split("got")[-1]


TOKEN = "t" * 16


@pytest.mark.parametrize(("env", "error"), [
    ({"WEB_BIND": "0.0.0.0"}, "WEB_BIND: 0.0.0.0 is reachable beyond this host, and WEB_AUTH_TOKEN is empty"),
    ({"WEB_BIND": "10.1.2.3"}, "WEB_BIND: 10.1.2.3 is reachable"),
    ({"WEB_BIND": "::"}, "WEB_BIND: :: is reachable"),
    ({"WEB_BIND": "worker.internal"}, "WEB_BIND: worker.internal is reachable"),  # a name may resolve anywhere
    ({"WEB_AUTH": "none", "WEB_AUTH_TOKEN": TOKEN}, "WEB_AUTH: none, but WEB_AUTH_TOKEN is set"),
    ({"WEB_AUTH": "open"}, "WEB_AUTH: expected one of token, none"),
    ({"WEB_BIND": "0.0.0.0", "WEB_AUTH": "none"}, None),  # the explicit opt-out
    ({"WEB_BIND": "0.0.0.0", "WEB_AUTH_TOKEN": TOKEN}, None),
    ({"WEB_BIND": "127.0.0.2"}, None),
    ({"WEB_BIND": "::1"}, None),
    ({"WEB_BIND": "localhost"}, None),
])
def test_a_web_server_beyond_loopback_needs_a_token_or_an_explicit_opt_out(env: dict[str, str],
                                                                          error: str | None) -> None:
    if error is None:
        assert load(env).web.bind == env.get("WEB_BIND", "127.0.0.1")
        return
    with pytest.raises(SettingsError) as caught:
        load(env)
    assert str(caught.value).startswith(error), str(caught.value)


def test_devstack_explicit_urls_mean_external_services() -> None:
    config = load_devstack({"BROKER_URL": "kafka://10.0.0.5:9092", "DEVSTACK_S3_PORT": "9000"})
    assert config.external_broker_url == "kafka://10.0.0.5:9092"
    assert config.external_s3_endpoint is None and config.external_redis_url is None
    assert config.s3_port == 9000 and config.broker_storage == "s3"
    with pytest.raises(SettingsError, match="^DEVSTACK_S3_PORT"):
        load_devstack({"DEVSTACK_S3_PORT": "65530"})


def test_devstack_broker_is_kafka_unless_tansu_is_asked_for() -> None:
    config = load_devstack({})
    assert (config.broker, config.broker_port, config.controller_port) == ("kafka", 9092, 9093)
    assert load_devstack({"DEVSTACK_BROKER": "Tansu"}).broker == "tansu"
    with pytest.raises(SettingsError, match="^DEVSTACK_BROKER"):
        load_devstack({"DEVSTACK_BROKER": "redpanda"})
    with pytest.raises(SettingsError, match="^DEVSTACK_CONTROLLER_PORT"):
        load_devstack({"DEVSTACK_CONTROLLER_PORT": "0"})


def test_every_documented_setting_is_read() -> None:
    source = (ROOT / "settings.py").read_text()
    for setting in SETTINGS_DOC:
        assert source.count(f'"{setting.name}"') >= 2, f"{setting.name} is documented but never read"


@pytest.mark.parametrize("command", [["-m", "faust", "-A", "app", "worker"], ["-m", "devstack", "run"]])
def test_cli_rejects_bad_setting_with_one_line(command: list[str]) -> None:
    env = {**os.environ, "WEB_PORT": "abc", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, *command], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "error: invalid setting WEB_PORT: expected an integer from 1 to 65535 (got 'abc')"
    ]


def test_the_worker_refuses_an_open_port_without_a_token_in_one_line() -> None:
    env = {**os.environ, "WEB_BIND": "0.0.0.0", "PYTHONPATH": str(ROOT)}
    env.pop("WEB_AUTH_TOKEN", None)
    env.pop("WEB_AUTH", None)
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "worker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "error: invalid setting WEB_BIND: 0.0.0.0 is reachable beyond this host, and WEB_AUTH_TOKEN is empty: set "
        "WEB_AUTH_TOKEN, or WEB_AUTH=none to serve every window, alert and rollup to whoever reaches the port"]


def test_the_idempotent_producer_is_on_unless_turned_off() -> None:
    assert load({}).kafka.idempotence is True
    assert load({"KAFKA_IDEMPOTENCE": "FALSE", "KAFKA_TRANSACTIONS": "false"}).kafka.idempotence is False
    with pytest.raises(SettingsError, match="^KAFKA_IDEMPOTENCE"):
        load({"KAFKA_IDEMPOTENCE": "yes"})


def test_transactions_are_on_by_default_and_need_the_idempotent_producer() -> None:
    assert load({}).kafka.transactions is True
    assert load({"KAFKA_TRANSACTIONS": "False"}).kafka.transactions is False
    with pytest.raises(SettingsError, match="^KAFKA_TRANSACTIONS: transactions need the idempotent producer"):
        load({"KAFKA_IDEMPOTENCE": "false"})
    with pytest.raises(SettingsError, match="^KAFKA_TRANSACTIONS"):
        load({"KAFKA_TRANSACTIONS": "maybe"})


def test_tls_files_are_checked_at_start_up_with_one_line(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    from cryptography.hazmat.primitives import serialization

    ca = trustme.CA()
    client = ca.issue_cert("client")
    key = serialization.load_pem_private_key(client.private_key_pem.bytes(), password=None)
    files = {"ca": ca.cert_pem.bytes(), "cert": client.cert_chain_pems[0].bytes(), "junk": b"no PEM here\n",
             "key": key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.BestAvailableEncryption(b"right"))}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    tls = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(tmp_path / "ca"),
           "KAFKA_SSL_CERTFILE": str(tmp_path / "cert"), "KAFKA_SSL_KEYFILE": str(tmp_path / "key")}
    settings = load({**tls, "KAFKA_SSL_KEY_PASSWORD": "right"})
    assert settings.kafka.ssl_key_password == "right" and "right" not in repr(settings)
    cases = [({"KAFKA_SSL_CAFILE": str(tmp_path / "junk")}, "KAFKA_SSL_CAFILE"),
             ({}, "KAFKA_SSL_KEY_PASSWORD: " + str(tmp_path / "key") + " is encrypted"),
             ({"KAFKA_SSL_KEY_PASSWORD": "wrong"}, "KAFKA_SSL_KEY_PASSWORD: does not decrypt"),
             ({"KAFKA_SSL_CERTFILE": str(tmp_path / "junk"), "KAFKA_SSL_KEY_PASSWORD": "right"}, "KAFKA_SSL_CERTFILE")]
    for change, error in cases:
        with pytest.raises(SettingsError) as caught:
            load({**tls, **change})
        assert str(caught.value).startswith(error), str(caught.value)
        assert "wrong" not in str(caught.value) and "right" not in str(caught.value)
    with pytest.raises(SettingsError, match="^KAFKA_SSL_KEY_PASSWORD: is the passphrase of KAFKA_SSL_KEYFILE"):
        load({"KAFKA_SSL_KEY_PASSWORD": "right"})


@pytest.mark.parametrize(("env", "error"), [
    ({"BROKER_ULR": "kafka://b:9092"}, "BROKER_ULR: not a setting of this application, which would ignore it: did you "
                                       "mean BROKER_URL?"),
    ({"WEB_PROT": "8080"}, "WEB_PROT: not a setting of this application, which would ignore it: did you mean "
                           "WEB_PORT?"),
    ({"WEB_AUTH_TOKN": "t" * 16}, "WEB_AUTH_TOKN: not a setting of this application, which would ignore it: did you "
                                  "mean WEB_AUTH_TOKEN?"),
    ({"KAFKA_SSL_CA_FILE": "/ca.pem"}, "KAFKA_SSL_CA_FILE: not a setting of this application, which would ignore it: "
                                       "did you mean KAFKA_SSL_CAFILE?"),
    ({"web_port": "8080"}, "web_port: settings are named in capitals: set WEB_PORT"),
    ({"S3_BUCKET": "lake"}, "S3_BUCKET: not a setting of this application, which would ignore it: the README's "
                            "settings table lists them"),
    ({"REDIS_PORT": "6379"}, "REDIS_PORT: not a setting of this application, which would ignore it: did you mean "
                             "REDIS_URL?"),  # a number, not a Kubernetes service link's tcp:// address
])
def test_a_mistyped_setting_is_refused_with_the_closest_name(env: dict[str, str], error: str) -> None:
    with pytest.raises(SettingsError) as caught:
        load(env)
    assert str(caught.value) == error


def test_other_programs_variables_with_a_settings_prefix_are_left_alone() -> None:
    """Kafka's launch scripts' variables, and the addresses Kubernetes gives a pod of every Service in its
    namespace (a Service named redis or kafka), are not mistyped settings."""
    settings = load({"KAFKA_HEAP_OPTS": "-Xmx1g", "KAFKA_OPTS": "", "REDIS_SERVICE_HOST": "10.0.0.7",
                     "REDIS_SERVICE_PORT": "6379", "REDIS_SERVICE_PORT_CLIENT": "6379",
                     "REDIS_PORT": "tcp://10.0.0.7:6379", "REDIS_PORT_6379_TCP": "tcp://10.0.0.7:6379",
                     "REDIS_PORT_6379_TCP_ADDR": "10.0.0.7", "REDIS_PORT_6379_TCP_PROTO": "tcp",
                     "KAFKA_PORT": "tcp://[fd00::1]:9092", "APP_ENV": "production", "LOG_FORMAT": "json"})
    assert settings.redis.url == "redis://127.0.0.1:6379/0"


@pytest.mark.parametrize("name", sorted(DURATION_BOUNDS))
def test_every_duration_has_a_floor_and_a_ceiling_that_say_why(name: str) -> None:
    low, high, why = DURATION_BOUNDS[name]
    low_ms, high_ms = parse_duration_ms(low), parse_duration_ms(high)
    assert 0 <= low_ms < high_ms and why
    accepted = [f"{low_ms}ms", f"{high_ms}ms"]
    refused = [f"{high_ms + 1}ms"] + ([f"{low_ms - 1}ms"] if low_ms > 0 else [])
    for value in accepted:
        load({name: value})
    for value in refused:
        with pytest.raises(SettingsError) as caught:
            load({name: value})
        assert str(caught.value) == f"{name}: expected a duration from {low} to {high}: {why} (got {value!r})"
    assert f"From {low} to {high}." in markdown_table()


@pytest.mark.parametrize("name", sorted(SIZE_BOUNDS))
def test_every_size_has_a_floor_and_a_ceiling_that_say_why(name: str) -> None:
    low, high, why = SIZE_BOUNDS[name]
    for value in (low, high):
        load({name: str(value)})
    for value in (low - 1, high + 1):
        with pytest.raises(SettingsError) as caught:
            load({name: str(value)})
        assert str(caught.value) == f"{name}: expected an integer from {low} to {high}: {why} (got '{value}')"
    assert f"From {low:,} to {high:,}." in markdown_table()


@pytest.mark.parametrize(("windows", "error"), [
    ("a:1ms", "window 'a': expected a size from 1s to 24h"),
    ("a:999ms", "window 'a': expected a size from 1s to 24h"),
    ("a:25h", "window 'a': expected a size from 1s to 24h"),
    ("a:10s:500ms", "window 'a': expected a step of at least 1s"),
    ("a:24h:1m", f"window 'a': its size is 1440 steps, and each event is folded into that many windows: expected at "
                 f"most {MAX_WINDOWS_PER_EVENT}"),
    ("a:1s,b:24h:24m", None),
    ("a:1h:1m", None),  # 60 windows per event: the most
])
def test_windows_are_bounded_in_size_and_in_windows_per_event(windows: str, error: str | None) -> None:
    if error is None:
        assert [w.name for w in load({"WINDOWS": windows}).pipeline.windows] == [
            item.split(":")[0] for item in windows.split(",")]
        return
    with pytest.raises(SettingsError) as caught:
        load({"WINDOWS": windows})
    assert str(caught.value).startswith(f"WINDOWS: {error}"), str(caught.value)


@pytest.mark.parametrize("protocol", ["PLAINTEXT", "SSL"])
@pytest.mark.parametrize(("name", "value"), [("KAFKA_SASL_USERNAME", "svc"), ("KAFKA_SASL_PASSWORD", "hunter2"),
                                             ("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
                                             ("KAFKA_SASL_OAUTH_TOKEN_FILE", "/run/token")])
def test_sasl_settings_without_a_sasl_protocol_are_refused(protocol: str, name: str, value: str) -> None:
    """Credentials under PLAINTEXT or SSL would be ignored, and the worker would run without logging in."""
    with pytest.raises(SettingsError) as caught:
        load({"KAFKA_SECURITY_PROTOCOL": protocol, name: value})
    assert str(caught.value) == (f"{name}: a SASL setting, and KAFKA_SECURITY_PROTOCOL={protocol} does not log in: "
                                 "set SASL_SSL (or SASL_PLAINTEXT), or unset it")
    assert "hunter2" not in str(caught.value)


def test_a_mistyped_setting_stops_the_worker_in_one_line() -> None:
    env = {**os.environ, "BROKER_ULR": "kafka://10.0.0.1:9092", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "worker"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == ["error: invalid setting BROKER_ULR: not a setting of this application, "
                                          "which would ignore it: did you mean BROKER_URL?"]


def test_worker_help_does_not_offer_the_flags_that_bypass_the_settings() -> None:
    """`worker --help` advertised `-h/--web-host (default: 0.0.0.0)`; those flags are refused (e2e
    test_hardening), so they are not offered either."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-m", "faust", "-A", "app", "worker", "--help"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--loglevel" in result.stdout
    for shown in ("0.0.0.0", "--web-host", "--web-bind", "--web-port", "--web-transport", "--without-web"):
        assert shown not in result.stdout
