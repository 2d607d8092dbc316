"""Language models: train a GPT on any text, sample from it (``dlforge lm``).

``LanguageModel`` is the public name; ``corpus`` (reading, tokenizers, token arrays), ``train``
(the step loop), ``generate`` (sampling, the sliding window) and ``config`` are its parts.
"""

from dlforge.lm.model import LanguageModel

__all__ = ["LanguageModel"]
