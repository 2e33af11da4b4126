"""Do the prompts of `routenlp.prompts` fit the llama.cpp context? Every test query of every enterprise task is
rendered in the style each managed model is served with (SmolLM2-135M-Instruct: chat, through the GGUF's own chat
template; Gemma-3-270M base: completion) and counted with that model's own tokenizer (llama_cpp, vocab only).

    ROUTENLP_DATA_DIR=../shared/data .venv/bin/python benchmarks/prompt_sizes.py

Prints per (model, task): the estimate `routenlp.prompts` sized the prompt with and the true token count
(median / max), the largest true prompt + max_tokens against n_ctx, prompts that would overflow, truncated prompts,
and the smallest estimate / true ratio (>= 1 means the estimate never under-counted).
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd

from routenlp.core import load_config
from routenlp.data import load_benchmark
from routenlp.llama_server import model_file
from routenlp.prompts import N_CTX, PROMPT_SPECS, render
from routenlp.tiers import TierRequest

STYLE = {'smollm2-135m-instruct': 'chat', 'gemma-3-270m': 'completion'}


def counter(server_key: str, config):
    "(tokens of a rendered prompt) for one model, chat prompts through its GGUF chat template."
    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    llm = llama_cpp.Llama(str(model_file(server_key, config)), vocab_only=True, verbose=False)
    if STYLE[server_key] == 'completion':
        return lambda prompt: len(llm.tokenize(prompt.encode(), add_bos=True, special=False))
    text = lambda t: llm._model.token_get_text(t) if t >= 0 else ''
    fmt = Jinja2ChatFormatter(llm.metadata['tokenizer.chat_template'], text(llm.token_eos()), text(llm.token_bos()))
    def count(messages):
        result = fmt(messages=messages)
        return len(llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True))
    return count


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--models', default=','.join(STYLE))
    args = ap.parse_args(argv)
    config = load_config()
    rows = []
    for key in args.models.split(','):
        count, style = counter(key, config), STYLE[key]
        for task, spec in PROMPT_SPECS.items():
            est, true, cut = [], [], 0
            for r in load_benchmark(task, 'test', 0, config).queries.itertuples():
                p = render(task, TierRequest(task, r.query_id, r.text, dict(r.meta)), style, config=config)
                est.append(p.est_tokens); true.append(count(p.prompt)); cut += p.truncation is not None
            est, true = np.array(est), np.array(true)
            rows.append(dict(model=key, style=style, task=task, n=len(true), est_median=np.median(est),
                             est_max=est.max(), true_median=np.median(true), true_max=true.max(),
                             max_tokens=spec.max_tokens, worst_total=true.max() + spec.max_tokens,
                             overflow=int((true + spec.max_tokens > N_CTX).sum()), truncated=cut,
                             min_est_over_true=(est / true).min()))
    print(f'Prompt sizes (n_ctx {N_CTX}), all test queries')
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt='.2f'))


if __name__ == '__main__':
    main()
