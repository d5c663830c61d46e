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
  ``aws_secret_access_key``, ``X-Auth-Token``, ``pwd``, ``passphrase``, ``sessionid``, ``Set-Cookie``...),
  never a token count (``input_tokens``, ``max_tokens``, ``token_count``).

Both are cheap on clean text: a string shorter than :data:`MIN_LENGTH` is returned at once, and each
pattern runs only when the text holds a literal it needs (``://``, ``eyJ``, ``sk-``, a scheme word, a key
word next to ``=`` or ``:``...), found by C-speed substring checks (``benchmarks/bench_scrub.py``).
Key names are cached. Never raises on a ``str``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

__all__ = ["MIN_LENGTH", "REDACTED", "is_secret_key", "scrub", "scrub_fields"]

REDACTED = "[REDACTED]"
#: shorter strings are never scanned: no pattern below can match fewer characters
MIN_LENGTH = 8

# Each pattern runs only when the text holds the literal it needs (one C-speed ``in`` per literal), and
# starts with that literal where it can, so the regex engine jumps between its occurrences.
_URL_RE = re.compile(  # scheme://user:PASSWORD@host - the last @ before the path ends the password
    r"://(?P<user>[^\s:/?#@]*):[^\s/?#]+?(?=@[^\s@/?#]*(?:[\s/?#]|\Z))"
)
_AUTH_RE = re.compile(  # matched only where a scheme word starts: "Bearer <anything>", "Basic <not a word>"
    r"(?P<scheme>bearer|basic|token|digest)\s+(?P<cred>[A-Za-z0-9._~+/=-]{8,})", re.IGNORECASE
)
_SCHEME_WORDS = ("bearer", "basic", "token", "digest")
_KEY_RE = re.compile(  # provider keys and tokens, by their documented prefixes
    r"\bsk-[A-Za-z0-9_-]{16,}"  # OpenAI (sk-, sk-proj-, sk-svcacct-), Anthropic (sk-ant-)
    r"|\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"  # Stripe secret and restricted keys
    r"|\bA(?:KIA|SIA)[A-Z0-9]{16}\b"  # AWS access key ids (long-term and temporary)
    r"|\bgh[oprsu]_[A-Za-z0-9]{30,}|\bgithub_pat_[A-Za-z0-9_]{22,}|\bglpat-[A-Za-z0-9_-]{20,}"
    r"|\bxox[abposr]-[A-Za-z0-9-]{10,}|\bAIza[0-9A-Za-z_-]{35}|\bhf_[A-Za-z0-9]{30,}"
    r"|\btvly-[A-Za-z0-9_-]{16,}|\bnpm_[A-Za-z0-9]{36}"
)
_JWT_RE = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")  # '{"' base64url, 3 parts
_PEM_RE = re.compile(  # to the end of the block, or of a truncated text
    r"-----BEGIN[A-Z ]{0,40}PRIVATE KEY-----.*?(?:-----END[A-Z ]{0,40}PRIVATE KEY-----|\Z)", re.DOTALL
)
# key=value, key: value, "key": "value", key='value': a separator, the key before it, the value after it
_SEPS = re.compile(r"[:=]")
_SCHEMES = r"(?i:bearer|basic|token|digest)[ \t]+"
_VALUE_RE = re.compile(  # an Authorization-like header keeps its scheme: "Authorization: Bearer [REDACTED]"
    rf"(?!(?:{_SCHEMES})?\[REDACTED\])"  # already scrubbed
    rf"(?:(?P<q>[\"'])[^\"'\n]{{1,512}}(?P=q)|(?P<scheme>{_SCHEMES})?[^\s\"',;&)}}\]\[<>]{{1,512}})"
)
_PLAIN_VALUE_RE = re.compile(  # any other secret: the whole value ("password=Bearer" hides "Bearer")
    r"(?!\[REDACTED\])(?:(?P<q>[\"'])[^\"'\n]{1,512}(?P=q)|(?P<scheme>(?!))?[^\s\"',;&)}\]\[<>]{1,512})"
)
_KEY_RUN = re.compile(r"[A-Za-z0-9_-]{0,64}")


def _url(m: re.Match[str]) -> str:
    return f"://{m.group('user')}:{REDACTED}"


def _has_provider_prefix(text: str) -> bool:
    if "AKIA" in text or "ASIA" in text or "AIza" in text:
        return True
    if "_" in text and ("k_" in text or "gh" in text or "hf_" in text or "npm_" in text or "_pat_" in text):
        return True
    return "-" in text and ("sk-" in text or "glpat-" in text or "xox" in text or "tvly-" in text)


_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}


def _lower(text: str) -> str:
    """Lower case with the same length as ``text`` (``"İ".lower()`` is two characters), so positions
    found in it are positions in ``text``."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _starts_pair(text: str, m: re.Match[str]) -> bool:
    """Whether what follows a scheme word is a ``key=value`` / ``key: value`` pair whose key names a secret."""
    head, eq, _rest = m.group("cred").partition("=")
    return is_secret_key(head) and bool(eq or text[m.end():m.end() + 4].lstrip(" \t").startswith((":", "=")))


def _auths(text: str, low: str) -> str:
    """Replace the credential after every ``Bearer``/``Basic``/``Token``/``Digest`` scheme word."""
    spans: dict[int, tuple[int, str]] = {}
    n = len(text)
    for word in _SCHEME_WORDS:
        i = low.find(word)
        while i != -1:
            j = i + len(word)
            if j < n and low[j].isspace() and (i == 0 or not _is_word_char(low[i - 1])):
                m = _AUTH_RE.match(text, i)
                # never a URL's scheme ("Bearer postgres://..."); after Basic, Token or Digest neither an
                # English word ("Basic authentication") nor anything before a colon; never a secret's pair
                # ("Token password=...": the pair's whole value is scrubbed by _pairs, not up to its "=")
                if m is not None and not text.startswith("://", m.end()) and not _starts_pair(text, m) and (
                        word == "bearer" or not (m.group("cred").isalpha() or text.startswith(":", m.end()))):
                    spans[i] = (m.end(), f"{m.group('scheme')} {REDACTED}")
            i = low.find(word, j)
    return _apply(text, spans)


def _pairs(text: str) -> str:
    """Replace the value of every ``key=value`` / ``key: value`` pair whose key names a secret.

    Looks at each separator (few in most texts): the key before it (after at most three blanks and a
    closing quote), then, if the key names a secret, the value after it (blanks skipped)."""
    rev = ""  # text reversed, made for the first separator: keys are read backwards from it
    n = len(text)
    spans: dict[int, tuple[int, str]] = {}  # value start -> (value end, replacement)
    for sep in _SEPS.finditer(text):
        at = sep.start()
        if text.startswith("://", at):  # scheme://: a URL, not a pair
            continue
        key_end = at
        while key_end > 0 and at - key_end < 3 and text[key_end - 1] in " \t":
            key_end -= 1
        if key_end > 0 and text[key_end - 1] in "\"'":
            key_end -= 1
        rev = rev or text[::-1]
        run = _KEY_RUN.match(rev, n - key_end)
        length = run.end() - (n - key_end) if run is not None else 0
        if not length:
            continue
        key = text[key_end - length:key_end]
        if key[0] in "0123456789-" or not is_secret_key(key):
            continue
        value_at = at + 1
        while value_at < n and value_at - at <= 3 and text[value_at] in " \t":
            value_at += 1
        value = (_VALUE_RE if "auth" in key.lower() else _PLAIN_VALUE_RE).match(text, value_at)
        if value is not None:
            quote = value.group("q") or ""
            spans[value.start()] = (value.end(), f"{quote}{value.group('scheme') or ''}{REDACTED}{quote}")
    return _apply(text, spans)


def _apply(text: str, spans: dict[int, tuple[int, str]]) -> str:
    """``text`` with ``spans`` (start -> (end, replacement)) replaced; overlapping spans after the first are
    skipped."""
    if not spans:
        return text
    parts, at = [], 0
    for begin in sorted(spans):
        finish, replacement = spans[begin]
        if begin < at:
            continue
        parts += [text[at:begin], replacement]
        at = finish
    parts.append(text[at:])
    return "".join(parts)


def scrub(text: str) -> str:
    """``text`` with every credential it contains replaced by ``[REDACTED]`` (see the module docstring).

    Returns ``text`` itself (the same object) when nothing was found. Never raises on a ``str``.
    """
    if len(text) < MIN_LENGTH:
        return text
    low = _lower(text)
    out = text
    # values first (a URL's password, a token), then pairs: a pair's value ends at the first delimiter,
    # which may sit inside a URL or a credential
    if "-----begin" in low:
        out = _PEM_RE.sub(REDACTED, out)
    if "://" in out:
        out = _URL_RE.sub(_url, out)
    if "eyJ" in out:
        out = _JWT_RE.sub(REDACTED, out)
    if _has_provider_prefix(out):
        out = _KEY_RE.sub(REDACTED, out)
    if "bearer" in low or "basic" in low or "token" in low or "digest" in low:
        out = _auths(out, _lower(out) if out is not text else low)
    # a pair matters only if its key holds a secret's word (the words of _KEY_TRIGGER)
    if ("=" in out or ":" in out) and ("pass" in low or "pwd" in low or "secret" in low or "token" in low
                                       or "key" in low or "auth" in low or "cookie" in low or "cred" in low
                                       or "sess" in low or "jwt" in low or "bearer" in low):
        out = _pairs(out)
    return text if out == text else out


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
                 "credential", "authorization", "cookie", "sessid", "authtoken", "accesstoken",
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
                            "total", "totals", "len", "length", "estimate", "cost", "price", "rate", "token",
                            "tokens"})
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
        if word == "session" and after == "key":  # "session_id" is a grouping key (agent sessions), not a secret
            return True
    joined = "".join(words)
    return any(part in joined for part in _SECRET_PARTS) or ("secret" in joined and "secretar" not in joined)
