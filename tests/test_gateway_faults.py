"""Tier faults through the live gateway (issue #11, deliverable 3): a tier answering HTTP 500, a malformed body, a
non-JSON body, too slowly, or killed makes the gateway fail over to the next tier (or answer a 502 in OpenAI's
shape when no tier is left), never hang, and count the outcome in /metrics; after `failures` consecutive faults the
tier's circuit breaker opens and the next call never reaches it; after the cooldown a probe closes it again.

Real parts: the gateway (`create_app`, uvicorn on loopback), the real T1 ONNX head of cs-intent, a real llama.cpp
tier (SmolLM2-135M, named T3 here, grammar-constrained to the 77 labels so its answer always parses), the real
`OpenAICompatibleTier` with its own retries, httpx and the official `openai` SDK as clients. The only made-up part
is the T2 *server*: a tiny OpenAI-shaped HTTP server whose answers we set per test -- fault injection, nothing else.
About 30 s on two cores (the T1 head build and the llama.cpp start are most of it)."""
import asyncio, dataclasses, threading, time

import httpx
import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response as HTTPResponse

from routenlp.data import load_benchmark
from routenlp.llm_tiers import OpenAICompatibleTier, tier_from_config
from routenlp.portfolio import ModelPortfolio
from routenlp.resilience import ResilientTier, outcome
from routenlp.serving.app import create_app
from routenlp.serving.models import fit_gateway_models
from routenlp.tiers import TierRequest
from test_serving import KEY, T1_BUILD, TASK, config, free_port, metric, serve  # noqa: F401 -- config is a fixture

T2_TIMEOUT = 1.0          # the gateway's per-tier timeout for T2 (seconds)
T2_CLIENT_TIMEOUT = 10.0  # the OpenAI tier's own per-call timeout: longer, so the gateway's bound is what fires
SLOW_S = 5.0              # how long the `slow` fault sleeps
RETRIES = 1               # the OpenAI tier retries transport errors / 5xx once (two attempts)
FAILOVER_BREAKER = {'failures': 10, 'cooldown_s': 2.0}   # the failover tests' four faults never open it
BREAKER = {'failures': 3, 'cooldown_s': 2.0}


class FaultServer:
    """Fault injection (test only, not a model): an OpenAI-shaped `/v1/chat/completions` + `/v1/completions` server
    whose answer is set by `mode`: 'ok' (a valid answer naming `answer`), '500' (HTTP 500), 'malformed' (200, JSON
    without choices), 'garbage' (200, a non-JSON body), 'slow' (a valid answer after `SLOW_S`). `hits` counts calls."""
    def __init__(self):
        self.mode, self.hits, self.answer = 'ok', 0, ''
        app = FastAPI()
        app.add_api_route('/v1/chat/completions', self.reply, methods=['POST'])
        app.add_api_route('/v1/completions', self.reply, methods=['POST'])
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=self.port, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        t0 = time.perf_counter()
        while not self.server.started:
            assert self.thread.is_alive() and time.perf_counter() - t0 < 30, 'the fault server did not start'
            time.sleep(0.02)

    def stop(self) -> None:
        "Kill the server: its port refuses connections from now on."
        self.server.should_exit = True
        self.thread.join(10)
        assert not self.thread.is_alive(), 'the fault server did not stop'

    async def reply(self, request: Request):
        self.hits += 1
        chat = request.url.path.endswith('/chat/completions')
        if self.mode == '500':
            return JSONResponse({'error': {'message': 'injected fault: internal error', 'type': 'server_error'}}, 500)
        if self.mode == 'garbage':
            return HTTPResponse(b'<html>502 upstream exploded', media_type='application/json')
        if self.mode == 'slow': await asyncio.sleep(SLOW_S)
        choice = ({'index': 0, 'message': {'role': 'assistant', 'content': self.answer}} if chat else
                  {'index': 0, 'text': self.answer}) | {'finish_reason': 'stop', 'logprobs': None}
        return {'id': f'fault-{self.hits}', 'object': 'chat.completion' if chat else 'text_completion',
                'created': int(time.time()), 'model': 'x', 'choices': [] if self.mode == 'malformed' else [choice],
                'usage': {'prompt_tokens': 12, 'completion_tokens': 3, 'total_tokens': 15}}


@pytest.fixture(scope='module')
def labels(config):
    return sorted(load_benchmark(TASK, 'heldout', 0, config).spec.labels)


@pytest.fixture(scope='module')
def fault(labels):
    server = FaultServer()
    server.answer = labels[0]
    yield server
    server.stop()


def fault_tier(fault: FaultServer, config) -> OpenAICompatibleTier:
    "The real OpenAI tier, pointed at the fault server."
    return OpenAICompatibleTier(name='T2', model='x', base_url=fault.url + '/v1', price_per_1k=0.1, max_retries=RETRIES,
                                backoff_s=0.05, timeout_s=T2_CLIENT_TIMEOUT, logprobs=False, config=config)


@pytest.fixture(scope='module')
def models(config):
    """The thresholds (CRC on the committed cs-intent table) and a router, fitted once for both gateways. Routing is
    not under test here -- every request names its start tier -- so the router is the registry's 'always' baseline
    (2 s to fit; the served difficulty-aware router's static embeddings take ~40 s and are tested in test_serving)."""
    return fit_gateway_models(config, [TASK], 0, 'always')


@pytest.fixture(scope='module')
def t1(config):
    portfolio = ModelPortfolio.from_config(config, ['T1'], onnx=dict(T1_BUILD, tasks=[TASK]))
    yield portfolio['T1']
    portfolio.close()


@pytest.fixture(scope='module')
def t3(config):
    "SmolLM2-135M on the llama.cpp server it starts (the config's T2 entry), named T3, answers constrained to labels."
    smol = next(t for t in config.portfolio.tiers if t.model == 'smollm2-135m-instruct')
    tier = tier_from_config(dataclasses.replace(smol, name='T3', price_per_1k=0.8, label_mode='grammar'), config)
    yield tier
    tier.close()


def gateway(config, models, tiers, breaker, log_dir):
    app = create_app(config, portfolio=ModelPortfolio(tiers), tasks=[TASK], api_keys=[KEY], models=models,
                     tier_timeouts={'T2': T2_TIMEOUT}, breaker=breaker, decision_log=f'sqlite:///{log_dir}/decisions.db')
    for url in serve(app):
        with httpx.Client(base_url=url, timeout=60, headers={'Authorization': f'Bearer {KEY}'}) as http:
            yield {'url': url, 'app': app, 'http': http}


@pytest.fixture(scope='module')
def failover(config, models, t1, fault, t3, tmp_path_factory):
    "[T1 ONNX, T2 fault server, T3 llama.cpp]: a T2 fault fails over to T3."
    yield from gateway(config, models, [t1, fault_tier(fault, config), t3], FAILOVER_BREAKER, tmp_path_factory.mktemp('log3'))


@pytest.fixture(scope='module')
def pair(config, models, t1, fault, tmp_path_factory):
    "[T1 ONNX, T2 fault server]: a request started at T2 has no tier left when T2 fails."
    yield from gateway(config, models, [t1, fault_tier(fault, config)], BREAKER, tmp_path_factory.mktemp('log2'))


def route_at(gw, query: str, start_tier: str) -> tuple[dict, float]:
    "POST /route (execute) started at `start_tier`; (the decision and trace, wall seconds)."
    t0 = time.perf_counter()
    r = gw['http'].post('/route', json={'query': query, 'task': TASK, 'execute': True, 'routenlp': {'start_tier': start_tier}})
    wall = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    return r.json(), wall


def chat_at(gw, query: str, start_tier: str = 'T2'):
    client = openai.OpenAI(base_url=gw['url'] + '/v1', api_key=KEY, max_retries=0, timeout=60)
    return client.chat.completions.create(model=f'routenlp-{TASK}', messages=[{'role': 'user', 'content': query}],
                                          extra_body={'routenlp': {'start_tier': start_tier}})


def recover(gw, fault):
    "Fault off; wait out an open breaker until a T2 call answers again (resets the consecutive-failure count)."
    fault.mode = 'ok'
    deadline = time.perf_counter() + BREAKER['cooldown_s'] + 3
    while True:
        d, _ = route_at(gw, 'where is my card?', 'T2')
        if d['calls'][0]['tier'] == 'T2' and d['calls'][0]['error'] is None: return
        assert time.perf_counter() < deadline, f"T2 did not recover: {d['calls'][0]}"
        time.sleep(0.25)


FAULTS = {  # mode: (what the trace's T2 error says, server hits per request, outcome counted)
    '500': (('server error HTTP 500', f'gave up after {RETRIES + 1} attempts'), RETRIES + 1, 'error'),
    'malformed': (('malformed response', 'no choices'), 1, 'error'),
    'garbage': (('JSONDecodeError',), 1, 'error'),    # the OpenAI SDK's parse error, caught by the tier
    'slow': ((f'timeout after {T2_TIMEOUT:g} s',), 1, 'timeout'),
}


@pytest.mark.parametrize('mode', list(FAULTS))
def test_a_faulty_tier_fails_over_to_the_next_one(failover, fault, labels, mode):
    says, hits, counted_as = FAULTS[mode]
    fault.mode, hits0 = mode, fault.hits
    counted = lambda: metric(failover, 'routenlp_tier_calls_total', tier='T2', outcome=counted_as)
    before = counted()
    d, wall = route_at(failover, 'I still have not received my new card, when will it arrive?', 'T2')
    assert d['start_tier'] == 'T2' and d['tiers_called'] == ['T2', 'T3'], d
    t2, t3 = d['calls']
    assert t2['tier'] == 'T2' and t2['error'] and not t2['accepted'] and all(s in t2['error'] for s in says), t2
    assert d['answered_by'] == 'T3' and d['answer'] in labels and d['error'] is None and t3['error'] is None, d
    assert fault.hits - hits0 == hits                          # 500: the OpenAI tier retried once; others: one call
    # no hang: T2 is bounded by the gateway's timeout (its client allows 10 s, the slow server takes 5 s)
    assert t2['latency_ms'] < T2_TIMEOUT * 1000 + 500, t2
    assert wall < T2_TIMEOUT + t3['latency_ms'] / 1000 + 2, (wall, t3['latency_ms'])
    if mode == 'slow': assert t2['latency_ms'] >= T2_TIMEOUT * 1000 * 0.95
    assert counted() == before + 1
    assert metric(failover, 'routenlp_breaker_state', tier='T2') == 0      # 4 faults < 10: still closed


def test_the_timeout_bounds_the_onnx_tier_too(t1, config):
    "The per-tier timeout is not HTTP's: it bounds the real T1 ONNX head (its sessions run in a worker thread)."
    pool = load_benchmark(TASK, 'test', 0, config).queries.iloc[:64]
    reqs = [TierRequest(TASK, q, t) for q, t in zip(pool.query_id, pool.text)]
    async def timed(tier):   # timed inside the loop, as the gateway sees it (asyncio.run then waits for the thread)
        t0 = time.perf_counter()
        return await tier.apredict(reqs), time.perf_counter() - t0
    cut, took = asyncio.run(timed(ResilientTier(t1, timeout_s=0.001)))
    assert took < 0.1 and {outcome(r) for r in cut} == {'timeout'}, (took, cut[0])
    assert all(r.error_reason == 'timeout after 0.001 s' for r in cut)
    roomy = ResilientTier(t1, timeout_s=30.0)
    assert roomy.heads is t1.heads                                    # attributes read through to the ONNX tier
    assert [r.output for r in roomy.predict(reqs)] == [r.output for r in t1.predict(reqs)]


def test_no_tier_left_is_a_502_in_openai_shape(pair, fault):
    recover(pair, fault)
    fault.mode = '500'
    before = metric(pair, 'routenlp_tier_calls_total', tier='T2', outcome='error')
    t0 = time.perf_counter()
    with pytest.raises(openai.InternalServerError) as e:
        chat_at(pair, 'I still have not received my new card')
    assert time.perf_counter() - t0 < 2
    err = e.value
    assert err.status_code == 502 and err.code == 'tier_error' and err.type == 'server_error', (err.status_code, err.body)
    assert 'no tier answered' in err.message and 'server error HTTP 500' in err.message, err.message
    assert metric(pair, 'routenlp_tier_calls_total', tier='T2', outcome='error') == before + 1
    recover(pair, fault)


def test_a_failed_escalation_falls_back_to_the_lower_tiers_answer(pair, fault, t1, config, labels):
    "The least sure T1 answer escalates to T2, which fails: T1's answer comes back, flagged, and counted."
    pool = load_benchmark(TASK, 'test', 0, config).queries.iloc[:60]
    conf = [r.confidence for r in t1.predict([TierRequest(TASK, q, t) for q, t in zip(pool.query_id, pool.text)])]
    text = pool.text.iloc[min(range(len(conf)), key=conf.__getitem__)]
    tau = pair['app'].state.gateway.engine.threshold('T1', TASK)
    assert min(conf) < tau, (min(conf), tau)
    recover(pair, fault)
    fault.mode = '500'
    counted = lambda: metric(pair, 'routenlp_fallbacks_total', task=TASK, failed_tier='T2', answer_tier='T1')
    before = counted()
    d, wall = route_at(pair, text, 'T1')
    assert d['tiers_called'] == ['T1', 'T2'] and d['answered_by'] == 'T1' and d['answer'] in labels, d
    assert d['fallback']['failed_tier'] == 'T2' and 'HTTP 500' in d['fallback']['reason'] and wall < 2
    assert counted() == before + 1
    recover(pair, fault)


def test_the_breaker_opens_after_consecutive_faults_and_a_probe_closes_it(pair, fault):
    recover(pair, fault)
    state = lambda: metric(pair, 'routenlp_breaker_state', tier='T2')
    refused = lambda: metric(pair, 'routenlp_tier_calls_total', tier='T2', outcome='circuit_open')
    assert state() == 0
    fault.mode = '500'
    for i in range(BREAKER['failures']):
        hits0 = fault.hits
        with pytest.raises(openai.InternalServerError, match='HTTP 500'):
            chat_at(pair, f'where is my card? ({i})')
        assert fault.hits - hits0 == RETRIES + 1
    assert state() == 1
    before, hits0, t0 = refused(), fault.hits, time.perf_counter()
    with pytest.raises(openai.InternalServerError, match=f"circuit open: T2 failed {BREAKER['failures']} times in a row"):
        chat_at(pair, 'where is my card?')
    assert fault.hits == hits0 and time.perf_counter() - t0 < 0.5      # refused at once: the server was not called
    assert refused() == before + 1 and state() == 1
    fault.mode = 'ok'
    time.sleep(BREAKER['cooldown_s'] + 0.1)
    done = chat_at(pair, 'where is my card?')                         # the half-open probe reaches the server
    assert fault.hits == hits0 + 1 and done.model_extra['routenlp']['answered_by'] == 'T2'
    assert state() == 0


def test_a_killed_tier_fails_over(failover, fault, labels):
    "Last in the file: the fault server is stopped for good (connection refused), T3 answers."
    fault.mode = 'ok'
    fault.stop()
    before = metric(failover, 'routenlp_tier_calls_total', tier='T2', outcome='error')
    d, wall = route_at(failover, 'I still have not received my new card, when will it arrive?', 'T2')
    t2 = d['calls'][0]
    assert d['tiers_called'] == ['T2', 'T3'] and 'server unreachable' in t2['error'], d
    assert d['answered_by'] == 'T3' and d['answer'] in labels
    assert t2['latency_ms'] < 1000 and wall < d['calls'][1]['latency_ms'] / 1000 + 2, (t2, wall)
    assert metric(failover, 'routenlp_tier_calls_total', tier='T2', outcome='error') == before + 1
