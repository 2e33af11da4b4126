"""The gateway with real parts (issue #11): a live uvicorn server on 127.0.0.1 serving `create_app` with the real T1
ONNX head of cs-intent (built here, small: 100 train queries, one epoch), the real difficulty-aware-static router
and CRC thresholds fitted on the committed enterprise outcome table of cs-intent (the confidence estimator on
hashing features, the cheap configured option), and the official `openai` SDK and httpx as clients. No mocks.
Every request goes over loopback HTTP; the file runs in about a minute on two cores."""
import dataclasses, shutil, threading, time
from pathlib import Path

import httpx
import openai
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families

from routenlp.core import load_config
from routenlp.data import load_benchmark
from routenlp.llama_server import free_port
from routenlp.suites import available_tasks, load_outcomes, load_queries
from routenlp.systems import prepare_run
from routenlp.router import StaticRouter
from routenlp.serving.core import Gateway, GatewayMetrics, RequestError
from routenlp.serving.models import GATEWAY_ALPHAS, SUITE, TaskClassifier, load_gateway_models, load_or_fit, models_dir
from routenlp.serving.app import create_app
from routenlp.tiers import TierRequest

ROOT = Path(__file__).resolve().parents[1]
TASK, KEY, POOR = 'cs-intent', 'sk-routenlp-test', 'sk-routenlp-budget'
T1_BUILD = {'max_train': 100, 'max_epochs': 1, 'evaluate': False}
MAX_BODY = 32_000


@pytest.fixture(scope='module')
def config(data_dir, tmp_path_factory):
    "The project config on the real data, a cache of its own, the hashing confidence features (fast to fit)."
    cfg = load_config(ROOT / 'configs' / 'default.yaml')
    return dataclasses.replace(cfg, data_dir=str(data_dir), cache_dir=str(tmp_path_factory.mktemp('serving-cache')),
                               cascade=dataclasses.replace(cfg.cascade, confidence_features='hashing'))



def serve(app):
    "Run `app` under uvicorn on a free loopback port in a thread; yields its URL, stops it after."
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host='127.0.0.1', port=port, log_level='warning', lifespan='on'))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    while not server.started:
        if not thread.is_alive(): pytest.fail('the gateway exited during start-up (see the log above)')
        if time.perf_counter() - t0 > 240: pytest.fail('the gateway did not start within 240 s')
        time.sleep(0.05)
    yield f'http://127.0.0.1:{port}'
    server.should_exit = True
    thread.join(30)
    assert not thread.is_alive(), 'the gateway did not shut down'


@pytest.fixture(scope='module')
def gateway(config):
    "A live gateway: T1 only (built by the portfolio from the config), cs-intent, one API key."
    app = create_app(config, tiers=['T1'], tasks=[TASK], api_keys=[KEY, f'{POOR}:0.000001'], portfolio_kwargs={'onnx': T1_BUILD},
                     max_body_bytes=MAX_BODY)
    for url in serve(app): yield {'url': url, 'app': app}


@pytest.fixture(scope='module')
def client(gateway):
    return openai.OpenAI(base_url=gateway['url'] + '/v1', api_key=KEY, max_retries=0, timeout=30)


@pytest.fixture(scope='module')
def http(gateway):
    with httpx.Client(base_url=gateway['url'], headers={'Authorization': f'Bearer {KEY}'}, timeout=30) as c:
        yield c


@pytest.fixture(scope='module')
def queries(config):
    return load_benchmark(TASK, 'test', 0, config).queries.iloc[:6]


@pytest.fixture(scope='module')
def labels(config):
    return set(load_benchmark(TASK, 'heldout', 0, config).spec.labels)


def test_health_and_saved_models(gateway, config):
    h = httpx.get(gateway['url'] + '/health', timeout=10)           # public: no key
    assert h.status_code == 200, h.text
    body = h.json()
    assert body['status'] == 'ok' and body['tasks'] == [TASK] and body['router'] == 'difficulty-aware-static'
    assert body['tiers']['T1']['ready'] and body['tiers']['T1']['kind'] == 'LocalModelTier'
    # the lifespan fitted the router and thresholds once and saved them; a second start loads them
    folder = models_dir(config)
    assert (folder / 'gateway.json').exists() and (folder / 'router' / 'static.json').exists()
    t0 = time.perf_counter()
    again = load_or_fit(config, [TASK])
    assert time.perf_counter() - t0 < 10 and isinstance(again.router, StaticRouter)
    served = gateway['app'].state.gateway.models
    assert again.meta == served.meta and again.thresholds == served.thresholds
    assert set(served.meta['key']['outcome_manifests']) == {TASK} and served.meta['key']['confidence_features'] == 'hashing'
    q = ['my card has not arrived yet']
    assert (again.router.predict_proba(q, [f'enterprise/{TASK}']) == served.router.predict_proba(q, [f'enterprise/{TASK}'])).all()
    cell = load_gateway_models(folder, config).cell('T1', TASK)
    assert cell['status'] == 'ok' and cell['n'] >= 20 and 0 < cell['tau'] <= 1
    assert served.alphas == sorted(set(GATEWAY_ALPHAS) | {config.cascade.alpha}) and body['alphas'] == served.alphas
    taus = [served.thresholds_at(a)[('T1', TASK)] for a in served.alphas]
    assert taus == sorted(taus, reverse=True) and taus[0] > taus[-1]     # a stricter risk level: a higher tau


def test_live_confidence_is_the_calibration_confidence(gateway, config):
    """T2 / T3 of the enterprise tables have no native confidence: their thresholds were calibrated on the
    ConfidenceEstimator's scores. The saved estimator, scoring (query, answer) as a live tier's answer is scored,
    gives those same numbers on the calibration rows — so a live T2 answer is held to a threshold on its own scale."""
    est = load_gateway_models(models_dir(config), config).confidence
    assert est is not None and {k[2] for k in est.cells} == {'T2', 'T3'}
    run = prepare_run(SUITE, TASK, 0, config)
    texts = run.queries.set_index('query_id')['text']
    raw = load_outcomes(SUITE, TASK, seed=0, config=config)
    for tier in ('T2', 'T3'):   # the rows the estimator filled (an errored answer keeps its native 0)
        unscored = set(raw.loc[(raw['tier'] == tier) & raw['confidence'].isna(), 'query_id'])
        rows = run.outcomes[(run.outcomes['tier'] == tier) & (run.outcomes['split'] == 'calibration')
                            & run.outcomes['query_id'].isin(unscored)].iloc[:40]
        assert len(rows) == 40
        live = est.score(SUITE, TASK, tier, texts.loc[rows['query_id']].tolist(), rows['output'].fillna('').tolist())
        assert live == pytest.approx(rows['confidence'].to_numpy(), abs=1e-9), tier


def test_saved_models_are_refitted_when_the_fit_key_changes(gateway, config, tmp_path):
    copy = tmp_path / 'models'
    shutil.copytree(models_dir(config), copy)
    looser = dataclasses.replace(config, cascade=dataclasses.replace(config.cascade, alpha=0.2))
    refit = load_or_fit(looser, [TASK], directory=copy)
    assert refit.meta['alpha'] == 0.2 and refit.meta['key']['alpha'] == 0.2
    assert refit.thresholds[('T1', TASK)] <= gateway['app'].state.gateway.models.thresholds[('T1', TASK)]   # looser: lower tau
    assert load_gateway_models(copy, config).meta == refit.meta                 # saved over the old fit


def test_openai_chat_completion(client, queries, labels):
    for text in queries.text:
        raw = client.chat.completions.with_raw_response.create(
            model=f'routenlp-{TASK}', messages=[{'role': 'system', 'content': 'Classify.'}, {'role': 'user', 'content': text}])
        done = raw.parse()
        answer = done.choices[0].message.content
        assert answer in labels and done.choices[0].finish_reason == 'stop'
        trace = done.model_extra['routenlp']
        assert trace['tiers_called'] == ['T1'] and trace['final_tier'] == 'T1' and trace['task'] == TASK
        assert raw.headers['x-routenlp-tier'] == 'T1' and raw.headers['x-routenlp-decision-id'] == trace['decision_id']
        assert trace['answered_by'] == 'T1' and trace['fallback'] is None and raw.headers['x-routenlp-fallback'] == 'false'
        assert done.id == f"chatcmpl-{trace['decision_id']}" and done.usage.prompt_tokens > 2
        assert 0 <= trace['calls'][0]['confidence'] <= 1 and trace['cost_usd'] > 0
        assert trace['latency_ms'] == pytest.approx(trace['calls'][0]['latency_ms'] + trace['router_latency_ms'])
        assert float(raw.headers['x-routenlp-cost-usd']) == pytest.approx(trace['cost_usd'], abs=1e-9)


def test_openai_stream_and_model_bypass(client, queries):
    text = queries.text.iloc[0]
    whole = client.chat.completions.create(model=f'routenlp-{TASK}', messages=[{'role': 'user', 'content': text}])
    chunks = list(client.chat.completions.create(model=f'routenlp-{TASK}', messages=[{'role': 'user', 'content': text}],
                                                 stream=True))
    assert ''.join(c.choices[0].delta.content or '' for c in chunks) == whole.choices[0].message.content
    assert chunks[-1].choices[0].finish_reason == 'stop' and chunks[-1].model_extra['routenlp']['final_tier'] == 'T1'
    direct = client.chat.completions.create(model='T1', messages=[{'role': 'user', 'content': text}])
    assert direct.model_extra['routenlp']['tiers_called'] == ['T1']
    assert direct.choices[0].message.content == whole.choices[0].message.content


def test_openai_models_and_errors(gateway, client):
    ids = [m.id for m in client.models.list()]
    assert ids == [f'routenlp-{TASK}', 'routenlp', 'T1']
    msg = [{'role': 'user', 'content': 'where is my card'}]
    with pytest.raises(openai.NotFoundError, match=f'routenlp-{TASK}'):
        client.chat.completions.create(model='gpt-4o', messages=msg)
    with pytest.raises(openai.BadRequestError, match=TASK):
        client.chat.completions.create(model='routenlp', messages=msg, extra_body={'routenlp': {'task': 'fin-ner'}})
    with pytest.raises(openai.UnprocessableEntityError, match='messages'):
        client.chat.completions.create(model=f'routenlp-{TASK}', messages=[])
    url = gateway['url'] + '/v1'
    with pytest.raises(openai.AuthenticationError, match='missing API key'):   # the SDK needs a key: drop its header
        client.models.list(extra_headers={'Authorization': openai.Omit()})
    with pytest.raises(openai.PermissionDeniedError, match='invalid API key'):
        openai.OpenAI(base_url=url, api_key='sk-wrong', max_retries=0).models.list()


def test_route_and_batch(http, queries, labels):
    text = queries.text.iloc[1]
    d = http.post('/route', json={'query': text, 'task': TASK}).json()
    assert d['start_tier'] == 'T1' and list(d['p_acceptable']) == ['T1'] and 0 <= d['p_acceptable']['T1'] <= 1
    assert d['policy'] == 'threshold' and 0 < d['router_latency_ms'] < 100 and 'answer' not in d
    x = http.post('/route', json={'query': text, 'task': TASK, 'execute': True}).json()
    assert x['answer'] in labels and x['tiers_called'] == ['T1'] and x['escalations'] == 0
    step = x['calls'][0]
    assert step['threshold'] is None and 'last tier' in step['threshold_note'] and step['accepted']
    items = [{'query': queries.text.iloc[2], 'task': TASK}, {'query': 'x', 'task': 'no-such-task'},
             {'task': TASK}, {'query': queries.text.iloc[3], 'task': TASK, 'execute': True}, 'not an object']
    b = http.post('/route/batch', json={'items': items})
    assert b.status_code == 200, b.text
    res = b.json()['results']
    assert (b.json()['n_ok'], b.json()['n_errors']) == (2, 3) and [r['index'] for r in res] == [0, 1, 2, 3, 4]
    assert res[0]['start_tier'] == 'T1' and 'answer' not in res[0] and res[3]['answer'] in labels
    assert res[1]['error']['code'] == 'unknown_task' and TASK in res[1]['error']['message']
    assert res[2]['error']['param'] == 'query' and res[4]['error']['param'] == 'body'


def test_task_inference_is_right_when_sure_and_asks_otherwise(gateway, config):
    """The task classifier of a six-task gateway, on each task's 300 test queries (seed 0): where it infers a task
    (P >= 0.8) it is right at least 95 % of the time and it infers for at least half of the queries; elsewhere the
    request is a 400 asking for `routenlp.task`."""
    train, test = {}, {}
    for t in available_tasks(SUITE, config):
        q = load_queries(SUITE, t, seed=0, config=config)
        train[t], test[t] = q.loc[q['split'] == 'train', 'text'].tolist(), q.loc[q['split'] == 'test', 'text'].tolist()
    assert len(train) == 6
    gw = gateway['app'].state.gateway
    models = dataclasses.replace(gw.models, task_classifier=TaskClassifier.fit(train, config), meta=gw.models.meta | {'tasks': sorted(train)})
    six = Gateway(list(gw.tiers.values()), models, config, metrics=GatewayMetrics())
    right = asked = n = 0
    for task, texts in test.items():
        for text in texts:
            n += 1
            try: right += six.infer_task(text)[0] == task
            except RequestError as e:
                assert e.code == 'task_ambiguous' and 'routenlp.task' in str(e); asked += 1
    inferred = n - asked
    assert inferred / n >= 0.5 and right / inferred >= 0.95, (inferred / n, right / inferred)


def test_budgets_feedback_and_the_decision_log(gateway, http, queries):
    poor = openai.OpenAI(base_url=gateway['url'] + '/v1', api_key=POOR, max_retries=0, timeout=30)
    msg = [{'role': 'user', 'content': queries.text.iloc[0]}]
    first = poor.chat.completions.create(model=f'routenlp-{TASK}', messages=msg)   # spends more than its 1e-6 USD
    with pytest.raises(openai.RateLimitError, match='budget of this API key is spent'):
        poor.chat.completions.create(model=f'routenlp-{TASK}', messages=msg)
    log = gateway['app'].state.log
    d = log.get(first.model_extra['routenlp']['decision_id'])
    assert d['answered_by'] == 'T1' and d['key_id'] is not None and d['calls'][0]['tier'] == 'T1'
    other = http.post('/feedback', json={'decision_id': d['decision_id'], 'quality': 1.0})
    assert other.status_code == 403 and other.json()['error']['code'] == 'not_your_decision'   # another key's decision
    own = httpx.Client(base_url=gateway['url'], headers={'Authorization': f'Bearer {POOR}'}, timeout=30)
    f = own.post('/feedback', json={'decision_id': d['decision_id'], 'quality': 1.0})             # feedback spends nothing
    assert f.status_code == 200 and f.json()['acceptable'] is True and f.json()['updated'] is False
    assert 'no tier with a threshold' in f.json()['reason']        # T1 alone: no threshold of its own to move
    assert own.post('/feedback', json={'decision_id': d['decision_id'], 'acceptable': False}).status_code == 409
    assert log.counts()['feedback'] >= 1 and log.integrity() == 'ok'


def test_concurrent_batches_and_singles_share_the_router_safely(gateway, queries):
    """/route/batch decides in a worker thread while /route decides on the event loop: the router's tokenizer is not
    thread-safe (a load run once answered 500 'Already borrowed'), so every call must hold the gateway's encoder lock."""
    from concurrent.futures import ThreadPoolExecutor
    texts = list(queries.text) * 11
    def batch(_):
        return httpx.post(gateway['url'] + '/route/batch', json={'items': [{'query': t, 'task': TASK} for t in texts[:64]]},
                          headers={'Authorization': f'Bearer {KEY}'}, timeout=60).status_code
    def single(i):
        return httpx.post(gateway['url'] + '/route', json={'query': texts[i], 'task': TASK},
                          headers={'Authorization': f'Bearer {KEY}'}, timeout=60).status_code
    with ThreadPoolExecutor(12) as pool:
        codes = list(pool.map(batch, range(12))) + list(pool.map(single, range(48)))
    assert codes == [200] * 60, sorted(set(codes))


def test_bad_input_is_a_4xx_that_says_why(http):
    r = http.post('/route', json={'query': 'hi', 'task': 'nope'})
    assert r.status_code == 400 and TASK in r.json()['error']['message']
    r = http.post('/route', json={'query': '', 'task': TASK})
    assert r.status_code == 422 and r.json()['error']['param'] == 'query'
    r = http.post('/route', json={'query': 3, 'task': TASK, 'colour': 'red'})
    assert r.status_code == 422 and 'query' in r.json()['error']['message'] and '1 more' in r.json()['error']['message']
    r = http.post('/route', content=b'{"query": "a", ', headers={'content-type': 'application/json'})
    assert r.status_code == 422 and r.json()['error']['code'] == 'invalid_json'
    r = http.post('/route', content=b'{"query": "\xff\xfe", "task": "cs-intent"}', headers={'content-type': 'application/json'})
    assert r.status_code == 400 and 'UTF-8' in r.json()['error']['message'], r.text
    r = http.post('/route', json={'query': 'x' * (MAX_BODY + 10), 'task': TASK})
    assert r.status_code == 413 and r.json()['error']['code'] == 'body_too_large'
    assert http.post('/route/batch', json={'items': []}).status_code == 422


def metric(gateway, name, **labels) -> float:
    text = httpx.get(gateway['url'] + '/metrics', timeout=10).text
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()): return s.value
    return 0.0


def test_metrics_count_requests_and_tier_calls(gateway, http, client, queries):
    chat = lambda: metric(gateway, 'routenlp_requests_total', endpoint='/v1/chat/completions', status='200')
    calls = lambda: metric(gateway, 'routenlp_tier_calls_total', tier='T1', outcome='ok')
    before_chat, before_calls = chat(), calls()
    before_cost = metric(gateway, 'routenlp_cost_usd_total', tier='T1')
    for text in queries.text.iloc[:3]:
        client.chat.completions.create(model=f'routenlp-{TASK}', messages=[{'role': 'user', 'content': text}])
    http.post('/route', json={'query': 'hi', 'task': TASK, 'execute': True})
    assert chat() - before_chat == 3 and calls() - before_calls == 4
    assert metric(gateway, 'routenlp_cost_usd_total', tier='T1') > before_cost
    assert metric(gateway, 'routenlp_request_latency_seconds_count', endpoint='/route') >= 1
    assert metric(gateway, 'routenlp_requests_total', endpoint='/route', status='401') == 0
    httpx.post(gateway['url'] + '/route', json={'query': 'hi', 'task': TASK}, timeout=10)   # no key
    assert metric(gateway, 'routenlp_requests_total', endpoint='/route', status='401') == 1
    assert metric(gateway, 'routenlp_router_decisions_total', task=TASK, start_tier='T1') >= 4
    assert metric(gateway, 'routenlp_threshold', tier='T1', task=TASK) == float('-inf')   # the only tier: always answers


def test_live_cascade_escalates_from_t1_to_a_llama_cpp_tier_and_survives_its_death(config, gateway):
    """T1 + T2 (SmolLM2-135M on the llama.cpp server the portfolio starts). p_star 0 so every query starts at T1
    (the cheapest tier with P(ok) >= p_star; at the default 0.7 cs-intent's P(T1 ok) ~0.6 qualifies no tier and
    the threshold policy takes the priciest); the queries the small head is least sure of fall below T1's
    calibrated tau and escalate to T2. Then T2's server is killed (a real fault, no mock): /health says degraded
    and a T2 request is a 502 that names the failure."""
    cfg = dataclasses.replace(config, router=dataclasses.replace(config.router, p_star=0.0))
    app = create_app(cfg, tiers=['T1', 'T2'], tasks=[TASK], api_keys=[KEY], portfolio_kwargs={'onnx': T1_BUILD})
    pool = load_benchmark(TASK, 'test', 0, config).queries.iloc[:100]
    for url in serve(app):
        # the queries: the two the small head is least sure of, and the one it is surest of (T1 alone: milliseconds)
        conf = [r.confidence for r in app.state.gateway.tiers['T1'].predict(
            [TierRequest(TASK, q, t) for q, t in zip(pool.query_id, pool.text)])]
        order = sorted(range(len(pool)), key=conf.__getitem__)
        texts = [pool.text.iloc[i] for i in (order[0], order[1], order[-1])]
        auth = {'Authorization': f'Bearer {KEY}'}
        h = httpx.get(url + '/health', timeout=10).json()
        assert h['status'] == 'ok' and h['tiers']['T2']['ready'] and 'llama.cpp' in h['tiers']['T2']['detail']
        b = httpx.post(url + '/route/batch', json={'items': [{'query': t, 'task': TASK, 'execute': True} for t in texts]},
                       headers=auth, timeout=120).json()
        res = b['results']
        assert b['n_ok'] == 3 and all(r['start_tier'] == 'T1' and r['tiers_called'][0] == 'T1' for r in res)
        tau = res[0]['calls'][0]['threshold']
        assert 0 < tau <= 1 and tau == app.state.gateway.engine.threshold('T1', TASK)
        assert res[2]['tiers_called'] == ['T1'] and res[2]['calls'][0]['accepted'], res[2]   # the surest: T1 keeps it
        up = [r for r in res if r['tiers_called'] == ['T1', 'T2']]
        assert up, (tau, sorted(conf)[:5])                                       # the least sure: escalated
        for r in up:
            t1, t2 = r['calls']
            assert t1['confidence'] < tau and not t1['accepted'] and r['escalations'] == 1 and r['final_tier'] == 'T2'
            assert t2['threshold'] is None and t2['output_tokens'] > 0 and t2['latency_ms'] > 0 and r['answer']
            assert r['cost_usd'] == pytest.approx(t1['cost_usd'] + t2['cost_usd'])
            # SmolLM2 may answer a label outside the 77 (an error response): then T1's answer comes back, flagged
            if t2['error']: assert r['answered_by'] == 'T1' and r['fallback']['failed_tier'] == 'T2' and r['error'] is None
            else: assert r['answered_by'] == 'T2' and r['fallback'] is None
        client = openai.OpenAI(base_url=url + '/v1', api_key=KEY, max_retries=0, timeout=120)
        # T2 by name, alone, on an escalated query: the same greedy (temperature 0) answer as inside the cascade;
        # when it did not parse there, no lower tier is called now, so the request is a 502 naming the failure
        r, msg = up[0], [{'role': 'user', 'content': texts[res.index(up[0])]}]
        if r['calls'][1]['error']:
            with pytest.raises(openai.InternalServerError, match='no tier answered: unparseable'):
                client.chat.completions.create(model='T2', messages=msg)
        else:
            direct = client.chat.completions.with_raw_response.create(model='T2', messages=msg)
            assert direct.parse().choices[0].message.content == r['answer'] and direct.headers['x-routenlp-tier'] == 'T2'
        # feedback on the answer T1 kept: its tau moves by the ACI step, in the engine, the metrics and the log
        f = httpx.post(url + '/feedback', json={'decision_id': res[2]['decision_id'], 'acceptable': False}, headers=auth, timeout=10).json()
        c = cfg.cascade
        (step,) = f['steps']                                       # T1 kept it: the one thresholded tier visited
        assert f['updated'] and step['tier'] == 'T1' and step['accepted'] and step['tau_before'] == pytest.approx(tau)
        assert step['tau_after'] == pytest.approx(tau + c.aci_gamma / c.audit_rate * (1 - c.alpha))
        assert app.state.gateway.engine.threshold('T1', TASK) == pytest.approx(step['tau_after'])
        assert app.state.log.thresholds(c.alpha)[('T1', TASK)] == pytest.approx(step['tau_after'])
        t2 = app.state.gateway.tiers['T2']
        t2.server.proc.kill(); t2.server.proc.wait(10)
        h = httpx.get(url + '/health', timeout=10).json()
        assert h['status'] == 'degraded' and not h['tiers']['T2']['ready'] and h['tiers']['T1']['ready']
        with pytest.raises(openai.InternalServerError, match='no tier answered'):
            client.chat.completions.create(model='T2', messages=[{'role': 'user', 'content': texts[0]}])
        m = httpx.get(url + '/metrics', timeout=10).text
        assert 'routenlp_tier_calls_total{outcome="error",tier="T2"}' in m and 'routenlp_escalations_total{from_tier="T1",task="cs-intent"}' in m
