"""The credential checks on their own: member signatures, signed redirects, the gate's config."""

from __future__ import annotations

import time

import pytest

from aisync.auth import Gate, members, redirects
from aisync.auth.macs import KeyedMac
from aisync.config import AuthSection
from aisync.util.errors import ConfigError, NodeUnavailable, Unauthenticated

SECRET = b"s" * 32


def signed(method="PUT", target="/v1/metasync", body=b'{"a":1}', secret=SECRET) -> str:
    """A signature header value, as a member ``proxy-0`` sends it."""
    signer = members.MemberSigner("proxy-0", secret, lambda origin: True)
    return signer.header(method, target, members.body_digest(body))


def resigned(fields: list[str], method: str = "PUT", target: str = "/v1/metasync") -> str:
    """A header with the given fields and a valid MAC over them (what a holder of the secret
    could make): only the time, nonce and replay checks stand in its way."""
    prefix = members.signature_fields(*fields)
    return prefix + KeyedMac(SECRET, members.PURPOSE).hex(
        members.signed_text(method, target, prefix))


def test_member_signature_round_trip_and_replay():
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    signature = signed()
    assert members.MemberSigner("proxy-0", SECRET, lambda o: True).headers(
        "GET", "/", members.EMPTY_DIGEST).keys() == {members.SIGNATURE_HEADER}
    member, digest = verifier.verify("PUT", "/v1/metasync", signature)
    assert member == "proxy-0" and digest == members.body_digest(b'{"a":1}')
    with pytest.raises(Unauthenticated, match="replayed"):
        verifier.verify("PUT", "/v1/metasync", signature)


def test_member_nonces_are_unique_across_signers_and_requests():
    nonces = set()
    for _ in range(3):  # three processes' signers (each draws its own prefix)
        signer = members.MemberSigner("proxy-0", SECRET, lambda origin: True)
        for _ in range(100):
            nonces.add(signer.header("GET", "/", members.EMPTY_DIGEST).split("~")[2])
    assert len(nonces) == 300


@pytest.mark.parametrize("change", [
    {"method": "DELETE"},                          # another method
    {"target": "/v1/metasync?x=1"},                # another path or query
    {"secret": b"t" * 32},                         # another cluster's secret
])
def test_member_signature_covers_method_target_and_secret(change):
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    kwargs = {"method": "PUT", "target": "/v1/metasync", "secret": SECRET}
    signature = signed(**kwargs | {"secret": change.get("secret", SECRET)})
    with pytest.raises(Unauthenticated, match="bad intra-cluster signature"):
        verifier.verify(change.get("method", "PUT"), change.get("target", "/v1/metasync"),
                        signature)


@pytest.mark.parametrize("field", [0, 1, 2, 3])  # member, time, nonce, body digest
def test_member_signature_covers_every_field(field):
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    parts = signed().split("~")
    parts[field] = parts[field][:-1] + ("0" if parts[field][-1] != "0" else "1")
    with pytest.raises(Unauthenticated, match="bad intra-cluster signature"):
        verifier.verify("PUT", "/v1/metasync", "~".join(parts))


@pytest.mark.parametrize("mangle", [
    lambda p: p.__setitem__(1, "١٢٣"),            # Arabic-Indic digits: str.isdigit() says yes
    lambda p: p.__setitem__(1, "9" * 5000),       # a time no int() should be asked to read
    lambda p: p.__setitem__(2, "abc"),            # a nonce too short to be unique
    lambda p: p.__setitem__(3, "sha"),            # a digest that is none
    lambda p: p.__setitem__(4, "é" * 32),         # a MAC compare_digest would choke on
    lambda p: p.pop(),                            # a field missing
])
def test_member_signature_malformed(mangle):
    parts = signed().split("~")
    mangle(parts)
    with pytest.raises(Unauthenticated, match="malformed"):
        members.MemberVerifier(SECRET, max_clock_skew=30).verify("PUT", "/v1/metasync",
                                                                 "~".join(parts))


def test_member_signer_refuses_an_id_that_would_shift_the_fields():
    with pytest.raises(ValueError):
        members.MemberSigner("proxy~0", SECRET, lambda origin: True)


def test_member_signature_outside_the_clock_window():
    verifier = members.MemberVerifier(SECRET, max_clock_skew=30)
    parts = signed("GET", "/v1/node/status", b"").split("~")
    old = str(int((time.time() - 31) * 1000))
    # re-signed with an old time, as a replay of a captured request would carry
    with pytest.raises(Unauthenticated, match="clock-skew"):
        verifier.verify("GET", "/v1/node/status",
                        resigned([parts[0], old, parts[2], parts[3]], "GET", "/v1/node/status"))


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
    assert gate.client_session_options() == {} and gate.member_headers("GET", "/") == {}
    assert any("auth.enabled is false" in r.getMessage() for r in caplog.records)


def test_secrets_are_not_in_the_config_repr():
    section = AuthSection(admin_token="visible-token-123", cluster_secret="x" * 40)
    assert "visible-token-123" not in repr(section) and "x" * 40 not in repr(section)
    assert "visible-token-123" not in section.model_dump_json()
