"""`ModelPortfolio.from_config` with real components: T1 as ONNX heads (one small cs-intent head, built here from the
real data) and T2 as a real llama.cpp server of SmolLM2-135M-Instruct that the portfolio starts and stops itself.
No mocks. About half a minute on two cores; the full-size heads are the slow cells of `nbs/13_t1_onnx.ipynb`."""
import math
from pathlib import Path

import pytest

from routenlp.core import ConfigError, load_config
from routenlp.data import load_benchmark
from routenlp.portfolio import ModelPortfolio
from routenlp.tiers import TierRequest

T1_BUILD = {'tasks': ['cs-intent'], 'max_train': 100, 'max_epochs': 1, 'evaluate': False}   # small, fast head


def requests(task, config, n=2):
    rows = load_benchmark(task, 'test', 0, config).queries.iloc[:n]
    return [TierRequest(task, r.query_id, r.text, dict(r.meta)) for r in rows.itertuples()]


def check_bill(tier, responses):
    "Non-empty answers, cost = tokens x the tier's price, latency measured."
    for r in responses:
        assert not r.error and r.output, r
        assert math.isclose(r.cost_usd, (r.input_tokens + r.output_tokens) / 1000 * tier.price_per_1k, rel_tol=1e-12)
        assert r.cost_usd > 0 and r.latency_ms > 0


def test_default_portfolio_t1_and_t2_answer_and_close_stops_the_server(config):
    portfolio = ModelPortfolio.from_config(config, names=['T1', 'T2'], onnx=T1_BUILD)
    try:
        assert portfolio.names == ['T1', 'T2']
        t1, t2 = portfolio['T1'], portfolio['T2']
        assert type(t1).__name__ == 'LocalModelTier' and type(t2).__name__ == 'VLLMModelTier'
        assert t1.price_per_1k == 0.01 and t2.price_per_1k == 0.10                 # from configs/default.yaml
        pid = t2.server.pid
        assert t2.server.running and Path(f'/proc/{pid}').exists() and t2.owns_server
        assert t2.n_ctx == t2.server.n_ctx == 2048 and t2.build_prompt.keywords['config'] is config

        intents = requests('cs-intent', config)
        out1 = t1.predict(intents)
        check_bill(t1, out1)
        labels = set(load_benchmark('cs-intent', 'heldout', 0, config).spec.labels)
        assert all(r.output in labels and r.output_tokens == 0 and r.input_tokens > 2 for r in out1)
        assert all(0 <= r.confidence <= 1 for r in out1)

        replies = requests('cs-response', config)                                # generation: any reply parses
        out2 = t2.predict(replies)
        check_bill(t2, out2)
        assert all(r.input_tokens > 100 and r.output_tokens > 0 for r in out2)   # the few-shot prompt, then a reply
    finally:
        portfolio.close()
    assert not t2.server.running and not Path(f'/proc/{pid}').exists()          # the server process is gone
    assert t1.heads == {}                                                        # sessions dropped


def test_unknown_tier_kind_fails_at_load_config(tmp_path):
    "Config validation asks the tier-kind registry (registered by routenlp.portfolio)."
    bad = tmp_path / 'grpc.yaml'
    bad.write_text('portfolio: {tiers: [{name: A, kind: grpc}]}')
    with pytest.raises(ConfigError, match=r"config entry `portfolio\.tiers\[0\]\.kind`: 'grpc' is not a tier kind; "
                                          r"known: onnx, openai"):
        load_config(bad)
