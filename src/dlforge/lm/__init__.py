"""Language models, the parts: ``corpus`` (reading, tokenizers, token arrays), ``train`` (the
step loop), ``dp`` (DP-SGD over disjoint records), ``generate`` (sampling, the sliding
window) and ``batch`` (continuous batching of generations). The estimator that puts them
together is :class:`dlforge.LanguageModel` (:mod:`dlforge.estimators.language`); its settings
are :class:`dlforge.config.lm.LMConfig`.
"""
