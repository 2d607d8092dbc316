"""Auditing a run: fairness (per-group metrics, disparity, mitigation: ``fairness``,
``mitigate``, ``charts``), privacy (the membership-inference attack: ``privacy``),
explanations (Integrated Gradients: ``explain``) and the model card (``card``).

Each part is handed a fitted estimator by the front door (``dlforge.audit``,
``dlforge.explain``: :mod:`dlforge.estimators.steps`), which loads the run; nothing here
imports the estimators. Fairlearn and Captum are imported only when an audit or an
explanation runs, so saving a run (which writes its card) stays cheap.
"""
