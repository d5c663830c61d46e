"""The one scrubber: secrets out of everything agentmeter stores or logs.

Used for error messages, captured values (strings, ``repr()`` of objects, dictionary keys), metadata, log
lines and the messages of sinks, sources and commands. Standard library only, so every layer can use it.

* :func:`scrub` replaces credentials found in a string by ``[REDACTED]``: ``Bearer``/``Basic``/``Token``
  credentials, provider keys (OpenAI and Anthropic ``sk-...``, Stripe ``sk_live_...``, AWS access key ids
  ``AKIA...``/``ASIA...``, GitHub ``ghp_...``/``github_pat_...``, GitLab, Slack, Google, Hugging Face,
  Tavily, npm), JSON Web Tokens, PEM private keys, the password of a URL (``scheme://user:pass@host`` ->
  ``scheme://user:[REDACTED]@host``, whatever the scheme, so a mistyped ``mongdb://`` is masked too) and
  the value of ``key=value`` / ``key: value`` pairs whose key names a secret (``password=...``,
  ``"api_key": "..."``, ``Authorization: Basic ...``).
* :func:`is_secret_key` says whether a mapping key names a secret (``api_key``, ``openai_key``,
  ``aws_secret_access_key``, ``X-Auth-Token``, ``pwd``, ``passphrase``, ``session_id``, ``Set-Cookie``...),
  never a token count (``input_tokens``, ``max_tokens``, ``token_count``).

Both are cheap on clean text: a string shorter than :data:`MIN_LENGTH`, or with none of the few substrings
every pattern needs, is returned as it is after one scan in C (``benchmarks/bench_scrub.py``).
Never raises on a ``str``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["MIN_LENGTH", "REDACTED", "is_secret_key", "scrub", "scrub_fields"]

REDACTED = "[REDACTED]"
#: shorter strings are never scanned: no pattern below can match fewer characters
MIN_LENGTH = 8

# Substrings one of which every pattern needs. A string without any of them is clean: one C-speed scan.
_TRIGGER = re.compile(
    r"://|pass|pwd|secret|token|key|auth|cookie|cred|sess|jwt|bearer|basic|digest|-----begin"
    r"|(?-i:sk-|[sr]k_|eyJ|A(?:KIA|SIA|BIA|CCA|GPA|IDA|IPA|NPA|NVA|ROA|PKA|SCA)[A-Z0-9]|gh[oprsu]_|github_pat_"
    r"|glpat-|xox[abposr]-|AIza|tvly-|hf_|npm_)",
    re.IGNORECASE,
)

# Values that are credentials whatever surrounds them. Each alternative is one named group, so the
# replacement knows which matched (``Match.lastgroup`` is the outermost group that closed last).
_VALUES = (
    # a PEM private key block (to its end, or to the end of a truncated text)
    r"(?P<pem>-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----(?s:.*?)(?:-----END[A-Z ]{0,40}PRIVATE KEY-----|\Z))"
    # the password of a URL: scheme://user:PASSWORD@host (the last @ before the path ends the password)
    r"|(?P<url>(?P<url_head>\b[A-Za-z][A-Za-z0-9+.-]{0,30}://[^\s:/?#@]*:)[^\s/?#]+?"
    r"(?=@[^\s@/?#]*(?:[\s/?#]|\Z)))"
    # an HTTP credential: "Bearer <anything>", "Basic/Token/Digest <something that is not a word>"
    r"|(?P<auth>(?P<auth_scheme>\b(?i:bearer))\s+[A-Za-z0-9._~+/=-]{8,}"
    r"|(?P<auth_scheme2>\b(?i:basic|token|digest))\s+(?=[A-Za-z]*[0-9._~+/=-])[A-Za-z0-9._~+/=-]{8,})"
    # provider keys and tokens, by their documented prefixes
    r"|(?P<key>\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AIPA|ANPA|ANVA|AROA|APKA|ASCA)[A-Z0-9]{16}\b"  # AWS key ids
    r"|\bgh[oprsu]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}|\bhf_[A-Za-z0-9]{30,}"
    r"|\btvly-[A-Za-z0-9_-]{16,}|\bnpm_[A-Za-z0-9]{36})"
    # a JSON Web Token: three base64url parts, the first a JSON object ("eyJ" is '{"')
    r"|(?P<jwt>\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*)"
)
_VALUE_RE = re.compile(_VALUES)
# key=value, key: value, "key": "value", key='value' (the value of a secret-named key is replaced).
_PAIR = (
    r"(?P<pair>(?P<pair_key>(?<![\w-])[A-Za-z_][\w-]{0,63})(?P<pair_sep>[\"']?[ \t]{0,3}[:=][ \t]{0,3})(?!//)"
    r"(?:(?P<pair_q>[\"'])(?P<pair_qv>[^\"'\n]{1,512})(?P=pair_q)"
    r"|(?P<pair_scheme>(?i:bearer|basic|token|digest)[ \t]+)?(?P<pair_v>[^\s\"',;&)}\]\[<>]{1,512})))"
)
_ALL_RE = re.compile(_PAIR + "|" + _VALUES)


def _replace(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "pair":
        key, sep = m.group("pair_key"), m.group("pair_sep")
        quote, value, scheme = m.group("pair_q") or "", m.group("pair_qv"), ""
        if value is None:
            value, scheme = m.group("pair_v"), m.group("pair_scheme") or ""
        if is_secret_key(key) and value != REDACTED:
            return f"{key}{sep}{quote}{scheme}{REDACTED}{quote}"
        # not a secret's name: the value may still hold one (url=postgres://u:p@h, note=Bearer ...)
        return f"{key}{sep}{quote}{_VALUE_RE.sub(_replace, scheme + value)}{quote}"
    if kind == "url":
        return m.group("url_head") + REDACTED
    if kind == "auth":
        scheme = m.group("auth_scheme") or m.group("auth_scheme2")
        return f"{scheme} {REDACTED}"
    return REDACTED  # pem, key, jwt: the whole match


def scrub(text: str) -> str:
    """``text`` with every credential it contains replaced by ``[REDACTED]`` (see the module docstring).

    Returns ``text`` itself (the same object) when nothing was found. Never raises on a ``str``.
    """
    if len(text) < MIN_LENGTH or _TRIGGER.search(text) is None:
        return text
    return _ALL_RE.sub(_replace, text)


def scrub_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Log fields with secrets removed: strings scrubbed, values under a secret key name replaced, other
    objects (lists, dicts, exceptions) by their scrubbed ``repr``. Numbers, booleans and None pass as they
    are. Never raises."""
    out: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None or isinstance(value, (bool, int, float)):
            out[name] = value
        elif is_secret_key(name):
            out[name] = REDACTED
        elif isinstance(value, str):
            out[name] = scrub(value)
        else:
            try:
                out[name] = scrub(repr(value))
            except Exception:
                out[name] = f"<unrepresentable {type(value).__name__}>"
    return out


# -- key names --------------------------------------------------------------------------------------------
# A cheap first test: a key without any of these is not a secret's name (most keys: "query", "depth"...).
_KEY_TRIGGER = re.compile(r"pass|pwd|secret|token|key|auth|cookie|cred|sess|jwt|bearer", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
#: a key with one of these words (after splitting snake_case, kebab-case and camelCase) names a secret
_SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "auth", "authorization",
    "cookie", "cookies", "credential", "credentials", "creds", "jwt", "bearer", "apikey", "sessionid",
    "sessid", "privatekey", "secretkey", "accesskey", "passcode",
})
#: ... and a key containing one of these, written in one word ("csrftoken", "xapikey", "dbpassword")
_SECRET_PARTS = ("password", "passwd", "passphrase", "pwd", "apikey", "accesskey", "privatekey", "secretkey",
                 "credential", "authorization", "cookie", "sessionid", "sessid", "authtoken", "accesstoken",
                 "refreshtoken", "idtoken", "sessiontoken", "csrftoken", "xsrftoken", "apitoken", "bearertoken",
                 "clientsecret", "secretaccess")
#: "<owner>_key" names a secret ("openai_key", "aws_access_key_id", "x_api_key"); "cache_key" does not
_KEY_OWNERS = frozenset({
    "api", "openai", "anthropic", "aws", "access", "secret", "private", "signing", "encryption", "master",
    "license", "client", "service", "tavily", "github", "gemini", "google", "azure", "cohere", "mistral",
    "groq", "stripe", "slack", "hf", "huggingface", "pinecone", "session", "auth", "ssh", "gpg", "pgp",
    "deploy", "app", "subscription", "admin", "root", "webhook", "hmac", "jwt", "llm", "provider",
})
#: "token_<word>" is about tokens, not a token: "token_count", "token_type", "token_usage"
_TOKEN_METRICS = frozenset({"count", "counts", "usage", "limit", "limits", "budget", "type", "types", "ids",
                            "total", "totals", "len", "length", "estimate", "cost", "price", "rate"})
#: metrics that contain a secret's word (kept from 0.1.0; the rules above already leave them alone)
NOT_SECRET = frozenset({
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens", "total_tokens", "max_tokens",
    "prompt_tokens", "completion_tokens", "max_output_tokens", "max_completion_tokens",
})


def is_secret_key(key: str) -> bool:
    """Whether a mapping key (or a header name) names a secret. Never raises on a ``str``."""
    return _is_secret_key(key) if len(key) <= 64 else _is_secret_key.__wrapped__(key)


@lru_cache(maxsize=4096)  # keys repeat (the same dict shapes again and again); long keys are not cached
def _is_secret_key(key: str) -> bool:
    if _KEY_TRIGGER.search(key) is None:
        return False
    low = key.lower()
    if low in NOT_SECRET:
        return False
    words = [w for w in _NON_ALNUM.split(_CAMEL.sub("_", key).lower()) if w]
    for i, word in enumerate(words):
        after = words[i + 1] if i + 1 < len(words) else None
        if word == "token" and after in _TOKEN_METRICS:
            continue
        if word in _SECRET_WORDS or (word.endswith("auth") and len(word) <= 10):  # oauth, xauth, basicauth
            return True
        if word in ("key", "keys") and i and words[i - 1] in _KEY_OWNERS:
            return True
        if word == "pass" and i and after is None:  # db_pass, smtp_pass (not pass_rate, not pass)
            return True
        if word == "session" and after in ("id", "key"):
            return True
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS) or ("secret" in joined and "secretar" not in joined)
