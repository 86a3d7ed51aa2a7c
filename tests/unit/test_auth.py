"""The credential checks on their own: member signatures, signed redirects, the gate's config."""

from __future__ import annotations

import time

import pytest

from aisync.auth import Gate, members, redirects
from aisync.auth.macs import KeyedMac
from aisync.config import AuthSection
from aisync.util.errors import ConfigError, NodeUnavailable, Unauthenticated

SECRET = b"s" * 32


def signed(method="PUT", target="/v1/metasync", body=b'{"a":1}', secret=SECRET):
    signer = members.MemberSigner("proxy-0", secret, lambda origin: True)
    return signer.headers(method, target, members.body_digest(body))


def test_member_signature_round_trip_and_replay():
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    headers = signed()
    member, digest = verifier.verify("PUT", "/v1/metasync", headers)
    assert member == "proxy-0" and digest == members.body_digest(b'{"a":1}')
    with pytest.raises(Unauthenticated, match="replayed"):
        verifier.verify("PUT", "/v1/metasync", headers)


@pytest.mark.parametrize("change", [
    {"method": "DELETE"},                          # another method
    {"target": "/v1/metasync?x=1"},                # another path or query
    {"secret": b"t" * 32},                         # another cluster's secret
])
def test_member_signature_covers_method_target_and_secret(change):
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    kwargs = {"method": "PUT", "target": "/v1/metasync", "secret": SECRET}
    headers = signed(**kwargs | {"secret": change.get("secret", SECRET)})
    with pytest.raises(Unauthenticated, match="bad intra-cluster signature"):
        verifier.verify(change.get("method", "PUT"), change.get("target", "/v1/metasync"),
                        headers)


@pytest.mark.parametrize("header", [members.MEMBER_HEADER, members.NONCE_HEADER,
                                    members.DIGEST_HEADER, members.TIME_HEADER])
def test_member_signature_covers_every_header(header):
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    headers = signed()
    headers[header] = headers[header][:-1] + ("0" if headers[header][-1] != "0" else "1")
    with pytest.raises(Unauthenticated):
        verifier.verify("PUT", "/v1/metasync", headers)


def test_member_signature_with_other_scripts_digits_in_its_time():
    headers = signed()
    headers[members.TIME_HEADER] = "١٢٣"  # Arabic-Indic digits: str.isdigit() says yes
    with pytest.raises(Unauthenticated, match="incomplete"):
        members.MemberVerifier(SECRET, max_clock_skew=30).verify("PUT", "/v1/metasync", headers)


def test_member_signature_outside_the_clock_window():
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    signer = members.MemberSigner("proxy-0", SECRET, lambda origin: True)
    old = str(int((time.time() - 31) * 1000))
    mac_headers = signer.headers("GET", "/v1/node/status", members.EMPTY_DIGEST)
    # re-sign with an old time, as a replay of a captured request would carry
    canon = members.canonical("GET", "/v1/node/status", "proxy-0", old,
                              mac_headers[members.NONCE_HEADER], members.EMPTY_DIGEST)
    mac_headers[members.TIME_HEADER] = old
    mac_headers[members.SIGNATURE_HEADER] = KeyedMac(SECRET, members.PURPOSE).hex(canon)
    with pytest.raises(Unauthenticated, match="clock-skew"):
        verifier.verify("GET", "/v1/node/status", mac_headers)


def test_nonce_memory_remembers_each_nonce_for_at_least_its_window():
    now = [1000.0]
    memory = members.NonceMemory(window=60, limit=100, clock=lambda: now[0])
    assert memory.first_sight("a")
    for step in (30, 29.9):  # just under one window after "a": still seen
        now[0] += step
        assert not memory.first_sight("a")
    now[0] += 0.2  # rotation: "a" moves to the previous generation, still seen
    assert memory.first_sight("b")
    assert not memory.first_sight("a")
    now[0] += 60  # next rotation: "a" was seen over a window ago and is forgotten; "b" is kept
    assert not memory.first_sight("b")
    assert memory.first_sight("a")
    now[0] += 500  # a long quiet spell forgets everything at once
    assert memory.first_sight("b") and len(memory) == 1


def test_nonce_memory_fails_closed_when_full():
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30, max_nonces=3)
    for _ in range(3):
        verifier.verify("GET", "/x", signed("GET", "/x", b""))
    with pytest.raises(NodeUnavailable):
        verifier.verify("GET", "/x", signed("GET", "/x", b""))


KEY = redirects.RedirectKey(SECRET)


def test_signed_redirect_round_trip_and_its_limits():
    path = "/v1/objects/b/a%20b"
    query = KEY.sign("GET", path, "provider=ais", "proxy-0", 7, ttl=60)
    assert query.startswith("provider=ais&ais_auth=proxy-0~7~")
    assert KEY.verify("GET", f"{path}?{query}") == "proxy-0"
    with pytest.raises(Unauthenticated, match="bad redirect signature"):
        KEY.verify("DELETE", f"{path}?{query}")  # GET's, as DELETE
    with pytest.raises(Unauthenticated, match="bad redirect signature"):
        KEY.verify("GET", f"/v1/objects/b/other?{query}")
    with pytest.raises(Unauthenticated, match="bad redirect signature"):
        KEY.verify("GET", f"{path}?provider=gcp&" + query.split("&", 1)[1])
    with pytest.raises(Unauthenticated, match="changed after"):
        KEY.verify("GET", f"{path}?{query}&latest=true")  # a parameter no proxy signed
    with pytest.raises(Unauthenticated, match="only through a proxy"):
        KEY.verify("GET", f"{path}?provider=ais")
    with pytest.raises(Unauthenticated, match="only through a proxy"):  # not a parameter
        KEY.verify("GET", f"/v1/objects/b/x{query[len('provider=ais&'):]}")
    expired = KEY.sign("GET", "/v1/objects/b/k", "", "proxy-0", 7, ttl=-1)
    with pytest.raises(Unauthenticated, match="expired"):
        KEY.verify("GET", f"/v1/objects/b/k?{expired}")
    for token in ("x~y", "p~²~1~m", "p~1~" + "9" * 5000 + "~m", "p~1~2~é"):
        with pytest.raises(Unauthenticated, match="malformed"):
            KEY.verify("GET", f"/v1/objects/b/k?ais_auth={token}")
    with pytest.raises(ValueError):
        KEY.sign("GET", path, "", "proxy~0", 7, ttl=60)


@pytest.mark.parametrize("settings, message", [
    ({}, "auth.admin_token is not set"),
    ({"admin_token": "t"}, "auth.cluster_secret must be set"),
    ({"admin_token": "t", "cluster_secret": "short"}, "at least 32 characters"),
])
def test_gate_refuses_to_start_without_credentials(settings, message):
    with pytest.raises(ConfigError, match=message):
        Gate(AuthSection.model_validate(settings), "n", lambda origin: False)


def test_gate_lab_switch_logs_a_warning(caplog):
    gate = Gate(AuthSection(enabled=False), "n", lambda origin: False)
    assert gate.client_middlewares() == ()
    assert any("auth.enabled is false" in r.getMessage() for r in caplog.records)


def test_secrets_are_not_in_the_config_repr():
    section = AuthSection(admin_token="visible-token-123", cluster_secret="x" * 40)
    assert "visible-token-123" not in repr(section) and "x" * 40 not in repr(section)
    assert "visible-token-123" not in section.model_dump_json()
