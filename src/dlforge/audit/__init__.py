"""Auditing a run: fairness (per-group metrics, disparity, mitigation), privacy (the
membership-inference attack, ``dlforge.audit.privacy``), explanations (Integrated Gradients,
``dlforge.audit.explain``) and the model card.

``dlforge.audit(run_dir, data, sensitive)`` is :func:`dlforge.audit.fairness.audit`;
``dlforge report RUN_DIR`` is :func:`dlforge.audit.card.write_report`. Fairlearn is imported
only when an audit runs, so saving a run (which writes its card) stays cheap.
"""

from __future__ import annotations

__all__ = ["audit", "write_card", "write_report"]


def __getattr__(name: str):  # lazy: the card is written by every save, audits are rarer
    if name == "audit":
        from dlforge.audit.fairness import audit

        return audit
    if name in ("write_card", "write_report"):
        from dlforge.audit import card

        return getattr(card, name)
    raise AttributeError(f"module 'dlforge.audit' has no attribute {name!r}")
