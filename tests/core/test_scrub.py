"""The scrubber (``agentmeter._scrub``): table tests, properties, and every layer that must use it."""

from __future__ import annotations

import functools
import string
from typing import Any

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from agentmeter import _guard, track_run
from agentmeter._capture import jsonable
from agentmeter._scrub import NOT_SECRET, REDACTED, is_secret_key, scrub, scrub_fields
from agentmeter._status import error_fields
from agentmeter.testing import capture_runs

R = REDACTED

# (text, scrubbed) - what a user would see stored or logged
TEXTS = [
    ("Authorization: Bearer sk-proj-Zq8vJ1wXk2LmN3oP4qRs5tUv", f"Authorization: Bearer {R}"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", f"Authorization: Basic {R}"),
    ("curl -H 'Authorization: Token 9f8e7d6c5b4a3210'", f"curl -H 'Authorization: Token {R}'"),
    ("bearer abcdefghijklmnop", f"bearer {R}"),
    ("postgres://u:hunter2pass@h/db refused", f"postgres://u:{R}@h/db refused"),
    ("mongdb://admin:S3cretPassw0rd@db.example.com:27017/agents",  # mistyped scheme
     f"mongdb://admin:{R}@db.example.com:27017/agents"),
    ("mongodb+srv://app:pa@ss:w0rd@cluster0.x.net/db?retryWrites=true",  # an unescaped @ in the password
     f"mongodb+srv://app:{R}@cluster0.x.net/db?retryWrites=true"),
    ("redis://:topsecret@cache:6379/0", f"redis://:{R}@cache:6379/0"),
    ("url=postgres://u:pw12345@h/db", f"url=postgres://u:{R}@h/db"),
    ("key sk-ant-api03-x9Y8w7V6u5T4s3R2q1P0o9N8m7L6k5J4 expired", f"key {R} expired"),
    ("OPENAI sk-svcacct-AbCdEfGhIjKlMnOpQrStUv", f"OPENAI {R}"),
    ("stripe sk_live_4eC39HqLyjWDarjtT1zdp7dc", f"stripe {R}"),
    ("AKIAIOSFODNN7EXAMPLE and ASIAY34FZKBOKMUTVV7A", f"{R} and {R}"),
    ("clone with ghp_a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8", f"clone with {R}"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz", R),
    ("tvly-dev-AbCdEfGhIjKlMnOpQrSt1234 quota", f"{R} quota"),
    ("hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567", R),
    ("xoxb-123456789012-abcdefghijkl", R),
    ("AIzaSyA1234567890abcdefghijklmnopqrstuv", R),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c ok",
     f"jwt {R} ok"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY----- after", f"{R} after"),
    ("-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC (cut", R),
    ("password=hunter2&user=bob", f"password={R}&user=bob"),
    ('{"password": "hunter 2", "max_tokens": 512, "user": "bob"}',
     f'{{"password": "{R}", "max_tokens": 512, "user": "bob"}}'),
    ("Client(api_key='abc123def456', timeout=3)", f"Client(api_key='{R}', timeout=3)"),
    ("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", f"aws_secret_access_key={R}"),
    ("db.pwd: s3cr3t!", f"db.pwd: {R}"),
    ("X-Api-Key: zzzzzzzz1", f"X-Api-Key: {R}"),
    ("Cookie: sessionid=abc123; theme=dark", f"Cookie: {R}; theme=dark"),
    ("passphrase='correct horse battery'", f"passphrase='{R}'"),
    ("İstanbul: token=abc123def; Bearer abcdefghijkl", f"İstanbul: token={R}; Bearer {R}"),  # lower() grows İ
]
# texts that must come back unchanged (the same object)
CLEAN = [
    "",
    "short",
    "KeyError: 'missing'",
    "max_tokens=100 input_tokens: 5 token_count=7",
    "Token counting is approximate",
    "Basic authentication failed for user bob",
    "http://example.com:8080/path and https://example.com/a@b",
    "mailto:joe@example.com",
    "author: Jane Doe, keyword: agents",
    "The model's maximum context length is 8192 tokens; you requested 9000 tokens.",
    "task-1234567890abcdefghij",  # "sk-" inside a word
    "Asia/Tokyo",
    "a" * 10_000,
]

SECRET_KEYS = [
    "api_key", "apiKey", "API-KEY", "apikey", "X-Api-Key", "x_api_key", "openai_key", "OPENAI_API_KEY",
    "anthropic_api_key", "aws_access_key_id", "aws_secret_access_key", "AWS_SESSION_TOKEN", "auth", "x_auth",
    "X-Auth", "X-Auth-Token", "Authorization", "proxy-authorization", "oauth", "password", "db_password",
    "dbPassword", "pwd", "mysql_pwd", "passwd", "passphrase", "passcode", "db_pass", "secret", "client_secret",
    "clientSecret", "secrets", "token", "access_token", "refresh_token", "id_token", "csrftoken", "hf_token",
    "github_token", "bearer_token", "sessionid", "session_key", "session_token", "PHPSESSID",
    "cookie", "Set-Cookie", "cookies", "credentials", "creds", "private_key", "privateKey", "jwt",
    "subscription_key", "Ocp-Apim-Subscription-Key",
]
NOT_SECRET_KEYS = [
    *sorted(NOT_SECRET), "tokens", "token_count", "token_type", "token_usage", "tokenizer", "author", "authors",
    "authority", "authenticated", "key", "keys", "primary_key", "cache_key", "sort_key", "idempotency_key",
    "monkey", "keyword", "passage", "pass_rate", "pass", "compass", "bypass", "session", "session_name",
    "session_id", "sessionId",  # agent sessions: a grouping key every peer stores (Langfuse, OTel session.id)
    "query", "depth", "options", "headers", "secretary", "name", "url",
]


@pytest.mark.parametrize(("text", "expected"), TEXTS)
def test_scrub_replaces_credentials_and_keeps_the_rest(text: str, expected: str) -> None:
    assert scrub(text) == expected
    assert scrub(expected) == expected  # idempotent


@pytest.mark.parametrize("text", CLEAN)
def test_scrub_leaves_clean_text_alone(text: str) -> None:
    assert scrub(text) is text


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_key_names(key: str) -> None:
    assert is_secret_key(key), key


@pytest.mark.parametrize("key", NOT_SECRET_KEYS)
def test_token_counts_and_ordinary_keys_are_not_secret(key: str) -> None:
    assert not is_secret_key(key), key


# -- properties -------------------------------------------------------------------------------------------
_B64URL = string.ascii_letters + string.digits + "-_"
_ALNUM = string.ascii_letters + string.digits


def _s(alphabet: str, lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=alphabet, min_size=lo, max_size=hi)


SECRETS = st.one_of(
    st.builds(lambda p, b: p + b, st.sampled_from(["sk-", "sk-proj-", "sk-ant-api03-", "sk-svcacct-"]),
              _s(_ALNUM + "-_", 20, 60)),
    st.builds(lambda p, b: p + b, st.sampled_from(["AKIA", "ASIA"]), _s(string.ascii_uppercase + string.digits,
                                                                        16, 16)),
    st.builds(lambda p, b: p + b, st.sampled_from(["ghp_", "gho_", "ghs_"]), _s(_ALNUM, 36, 40)),
    st.builds(lambda b: "github_pat_" + b, _s(_ALNUM + "_", 22, 80)),
    st.builds(lambda a, b, c: f"eyJ{a}.{b}.{c}", _s(_B64URL, 8, 40), _s(_B64URL, 8, 80), _s(_B64URL, 0, 43)),
)
PASSWORDS = _s(string.ascii_letters + string.digits + "!$%^&*()_+-=.~:;,[]{}|<>", 6, 30).filter(
    lambda p: REDACTED not in p)
SURROUNDING = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(secret=SECRETS, before=SURROUNDING, after=SURROUNDING)
def test_a_provider_key_or_jwt_never_survives_in_any_text(secret: str, before: str, after: str) -> None:
    out = scrub(f"{before} {secret} {after}")
    assert secret not in out


@settings(max_examples=300, deadline=None)
@given(scheme=st.sampled_from(["postgres", "postgresql+psycopg", "mongodb", "mongodb+srv", "mongdb", "redis",
                               "amqp", "https", "mysql"]),
       user=_s(_ALNUM + "._-", 0, 12), password=PASSWORDS,
       before=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters=":="), max_size=40))
@example(scheme="mongodb", user="admin", password="p@ss", before="")
def test_the_password_of_a_url_never_survives(scheme: str, user: str, password: str, before: str) -> None:
    url = f"{scheme}://{user}:{password}@db.example.com:5432/app"
    out = scrub(f"{before} {url} refused")
    assert f":{password}@" not in out
    assert f"{scheme}://{user}:{REDACTED}@db.example.com:5432/app" in out


@settings(max_examples=300, deadline=None)
@given(key=st.sampled_from(["password", "api_key", "X-Api-Key", "openai_key", "pwd", "secret", "token",
                            "aws_secret_access_key", "Authorization", "db.passwd", "sessionid"]),
       sep=st.sampled_from(["=", ": ", ":", " = ", '": "', "='", '="', "\t:\t"]),
       value=_s(_ALNUM + "!$%^*+./~", 4, 30), before=SURROUNDING)
@example(key="password", sep="=", value="*000", before="TOKEN")  # found by Hypothesis: "Token <cred>" took
@example(key="password", sep=": ", value="abc!def", before="Bearer")  # the key as the credential
def test_the_value_of_a_secret_named_pair_never_survives(key: str, sep: str, value: str, before: str) -> None:
    close = sep[-1] if sep[-1] in "\"'" else ""
    text = f"{before} {key}{sep}{value}{close} tail"
    assume(value not in before and value not in key)
    assume(not (sep == ":" and value.startswith("//")))  # key://value is a URL
    assert value not in scrub(text)


@settings(max_examples=500, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=300))
def test_scrub_never_raises_and_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert isinstance(once, str)
    assert scrub(once) == once


_SECRET_WORDS = ("pass", "pwd", "secret", "token", "key", "auth", "cookie", "cred", "sess", "jwt", "bearer")
#: "<word>_tokens" with these words are credentials (OIDC id tokens, access tokens...), not counts
_CREDENTIAL_TOKENS = ("id", "access", "refresh", "session", "csrf", "xsrf", "api")
TOKEN_PREFIXES = st.one_of(
    st.sampled_from(["input", "output", "max", "total", "prompt", "completion", "cached_input", "reasoning",
                     "max_output", "max_completion", "audio", "cache_creation_input", "cache_read_input",
                     "accepted_prediction", "rejected_prediction", "num", "n", "used", "remaining"]),
    st.text(string.ascii_lowercase + "_", min_size=1, max_size=20).filter(
        lambda p: not any(w in p for w in _SECRET_WORDS)
        and not p.replace("_", "").endswith(_CREDENTIAL_TOKENS)),
)


@settings(max_examples=300, deadline=None)
@given(TOKEN_PREFIXES, st.sampled_from(["_", "-", ""]))
def test_any_token_count_key_is_not_a_secret(prefix: str, sep: str) -> None:
    for key in (f"{prefix}{sep}tokens", f"{prefix}{sep}token{sep}count", f"{prefix.title()}Tokens"):
        assert not is_secret_key(key), key


# -- every layer uses it ----------------------------------------------------------------------------------
def test_error_messages_are_scrubbed_even_past_the_length_cut() -> None:
    key = "sk-proj-" + "A" * 40
    _, _, short = error_fields(ConnectionError(f"Authorization: Bearer {key}"))
    assert short == f"Authorization: Bearer {R}"
    _, _, long = error_fields(ValueError("x" * 1990 + f" {key}"))  # the key straddles the 2000-char cut
    assert len(long) <= 2000 and "sk-proj-" not in long and "AAAA" not in long


def test_captured_values_reprs_and_list_header_pairs_are_scrubbed() -> None:
    class Client:
        def __repr__(self) -> str:
            return "Client(api_key='sk-ant-api03-abcdefghijklmnopqrstu', base_url='https://x')"

    key = "sk-ant-api03-abcdefghijklmnopqrstu"
    value = {"client": Client(), "partial": functools.partial(print, api_key=key),
             "headers": [["X-Api-Key", "k-123"], ["Accept", "json"]],
             "pairs": [("authorization", "Basic abc"), ("n", 1)], "openai_key": "k", "max_tokens": 3,
             "dsn": "postgres://u:hunter2pass@h/db", "x_auth": "t"}
    got = jsonable(value).value
    assert got == {
        # a user's own __repr__ is never called (it could block or leak): the type is named instead
        "client": f"<{__name__}.test_captured_values_reprs_and_list_header_pairs_are_scrubbed.<locals>.Client object>",
        # a standard library repr is stored, scrubbed
        "partial": f"functools.partial(<built-in function print>, api_key='{R}')",
        "headers": [["X-Api-Key", R], ["Accept", "json"]],
        "pairs": [["authorization", R], ["n", 1]],
        "openai_key": R, "max_tokens": 3, "dsn": f"postgres://u:{R}@h/db", "x_auth": R,
    }
    assert _guard.counters["capture.redacted"] >= 6


def test_metadata_with_secrets_is_stored_scrubbed_with_capture_off() -> None:
    with capture_runs() as cap, track_run("r", metadata={"aws_access_key_id": "AKIAIOSFODNN7EXAMPLE",
                                                         "note": "retry with token=abc123456"}) as run:
        run.set_metadata(pwd="hunter2", endpoint="https://u:hunter2pass@api.example.com/v1")
    meta = cap.runs[0]["metadata"]
    assert meta == {"aws_access_key_id": R, "note": f"retry with token={R}", "pwd": R,
                    "endpoint": f"https://u:{R}@api.example.com/v1"}


def test_log_lines_are_scrubbed_and_go_to_stderr_never_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    _guard.warn("test.secret", "could not reach mongodb://admin:S3cretPassw0rd@db:27017",
                error="ConnectionError('Authorization: Bearer sk-proj-abcdefghijklmnopqrstuv')",
                api_key="sk-live", items=["postgres://u:hunter2pass@h/db"], count_of_things=3)
    out = capsys.readouterr()
    assert out.out == ""
    for secret in ("S3cretPassw0rd", "sk-proj-abcdefghijklmnopqrstuv", "sk-live", "hunter2pass"):
        assert secret not in out.err
    assert "mongodb://admin:[REDACTED]@db:27017" in out.err and "Bearer [REDACTED]" in out.err
    assert "count_of_things=3" in out.err


def test_internal_error_log_lines_are_scrubbed(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AGENTMETER_RAISE_INTERNAL", "0")
    _guard.internal_error("test.where", RuntimeError("password=hunter2 in postgres://u:hunter2@h/db"))
    err = capsys.readouterr().err
    assert "hunter2" not in err and "password=[REDACTED]" in err
    _guard.counters.clear()  # the autouse fixture fails a test that leaves internal errors counted


def test_scrub_fields_keeps_numbers_and_replaces_secret_named_fields() -> None:
    fields: dict[str, Any] = {"count": 3, "ok": True, "none": None, "token": "abc", "uri": "s://u:pw12345@h",
                              "obj": {"password": "p4ssw0rd!"}}
    assert scrub_fields(fields) == {"count": 3, "ok": True, "none": None, "token": R, "uri": f"s://u:{R}@h",
                                    "obj": f"{{'password': '{R}'}}"}


# -- the metadata fast path (agentmeter._capture.flat) -------------------------------------------------------

_META_KEYS = st.one_of(st.sampled_from(["finish_reason", "api_key", "password", "result_count", "session_id",
                                        "x-api-key", "token_count", "k"]),
                       st.text(max_size=30))
_META_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(),
    st.text(max_size=60),  # unpaired surrogates included
    st.sampled_from(["stop", "Bearer abcdefghijklmnop", "postgres://u:hunter2pass@h/db", "sk-" + "a" * 20]),
    st.lists(st.integers(), max_size=2), st.binary(max_size=4),
)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.one_of(_META_KEYS, st.integers(), st.none()), _META_VALUES, max_size=6),
       st.integers(min_value=1, max_value=200))
def test_the_flat_metadata_fast_path_snapshots_as_jsonable_does(meta: dict[Any, Any], max_chars: int) -> None:
    from agentmeter._capture import flat

    for _ in range(2):  # the second time, its verdicts come from the cache
        before = dict(_guard.counters)
        fast = flat(dict(meta), max_chars)
        assert dict(_guard.counters) == before  # the fast path never counts: what it takes needs nothing done
        slow = jsonable(dict(meta), max_chars)
        if fast is not None:
            assert fast == slow and not fast.truncated
            assert [type(v) for v in fast.value.values()] == [type(v) for v in slow.value.values()]
        else:  # it declines only what jsonable changes, cuts (or nearly: at the budget), or does not take as is
            assert (slow.truncated or slow.size >= max_chars or slow.value != meta
                    or any(type(k) is not str for k in meta)
                    or any(type(v) not in (str, int, float, bool, type(None)) for v in meta.values()))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.one_of(_META_KEYS, st.integers(), st.none()), _META_VALUES, max_size=6),
       st.integers(min_value=1, max_value=200))
def test_a_frozen_call_holds_its_metadata_as_jsonable_makes_it(meta: dict[Any, Any], max_chars: int) -> None:
    # freeze_call takes the flat fast path itself (without _meta): the record must not tell the two apart
    from agentmeter._model import Call
    from agentmeter._record import _EMPTY, freeze_call

    call = Call("c", "r", None, "openai", "chat", None, 1, 2)
    call.metadata = dict(meta)
    frozen = freeze_call(call, max_chars).metadata
    _guard.counters.clear()  # what jsonable redacts or cuts is counted: both sides count the same
    expected = jsonable(dict(meta), max_chars) if meta else _EMPTY
    assert frozen == expected
    assert [type(v) for v in frozen.value.values()] == [type(v) for v in expected.value.values()]
    _guard.counters.clear()
