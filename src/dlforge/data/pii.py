"""PII scrubbing: e-mail addresses, phone numbers, payment-card numbers, IP addresses and URLs
in text replaced by typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<CREDIT_CARD>``, ``<IP>``,
``<URL>``), with counts per type. The original values are never logged or kept.

Phone numbers are found by Google's libphonenumber (the ``phonenumbers`` package: numbering
plans of every country, kept up to date, offline), which accepts only numbers that are valid
for their country (``+44 20 7946 0958``; national numbers by ``region``, default US). The
other types have exact, checkable shapes, so they are careful regular expressions plus a
validation step, written here because the libraries that bundle them (Presidio, scrubadub)
pull in an NLP stack or a network fetch for these five patterns:

- URLs first (they may hold an address or an ``@``): ``http(s)://``, ``ftp://`` or ``www.``
  up to white space, trailing punctuation left in the text;
- e-mail addresses: local part, ``@``, dotted domain with a 2+ letter top-level label;
- IP addresses: candidates validated by :mod:`ipaddress` (so ``999.1.1.1`` and the time
  ``10:30:45`` stay);
- card numbers: 13-19 digits (single spaces or dashes between them allowed) whose first digit
  is an ISO/IEC 7812 financial one (2-6) and which pass the Luhn checksum, so most 16-digit
  IDs that are not card numbers (90% fail Luhn) stay.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

__all__ = ["PLACEHOLDERS", "luhn_ok", "scrub"]

PLACEHOLDERS = {"url": "<URL>", "email": "<EMAIL>", "ip": "<IP>", "credit_card": "<CREDIT_CARD>",
                "phone": "<PHONE>"}

_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)[^\s<>\"']+")
_URL_TAIL = ".,;:!?)]}'\""
_EMAIL = re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                    r"[A-Za-z0-9])?\.)+[A-Za-z]{2,}(?![\w-])")
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
                   r"(?:\d{1,3}\.){3}\d{1,3})?(?:%[\w.]+)?(?![\w:])")
_CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d])")


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _url(m: re.Match[str]) -> tuple[str, str]:
    s = m.group(0)
    core = s.rstrip(_URL_TAIL)
    return PLACEHOLDERS["url"], s[len(core):]


def _ip(m: re.Match[str]) -> str | None:
    s = m.group(0)
    if not any(c.isalnum() for c in s):
        return None
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return None
    return PLACEHOLDERS["ip"]


def _card(m: re.Match[str]) -> str | None:
    digits = re.sub(r"[ -]", "", m.group(0))
    if digits[0] not in "23456" or not luhn_ok(digits):
        return None
    return PLACEHOLDERS["credit_card"]


def scrub(text: str, region: str = "US") -> tuple[str, Counter[str]]:
    """``text`` with PII replaced, and how many of each type were replaced."""
    counts: Counter[str] = Counter()

    def sub(pattern: re.Pattern[str], kind: str, check, s: str) -> str:
        def repl(m: re.Match[str]) -> str:
            out = check(m)
            if out is None:
                return m.group(0)
            counts[kind] += 1
            return out if isinstance(out, str) else out[0] + out[1]
        return pattern.sub(repl, s)

    if "." in text or ":" in text:
        text = sub(_URL, "url", _url, text)
    if "@" in text:
        text = sub(_EMAIL, "email", lambda m: PLACEHOLDERS["email"], text)
    if "." in text:
        text = sub(_IPV4, "ip", _ip, text)
    if ":" in text:
        text = sub(_IPV6, "ip", _ip, text)
    if sum(c.isdigit() for c in text) >= 7:  # the shortest phone numbers the matcher accepts
        text = sub(_CARD, "credit_card", _card, text)
        text = _phones(text, region, counts)
    return text, counts


def _phones(text: str, region: str, counts: Counter[str]) -> str:
    import phonenumbers

    spans = [(m.start, m.end) for m in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID)]
    for start, end in reversed(spans):
        text = text[:start] + PLACEHOLDERS["phone"] + text[end:]
    if spans:
        counts["phone"] += len(spans)
    return text
