"""Audits of a run directory: privacy (membership inference) and explanations.

``dlforge.audit.privacy``: the loss-threshold membership-inference attack.
``dlforge.audit.explain``: Integrated Gradients attributions through Captum.
"""
