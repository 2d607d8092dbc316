"""PII scrubbing (clean: {pii: true}): a table of positive and negative examples, the counts in
data.json, and no original value left anywhere in the run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dlforge import ConfigError, TextClassifier
from dlforge.cli import main
from dlforge.config import CleanConfig, validate_config
from dlforge.data.clean import clean_frame, clean_text
from dlforge.data.pii import luhn_ok, scrub

# (text, expected after scrubbing, expected counts)
CASES = [
    # e-mails
    ("write to alice.smith+x@mail.example.co.uk, thanks", "write to <EMAIL>, thanks",
     {"email": 1}),
    ("a@b.io and B_2@c-d.org", "<EMAIL> and <EMAIL>", {"email": 2}),
    ("not an address: user@localhost or @handle", None, {}),
    # URLs (trailing punctuation stays in the text)
    ("see https://example.com/a?b=1.", "see <URL>.", {"url": 1}),
    ("(www.example.org/path)", "(<URL>)", {"url": 1}),
    ("http://192.168.0.1/admin", "<URL>", {"url": 1}),
    ("example.com alone is a name", None, {}),
    # IP addresses, validated
    ("from 192.168.0.1 today", "from <IP> today", {"ip": 1}),
    ("v6 2001:db8::8a2e:370:7334 and fe80::1%eth0", "v6 <IP> and <IP>", {"ip": 2}),
    ("999.1.1.1 is no address", None, {}),
    ("at 10:30:45 use std::vector", None, {}),
    ("version 1.2.3", None, {}),
    # payment cards: Luhn-checked
    ("card 4111 1111 1111 1111 ok", "card <CREDIT_CARD> ok", {"credit_card": 1}),
    ("card 5500-0000-0000-0004", "card <CREDIT_CARD>", {"credit_card": 1}),
    ("amex 378282246310005", "amex <CREDIT_CARD>", {"credit_card": 1}),
    ("16 digits failing Luhn: 4111111111111112", None, {}),
    ("order 1234567890123456", None, {}),
    # phone numbers (libphonenumber, valid numbers only)
    ("call +1 (415) 555-0132 now", "call <PHONE> now", {"phone": 1}),
    ("ring +44 20 7946 0958", "ring <PHONE>", {"phone": 1}),
    ("or (212) 555-7788", "or <PHONE>", {"phone": 1}),
    ("on 2024-01-15 the price was 12345678", None, {}),
    ("room 1234, 3 guests", None, {}),
]


@pytest.mark.parametrize("text, expected, counts", CASES, ids=[c[0][:30] for c in CASES])
def test_scrub_table(text, expected, counts):
    out, found = scrub(text)
    assert out == (text if expected is None else expected)
    assert dict(found) == counts


def test_luhn():
    assert luhn_ok("4111111111111111") and luhn_ok("79927398713")
    assert not luhn_ok("4111111111111112")


def test_phone_region_applies_to_national_numbers():
    assert scrub("ring 020 7946 0958", region="GB")[0] == "ring <PHONE>"
    assert scrub("ring 020 7946 0958", region="US")[0] == "ring 020 7946 0958"
    with pytest.raises(ConfigError, match="pii_region: 'XX' is not a region code"):
        validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"},
                         "data": {"clean": {"pii": True, "pii_region": "XX"}}})


def test_clean_frame_counts_and_predict_time_scrubbing():
    cfg = CleanConfig(pii=True)
    df = pd.DataFrame({"t": ["mail a@b.io or c@d.io", "plain text", "call +1 415 555 0132"],
                       "y": ["p", "q", "p"]})
    out, report = clean_frame(df, "t", "y", cfg)
    assert list(out["t"]) == ["mail <EMAIL> or <EMAIL>", "plain text", "call <PHONE>"]
    assert report["pii_rows"] == 2 and report["pii_email"] == 2 and report["pii_phone"] == 1
    assert report["pii_credit_card"] == 0
    assert clean_text("ip 10.0.0.1", cfg) == "ip <IP>"
    assert clean_text("ip 10.0.0.1", CleanConfig()) == "ip 10.0.0.1"  # off by default


def test_originals_never_reach_the_run(tmp_path, capsys):
    secret, card = "carol.secret@example.com", "4012888888881881"
    rows = [(f"great product says {secret}", "pos"), (f"awful, refund card {card}", "neg")]
    rows += [("great good lovely", "pos"), ("awful bad poor", "neg")] * 20
    csv = tmp_path / "t.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(csv, index=False)
    assert main(["train", "--data", str(csv), "--text", "text", "--label", "label", "--pii",
                 "--vocab-size", "300", "--max-length", "16", "--d-model", "16", "--heads", "2",
                 "--epochs", "1", "--precision", "fp32", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err and card not in captured.out + captured.err
    run = tmp_path / "run"
    cleaning = json.loads((run / "data.json").read_text())["cleaning"]
    assert cleaning["pii_email"] == 1 and cleaning["pii_credit_card"] == 1
    for f in run.rglob("*"):
        if f.is_file():
            blob = f.read_bytes()
            for needle in (secret, "carol.secret", card):
                assert needle.encode() not in blob, f"{needle} found in {f}"
    assert "PII scrubbing was on" in (run / "MODEL_CARD.md").read_text()


def test_estimator_config_carries_the_flag():
    cfg = validate_config({"inputs": [{"name": "t"}], "output": {"name": "y"},
                           "data": {"clean": {"pii": True}}})
    assert cfg.data.clean.pii and TextClassifier(config=cfg).config.data.clean.pii


def test_scrub_is_idempotent_and_leaves_plain_text():
    from hypothesis import given, settings
    from hypothesis import strategies as st

    plain = st.text(alphabet=st.characters(blacklist_categories=("Cs",),
                                           blacklist_characters="@.:0123456789"), max_size=60)

    @settings(max_examples=150, deadline=None)
    @given(plain, st.sampled_from([c[0] for c in CASES]))
    def check(words, sample):
        assert scrub(words) == (words, {})  # nothing to find: unchanged
        once = scrub(f"{words} {sample}")[0]
        assert scrub(once)[0] == once  # placeholders are never matched again

    check()
