"""Fine-tuning data for a pretrained causal LM: read it, tokenize it with the labels that say
which tokens the loss sees, and batch it (padded, or packed without attention across examples).

Three shapes of example, in JSONL, CSV or Parquet (or a plain ``.txt`` for continued
pre-training):

- ``{"text": ...}``: every token is supervised;
- ``{"prompt": ..., "completion": ...}``: the completion (and the end-of-text token) only;
- ``{"messages": [{"role": ..., "content": ...}, ...]}``: the assistant turns only, found by
  rendering the conversation with the model's own chat template: each assistant turn is the
  text the template adds between "the turns before it, with the generation prompt" and "the
  turns up to it". The whole conversation is tokenized once, and a token is supervised when its
  characters lie in an assistant span (the tokenizer's offsets), so training sees the same
  tokens serving does.

Packing puts several examples in one row; each restarts its position ids at 0, and
transformers builds the block-diagonal causal mask from those positions (no token attends to
another example), on the SDPA and eager paths alike.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlforge.errors import DataError

__all__ = ["IGNORE", "Encoded", "batches", "count_batches", "describe", "encode", "pack",
           "read_examples"]

IGNORE = -100  # the label of a token the loss does not see
ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]  # IGNORE where not supervised

    @property
    def supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


# ----------------------------------------------------------------------------------- reading
def read_examples(path: Path) -> list[dict[str, Any]]:
    """The examples of a JSONL / CSV / Parquet / TXT file, each checked (the file and line of
    the first bad one is named)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md"):
        text = path.read_text(encoding="utf-8", errors="replace")
        if not text.strip():
            raise DataError(f"{path}: empty")
        return [{"text": text}]
    rows: list[tuple[str, Any]]  # (where, row)
    if suffix in (".jsonl", ".json"):
        rows = []
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{n}", json.loads(line)))
                except ValueError as err:
                    raise DataError(f"{path}:{n}: not valid JSON ({err.args[0]})") from None
    elif suffix in (".csv", ".parquet"):
        import pandas as pd

        try:
            df = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        except Exception as err:  # noqa: BLE001 - one line naming the file, whatever the reader
            raise DataError(f"{path}: unreadable ({str(err).splitlines()[0]})") from None
        first = 2 if suffix == ".csv" else 1  # CSV: line 1 is the header
        records = df.where(df.notna(), None).to_dict("records")
        rows = []
        for i, r in enumerate(records):
            if isinstance(r.get("messages"), str):  # a JSON list in a CSV cell
                try:
                    r["messages"] = json.loads(r["messages"])
                except ValueError:
                    raise DataError(f"{path}:{i + first}: messages is not a JSON list of "
                                    "{role, content} objects") from None
            elif r.get("messages") is not None and not isinstance(r["messages"], list):
                r["messages"] = list(r["messages"])  # Parquet: a numpy array of dicts
            rows.append((f"{path}:{i + first}" if suffix == ".csv" else f"{path}: row {i + 1}",
                         r))
    else:
        raise DataError(f"{path}: unknown file type {suffix or '(none)'}; expected .jsonl, "
                        ".csv, .parquet or .txt")
    if not rows:
        raise DataError(f"{path}: no examples")
    return [_check(where, row) for where, row in rows]


def _check(where: str, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with text, prompt and completion, or "
                        "messages")
    row = {k: v for k, v in row.items() if v is not None}
    if "messages" in row:
        msgs = row["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: messages must be a non-empty list of {{role, content}}")
        for j, m in enumerate(msgs):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"{where}: messages[{j}] must have a role and a content")
            if m["role"] not in ROLES:
                raise DataError(f"{where}: messages[{j}] has the unknown role {m['role']!r}; "
                                f"expected one of {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise DataError(f"{where}: messages[{j}].content must be text")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
    if "prompt" in row or "completion" in row:
        for key in ("prompt", "completion"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: {key} is missing or not text (a prompt/completion "
                                "example needs both)")
        return {"prompt": row["prompt"], "completion": row["completion"]}
    if isinstance(row.get("text"), str):
        return {"text": row["text"]}
    raise DataError(f"{where}: no messages, prompt/completion or text field (found: "
                    f"{', '.join(map(str, row)) or 'nothing'})")


# -------------------------------------------------------------------------------- tokenizing
def _chat_spans(tok: Any, messages: list[dict[str, str]], where: str
                ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = tok.apply_chat_template(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = tok.apply_chat_template(messages[:i], tokenize=False,
                                         add_generation_prompt=True) if i else ""
        upto = tok.apply_chat_template(messages[: i + 1], tokenize=False)
        if not (full.startswith(upto) and upto.startswith(before)):
            raise DataError(f"{where}: the model's chat template renders earlier turns "
                            "differently once later ones follow (it rewrites history), so the "
                            "assistant turns cannot be located; train on prompt/completion "
                            "pairs instead")
        spans.append((len(before), len(upto)))
    return full, spans


def encode(examples: Sequence[dict[str, Any]], tok: Any, max_length: int,
           completion_only: bool = True, source: str = "data") -> tuple[list[Encoded], int]:
    """Token ids and labels of each example; an example longer than ``max_length`` tokens
    keeps its first ``max_length`` (continued pre-training text is cut into blocks instead).
    Returns the encoded examples and how many were cut."""
    out: list[Encoded] = []
    cut = 0
    eos = tok.eos_token_id
    needs_template = any("messages" in e for e in examples)
    if needs_template and not getattr(tok, "chat_template", None):
        raise DataError(f"{source}: chat messages, but the model has no chat template; add one "
                        "to the folder's tokenizer_config.json (\"chat_template\": a Jinja "
                        "string) or pass --chat-template FILE")
    for n, ex in enumerate(examples, 1):
        where = f"{source}: example {n}"
        if "text" in ex:
            ids = tok(ex["text"], add_special_tokens=False)["input_ids"]
            if eos is not None:
                ids = ids + [eos]
            if tok.bos_token_id is not None and getattr(tok, "add_bos_token", False):
                ids = [tok.bos_token_id] + ids
            for s in range(0, len(ids), max_length):
                block = ids[s: s + max_length]
                if len(block) > 1:
                    out.append(Encoded(block, list(block)))
            continue
        if "prompt" in ex:
            p = tok(ex["prompt"], add_special_tokens=False)["input_ids"]
            c = tok(ex["completion"], add_special_tokens=False)["input_ids"]
            c = c + ([eos] if eos is not None else [])
            ids = p + c
            labels = ([IGNORE] * len(p) if completion_only else list(p)) + c
        else:
            text, spans = _chat_spans(tok, ex["messages"], where)
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            ids = enc["input_ids"]
            labels = []
            for tid, (a, b) in zip(ids, enc["offset_mapping"], strict=True):
                inside = any(s <= a and b <= e and b > a for s, e in spans)
                labels.append(tid if inside or not completion_only else IGNORE)
        if len(ids) > max_length:
            cut += 1
            ids, labels = ids[:max_length], labels[:max_length]
        out.append(Encoded(list(ids), labels))
    return out, cut


def describe(encoded: Sequence[Encoded], tok: Any, width: int = 400) -> tuple[float, str]:
    """The share of supervised tokens (of those that have a next token) and the first example
    decoded, its supervised part between ⟦ and ⟧."""
    total = sum(max(0, len(e.ids) - 1) for e in encoded)
    sup = sum(sum(1 for x in e.labels[1:] if x != IGNORE) for e in encoded)
    e = encoded[0]
    pieces, run, mark = [], [], False
    for tid, lab in zip(e.ids, e.labels, strict=True):
        on = lab != IGNORE
        if on != mark and run:
            text = tok.decode(run)
            pieces.append(f"⟦{text}⟧" if mark else text)
            run = []
        mark = on
        run.append(tid)
    if run:
        text = tok.decode(run)
        pieces.append(f"⟦{text}⟧" if mark else text)
    shown = "".join(pieces)
    if len(shown) > width:
        shown = shown[:width] + " ..."
    return (sup / total if total else 0.0), shown


# ---------------------------------------------------------------------------------- batching
def pack(encoded: Sequence[Encoded], max_length: int) -> list[list[Encoded]]:
    """Examples grouped into rows of at most ``max_length`` tokens, best fit in the given
    order (each goes to the row it fills most; shuffle first for randomness): each row is one
    training sequence. A sorted list of the rows' free space makes it O(n log n)."""
    rows: list[list[Encoded]] = []
    free: list[tuple[int, int]] = []  # (free tokens, row), sorted
    for e in encoded:
        n = len(e.ids)
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            room, i = free.pop(at)
            rows[i].append(e)
            bisect.insort(free, (room - n, i))
        else:
            rows.append([e])
            bisect.insort(free, (max_length - n, len(rows) - 1))
    return rows


def collate(rows: Sequence[Sequence[Encoded]], pad_id: int) -> dict[str, torch.Tensor]:
    """One batch: ``input_ids``, ``labels`` (already the next token's: shifted here, -100
    where unsupervised, across example boundaries and on padding), ``position_ids``
    (restarting at 0 at each packed example), and ``attention_mask`` only when no row is packed
    (padding alone), and ``real`` (1 on tokens, 0 on padding: for counting). A packed batch
    has no 2-D mask: transformers derives the block-diagonal
    causal mask from the restarting positions, and padding is one more block no label reads."""
    T = max(sum(len(e.ids) for e in row) for row in rows)
    B = len(rows)
    ids = np.full((B, T), pad_id, dtype=np.int64)
    labels = np.full((B, T), IGNORE, dtype=np.int64)
    pos = np.zeros((B, T), dtype=np.int64)
    mask = np.zeros((B, T), dtype=np.int64)
    packed = any(len(row) > 1 for row in rows)
    for b, row in enumerate(rows):
        at = 0
        for e in row:
            n = len(e.ids)
            ids[b, at: at + n] = e.ids
            # the label at t is the token at t+1, when it is supervised and in this example
            nxt = np.asarray(e.labels[1:] + [IGNORE], dtype=np.int64)
            labels[b, at: at + n] = nxt
            pos[b, at: at + n] = np.arange(n)
            mask[b, at: at + n] = 1
            at += n
        pos[b, at:] = np.arange(T - at)  # padding: its own block
    out = {"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
           "position_ids": torch.from_numpy(pos), "real": torch.from_numpy(mask)}
    if not packed:
        out["attention_mask"] = torch.from_numpy(mask)
    return out


def count_batches(encoded: Sequence[Encoded], batch_size: int, max_length: int,
                  packing: bool) -> int:
    """How many batches :func:`batches` makes of ``encoded`` (unshuffled), without building
    them: the rows are packed (when packing) but no tensor is made. A shuffled epoch packs
    in another order, which can take a row more or less: the schedule's step count."""
    rows = len(pack(list(encoded), max_length)) if packing else len(encoded)
    return math.ceil(rows / batch_size)


def batches(encoded: Sequence[Encoded], batch_size: int, max_length: int, packing: bool,
            pad_id: int, rng: np.random.Generator | None = None
            ) -> list[dict[str, torch.Tensor]]:
    """The batches of one epoch: shuffled by ``rng`` when given; padded rows are grouped by
    length (the least padding), packed rows filled first fit."""
    order = np.arange(len(encoded)) if rng is None else rng.permutation(len(encoded))
    items = [encoded[i] for i in order]
    if packing:
        rows = pack(items, max_length)
    else:
        # length buckets: sort within chunks of 50 batches, then shuffle the batches
        chunk = batch_size * 50
        rows = []
        for s in range(0, len(items), chunk):
            rows += [[e] for e in sorted(items[s: s + chunk], key=lambda e: len(e.ids))]
    groups = [rows[i: i + batch_size] for i in range(0, len(rows), batch_size)]
    if rng is not None and not packing:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return [collate(g, pad_id) for g in groups]
