"""Who the web API answers and whom it trusts with its token (web/views.py ApiView, settings.HostList):
without a token, a Host header naming another host answers 421 (DNS rebinding); with one, the token goes
only to the workers WEB_PEER_HOSTS lists (and loopback), whatever URL the consumer group advertises."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from faust.web import exceptions
from yarl import URL

from settings import SettingsError, load
from web.admission import Admission
from web.params import request_host
from web.views import ApiView, WindowsView, peer_refused

TOKEN = "t" * 32


class FakeWeb:
    def json(self, value: Any, *, content_type: str | None = None, status: int = 200, reason: str | None = None,
             headers: Any = None) -> SimpleNamespace:
        return SimpleNamespace(status=status, body=value, headers={})


def get(env: dict[str, str], headers: dict[str, str]) -> SimpleNamespace:
    sensors = SimpleNamespace(on_web_request_start=lambda *a, **k: None, on_web_request_end=lambda *a, **k: None)
    settings = load(env)
    stats = SimpleNamespace(low_frontier_ms=None, low_frontier_advanced_at_ms=None)
    pipeline = SimpleNamespace(ingest=SimpleNamespace(partitions={}))
    app = SimpleNamespace(settings=settings, sensors=sensors, stats=stats, pipeline=pipeline,
                          admission=Admission(1000))
    request = SimpleNamespace(method="GET", match_info={}, query={}, headers=headers)
    return asyncio.run(WindowsView(app, FakeWeb()).dispatch(request))  # type: ignore[arg-type]


@pytest.mark.parametrize(("header", "host"), [
    ("127.0.0.1:6066", "127.0.0.1"), ("[::1]:6066", "::1"), ("[::1]", "::1"), ("example.com", "example.com"),
    ("Example.COM:80", "Example.COM"), (None, None), ("", None),
])
def test_the_host_of_a_host_header(header: str | None, host: str | None) -> None:
    assert request_host(header) == host


@pytest.mark.parametrize("host", ["127.0.0.1:6066", "localhost:6066", "[::1]:6066", "10.1.2.3:6066", "LOCALHOST",
                                  "worker-1.internal:6066", "dash.example:443"])
def test_without_a_token_the_api_answers_its_own_names_and_any_address(host: str) -> None:
    env = {"WEB_HOST": "worker-1.internal", "WEB_ALLOWED_HOSTS": "dash.example"}
    assert get(env, {"Host": host}).status == 200
    assert get(env, {}).status == 200  # no Host header: not a browser


@pytest.mark.parametrize("host", ["attacker.example:6066", "127.0.0.1.attacker.example", "localhost.evil:6066"])
def test_without_a_token_another_name_answers_421(host: str) -> None:
    response = get({}, {"Host": host})
    assert (response.status, response.body["error"]["status"]) == (421, 421)
    assert "add the name to WEB_ALLOWED_HOSTS" in response.body["error"]["message"]
    assert get({"WEB_ALLOWED_HOSTS": "*"}, {"Host": host}).status == 200
    # With a token, the token is the guard: the name is not checked, the token is.
    assert get({"WEB_AUTH_TOKEN": TOKEN}, {"Host": host}).status == 401
    assert get({"WEB_AUTH_TOKEN": TOKEN}, {"Host": host, "Authorization": f"Bearer {TOKEN}"}).status == 200


def app_with(env: dict[str, str]) -> Any:
    return SimpleNamespace(settings=load(env))


@pytest.mark.parametrize(("env", "url", "refused"), [
    ({"WEB_AUTH_TOKEN": TOKEN}, "http://127.0.0.1:6067", False),
    ({"WEB_AUTH_TOKEN": TOKEN}, "http://[::1]:6067", False),
    ({"WEB_AUTH_TOKEN": TOKEN}, "http://localhost:6067", False),
    ({"WEB_AUTH_TOKEN": TOKEN}, "http://10.0.0.7:6066", True),  # not listed: the default is loopback only
    ({"WEB_AUTH_TOKEN": TOKEN, "WEB_PEER_HOSTS": "10.0.0.0/8"}, "http://10.0.0.7:6066", False),
    ({"WEB_AUTH_TOKEN": TOKEN, "WEB_PEER_HOSTS": "10.0.0.0/8"}, "http://192.168.0.7:6066", True),
    ({"WEB_AUTH_TOKEN": TOKEN, "WEB_PEER_HOSTS": "worker-2.svc, worker-3.svc"}, "http://WORKER-2.svc:6066", False),
    ({"WEB_AUTH_TOKEN": TOKEN, "WEB_PEER_HOSTS": "worker-2.svc"}, "http://collector.example:80", True),
    ({}, "http://collector.example:80", False),  # no token: nothing to give away
])
def test_the_token_goes_only_to_listed_peers(env: dict[str, str], url: str, refused: bool) -> None:
    reason = peer_refused(app_with(env), URL(url))
    assert (reason is not None) == refused
    if reason:
        assert "is not in WEB_PEER_HOSTS" in reason and TOKEN not in reason


def test_a_routed_request_to_an_unlisted_owner_answers_503_without_asking_it() -> None:
    asked: list[Any] = []
    app = SimpleNamespace(settings=load({"WEB_AUTH_TOKEN": TOKEN}),
                          http_client=SimpleNamespace(get=lambda *a, **k: asked.append(a)))
    view = ApiView(app, FakeWeb())  # type: ignore[arg-type]
    request = SimpleNamespace(url=URL("http://127.0.0.1:6066/v1/windows/w/value"), query={})
    with pytest.raises(exceptions.ServiceUnavailable, match="'collector.example' is not in WEB_PEER_HOSTS"):
        asyncio.run(view.route(request, URL("http://collector.example:80")))  # type: ignore[arg-type]
    assert asked == []


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WEB_PEER_HOSTS", "a b", "'a b' is not a host name, IP address or network"),
    ("WEB_PEER_HOSTS", "*", "'*' is not a host name"),  # every peer would be the old behaviour: list them
    ("WEB_ALLOWED_HOSTS", "http://x", "is not a host name"),
])
def test_bad_host_lists_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        load({name: value})
