"""Speed and memory of the managed llama.cpp models (routenlp.llama_server, routenlp.llm_tiers) on this machine.

For each managed model (SmolLM2-135M-Instruct Q4_1, Gemma-3-270M Q4_K_M) and thread count (default 1 and 2), a real
`LlamaServer` (n_ctx 2048, the prompts module's context) is started and measured:

- start_s: process start -> first answer on /v1/models (model load included);
- RSS: resident memory right after start (idle) and the peak (VmHWM) after the runs below;
- decode tok/s: /v1/completions, 64 tokens forced (`min_tokens`), temperature 0, no logprobs; median of 3
  (short prompt, so this is generation speed); and the same with `logprobs: 0` (16 tokens) — llama-cpp-python
  sorts the whole vocabulary in Python for every token when logprobs are requested;
- classification latency P50 (ms): a short made-up sentiment prompt through `VLLMModelTier` (the config's prompt
  style for that model: chat for SmolLM2, completion for Gemma), two labels, max_tokens 8, one request at a time, in
  each answer mode: free with logprobs (the default), free without logprobs, grammar, logprob scoring (completion
  style stops at a newline; "(k err)" counts answers naming no single label).

    .venv/bin/python benchmarks/llm_tiers_bench.py [--threads 1 2] [--n 8] [--models smollm2-135m-instruct ...]

The machine is shared: the load average before and after is printed with the table; compare rows of one run.
"""
from __future__ import annotations

import argparse, json, os, statistics, time, urllib.request

from tabulate import tabulate

from routenlp.core import load_config
from routenlp.llama_server import LLAMA_MODELS, LlamaServer
from routenlp.llm_tiers import VLLMModelTier
from routenlp.tiers import TierRequest

LABELS = ['positive', 'negative']
REVIEWS = ['The soup was cold and the waiter ignored us.', 'Fantastic pasta, friendly staff, will come back.',
           'Overpriced and bland, a real disappointment.', 'Cosy place with the best coffee in town.',
           'We waited an hour and the order was wrong.', 'Great value, quick service, tasty food.',
           'Dirty tables and a rude manager.', 'A delightful dinner from start to finish.',
           'The bread was stale and the wine was warm.', 'Lovely terrace and excellent desserts.']


def prompt(task, req, style):
    q = f'Review: {req.text}\nIs the review positive or negative? Answer with one word.'
    return [{'role': 'user', 'content': q}] if style == 'chat' else q + '\nSentiment:'


def parse(task, text, req):
    "The one label the text mentions (a latency benchmark: lenient on purpose)."
    found = [l for l in LABELS if l in text.lower()]
    if len(found) != 1: raise ValueError(f'no single label in {text[:30]!r}')
    return found[0]


def grammar(labels):
    return 'root ::= " "? (' + ' | '.join(json.dumps(l) for l in labels) + ')'


def post(url, body):
    t0 = time.perf_counter()
    with urllib.request.urlopen(urllib.request.Request(url, json.dumps(body).encode(),
                                                       {'content-type': 'application/json'})) as f:
        out = json.load(f)
    return out, time.perf_counter() - t0


def decode_tok_s(server, n_tokens, logprobs, reps):
    body = {'prompt': 'Once upon a time', 'max_tokens': n_tokens, 'min_tokens': n_tokens, 'temperature': 0}
    if logprobs: body['logprobs'] = 0
    rates = []
    for _ in range(reps):
        out, s = post(server.base_url + '/completions', body)
        rates.append(out['usage']['completion_tokens'] / s)
    return statistics.median(rates)


def peak_rss(pid):
    status = open(f'/proc/{pid}/status').read()
    return next(int(l.split()[1]) * 1024 for l in status.splitlines() if l.startswith('VmHWM:'))


def p50_latency(server, style, mode, logprobs, n):
    tier = VLLMModelTier('bench', server.key, server.base_url, 0.0, prompt_style=style, label_mode=mode,
                         logprobs=logprobs, build_prompt=prompt, parse_output=parse,
                         label_candidates=lambda task: LABELS, label_grammar=grammar, max_tokens=8,
                         stop=['\n'] if style == 'completion' else None)
    reqs = [TierRequest('sentiment', f'r{i}', REVIEWS[i % len(REVIEWS)]) for i in range(n)]
    tier.predict(reqs[:1])                                           # warm-up: the prompt's fixed part is cached
    out = tier.predict(reqs)
    errors = sum(r.error for r in out)
    return statistics.median(r.latency_ms for r in out), errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=list(LLAMA_MODELS))
    ap.add_argument('--threads', nargs='+', type=int, default=[1, 2])
    ap.add_argument('--n', type=int, default=8, help='requests per latency measurement')
    args = ap.parse_args()
    config = load_config()
    styles = {t.server: t.prompt_style for t in config.portfolio.tiers if t.server}
    load_before = os.getloadavg()
    rows = []
    for key in args.models:
        style = styles.get(key, 'chat' if LLAMA_MODELS[key].chat_template else 'completion')
        for threads in args.threads:
            with LlamaServer(key, config, threads=threads, n_ctx=2048) as server:
                rss_idle = server.rss_bytes()
                post(server.base_url + '/completions', {'prompt': 'Hello', 'max_tokens': 2})   # warm-up
                tok_s = decode_tok_s(server, 64, False, 3)
                tok_s_lp = decode_tok_s(server, 16, True, 1)
                p50 = {}
                for mode, lp in [('free', True), ('free', False), ('grammar', True), ('logprob', True)]:
                    p50[(mode, lp)] = p50_latency(server, style, mode, lp, args.n)
                rows.append([key, style, threads, f'{server.startup_s:.2f}', f'{rss_idle / 2**20:.0f}',
                             f'{peak_rss(server.pid) / 2**20:.0f}', f'{tok_s:.1f}', f'{tok_s_lp:.2f}',
                             *(f'{ms:.0f}' + (f' ({e} err)' if e else '') for ms, e in p50.values())])
                print(rows[-1], flush=True)
    print(f'\nllama.cpp servers (llama-cpp-python), n_ctx 2048, {os.cpu_count()} CPUs; load average before '
          f'{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}\n')
    print(tabulate(rows, headers=['model', 'style', 'threads', 'start s', 'RSS idle MiB', 'RSS peak MiB',
                                  'decode tok/s', 'decode tok/s +logprobs', 'P50 ms free', 'P50 ms free no-lp',
                                  'P50 ms grammar', 'P50 ms logprob'], tablefmt='github'))


if __name__ == '__main__':
    main()
