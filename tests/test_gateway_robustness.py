"""Gateway robustness (issue #11): property-based API tests with schemathesis over the live gateway's own OpenAPI
schema, kill -9 durability of the decision log end to end, and graceful drain on SIGTERM.

Real parts only: the real T1 ONNX head of cs-intent (one epoch, built once into this module's cache), the router and
thresholds written by `routenlp calibrate --out` (once), the gateway in-process under uvicorn (schemathesis) and as a
`routenlp serve` subprocess with a SQLite decision log (kill -9, drain), httpx as the client. No mocks, no fakes."""
import asyncio, collections, contextlib, itertools, os, re, signal, subprocess, sys, threading, time, zlib
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance
from schemathesis.core.failures import FailureGroup

from routenlp.core import load_config
from routenlp.decision_log import DecisionLog
from routenlp.serving.app import create_app
from routenlp.t1_onnx import ensure_heads
from test_serving import free_port, serve

ROOT = Path(__file__).resolve().parents[1]
TASK, KEY = 'cs-intent', 'sk-routenlp-robust'
AUTH = {'Authorization': f'Bearer {KEY}'}
T1_BUILD = {'max_epochs': 1, 'evaluate': False}   # the head cache key holds no epochs: a subprocess finds this head
ROUTENLP = str(Path(sys.executable).parent / 'routenlp')
MIN_ACKS = 300          # acknowledged decisions before the kill
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]   # valid requests, and requests that break the schema
POSTS = ['POST /route', 'POST /route/batch', 'POST /feedback', 'POST /v1/chat/completions']
CONCURRENCY = 16        # client requests in flight at once during the load


# --- shared artefacts: one config, one T1 head, one calibration -------------------------------------------------------
@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp('robust')


@pytest.fixture(scope='module')
def cfg_path(workdir, data_dir):
    "configs/default.yaml with its own cache (in tmp) and the hashing confidence features (cheap to fit)."
    text, n = re.subn(r'(?m)^(\s*confidence_features:\s*)minilm\b', r'\1hashing', (ROOT / 'configs' / 'default.yaml').read_text())
    assert n == 1, 'configs/default.yaml: cascade.confidence_features not found'
    text, n = re.subn(r'(?m)^cache_dir:.*$', f'cache_dir: {workdir / "cache"}', text)
    assert n == 1, 'configs/default.yaml: cache_dir not found'
    path = workdir / 'config.yaml'
    path.write_text(text)
    return path


@pytest.fixture(scope='module')
def env(data_dir):
    return {**os.environ, 'ROUTENLP_DATA_DIR': str(data_dir), 'OMP_NUM_THREADS': '1', 'ROUTENLP_API_KEYS': KEY}


@pytest.fixture(scope='module')
def models(cfg_path, workdir, env):
    "`routenlp calibrate --out DIR` (once; a subprocess, run while the T1 head is built in-process): what every gateway here loads."
    out = workdir / 'models'
    cmd = [ROUTENLP, 'calibrate', '--config', str(cfg_path), '--tasks', TASK, '--out', str(out)]
    log = workdir / 'calibrate.log'
    with open(log, 'wb') as f, subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT) as p:
        ensure_heads(load_config(cfg_path), [TASK], **T1_BUILD)
        p.wait(300)
    assert p.returncode == 0 and f'{TASK:13s} T1' in log.read_text(), log.read_text()[-3000:]
    return out


# --- 1. schemathesis over the live OpenAPI schema ---------------------------------------------------------------------
@pytest.fixture(scope='module')
def gateway_url(cfg_path, models, workdir):
    app = create_app(load_config(cfg_path), tiers=['T1'], tasks=[TASK], api_keys=[KEY], models_dir=models,
                     portfolio_kwargs={'onnx': T1_BUILD}, decision_log=f"sqlite:///{workdir / 'inproc.db'}")
    yield from serve(app)


@pytest.fixture(scope='module')
def api_schema(gateway_url):
    "The gateway's own schema (`/openapi.json` needs the key like every non-public path)."
    return schemathesis.openapi.from_url(gateway_url + '/openapi.json', headers=AUTH)


@pytest.fixture(scope='module')
def decision_ids(gateway_url):
    "Five real executed decisions, for the generated /feedback requests to land on (a random id is only ever a 404)."
    with httpx.Client(base_url=gateway_url, headers=AUTH, timeout=30) as c:
        out = [c.post('/route', json={'query': q, 'task': TASK, 'execute': True}) for q in queries(5)]
    assert all(r.status_code == 200 for r in out), [r.text for r in out]
    return [r.json()['decision_id'] for r in out]


def served(decision_ids: list[str]):
    """A map over generated valid requests pointing them at what this gateway serves, so they reach the router, T1 and
    the calibrator instead of stopping at a 400 `unknown_task` / 404: the task (/route, /route/batch), the model and a
    last message from the user (/v1/chat/completions), a real decision id (/feedback). The rest stays as generated."""
    def fix(case):
        body = case.body if isinstance(case.body, dict) else None
        if body is None: return case
        label = case.operation.label
        if label == 'POST /route': body['task'] = TASK
        elif label == 'POST /route/batch':
            for item in body.get('items', []):
                if isinstance(item, dict): item['task'] = TASK
        elif label == 'POST /v1/chat/completions':
            body['model'] = f'routenlp-{TASK}'
            if body.get('messages'):   # a random role is never 'user': every request would be a 400
                last = body['messages'][-1]
                last['role'] = 'user'
                if not (isinstance(last.get('content'), str) and last['content'].strip()): last['content'] = 'where is my card'
            if isinstance(body.get('routenlp'), dict): body['routenlp'].pop('task', None)
        elif label == 'POST /feedback' and isinstance(body.get('decision_id'), str):
            body['decision_id'] = decision_ids[zlib.crc32(body['decision_id'].encode()) % len(decision_ids)]
        return case
    return fix


def assert_openai_error(response):
    "A 4xx / 5xx body is an error in OpenAI's shape: {'error': {'message', 'type', 'param', 'code'}}."
    err = response.json().get('error')
    assert isinstance(err, dict) and isinstance(err.get('message'), str) and err['message'], response.text
    assert isinstance(err.get('type'), str) and isinstance(err.get('code'), str) and 'param' in err, response.text


def test_every_operation_survives_generated_input(api_schema, decision_ids):
    """Every operation of the schema, 25 valid and 25 schema-breaking generated requests each (deterministic): no 5xx,
    every response whose status the schema declares conforms to the declared body, and every 4xx is an error in
    OpenAI's shape. All failures are collected, then reported at once (one per operation, mode, status, kind)."""
    fix = served(decision_ids)
    failures, statuses = {}, collections.Counter()
    for op, mode in itertools.product([r.ok() for r in api_schema.get_all_operations()], MODES):
        if mode is GenerationMode.NEGATIVE and op.label.startswith('GET '): continue   # no parameters to break
        strategy = op.as_strategy(generation_mode=mode)
        @given(case=strategy.map(fix) if mode is GenerationMode.POSITIVE else strategy)
        @settings(max_examples=25, derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def run(case):
            response = case.call(headers=AUTH, timeout=60)
            statuses[op.label, mode.value, response.status_code] += 1
            try:
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance], headers=AUTH)
                if response.status_code >= 400: assert_openai_error(response)
            except (AssertionError, FailureGroup) as e:   # every failed check of this call at once; one kept per kind
                failures.setdefault((op.label, mode.value, response.status_code, type(e).__name__),
                                    f'{e}'[:1200] + f'\n{case.as_curl_command(headers=AUTH)}')

        run()
    print('\n'.join(f'{k}: {n}' for k, n in sorted(statuses.items())))
    declared = {op.label: set(op.definition.raw.get('responses', {})) for op in (r.ok() for r in api_schema.get_all_operations())}
    print('statuses answered but not declared in the schema:',
          sorted({(label, code) for label, _, code in statuses if str(code) not in declared[label]}))
    assert sum(statuses.values()) >= 4 * 2 * 20 and {k[0] for k in statuses if k[0].startswith('POST')} == set(POSTS), statuses
    for label in POSTS:   # the valid requests reached the real path, not only the validation
        assert statuses[label, 'positive', 200] >= 1, (label, statuses)
    assert not failures, f'{len(failures)} distinct failures:\n' + '\n\n'.join(f'{k[0]}: {v}' for k, v in failures.items())


def error_schema(spec: dict, path: str, status: str) -> dict | None:
    "The declared JSON schema of `status` on POST `path` ($ref resolved), None when the status is not declared."
    resp = spec['paths'][path]['post']['responses'].get(status)
    schema = (resp or {}).get('content', {}).get('application/json', {}).get('schema')
    if schema and '$ref' in schema: schema = spec['components']['schemas'][schema['$ref'].rsplit('/', 1)[1]]
    return schema


def test_openapi_declares_the_openai_error_shape(gateway_url):
    """Every POST operation declares its 400 and 422 answers with the body the gateway really sends (OpenAI's error
    object, `error` required), so schemathesis' response_schema_conformance checks error bodies, not vacuously passes."""
    spec = httpx.get(gateway_url + '/openapi.json', headers=AUTH, timeout=10).json()
    wrong = [(path, status, error_schema(spec, path, status)) for path in ('/route', '/route/batch', '/feedback', '/v1/chat/completions')
             for status in ('400', '422') if 'error' not in ((error_schema(spec, path, status) or {}).get('required') or [])]
    assert not wrong, wrong


# --- subprocess gateways ----------------------------------------------------------------------------------------------
@contextlib.contextmanager
def gateway_process(cfg_path, models, env, log_url: str, logfile: Path):
    "`routenlp serve` (T1, cs-intent) on a free port with the decision log at `log_url`; yields (process, url)."
    port = free_port()
    cmd = [ROUTENLP, 'serve', '--config', str(cfg_path), '--tasks', TASK, '--tiers', 'T1', '--models', str(models),
           '--port', str(port), '--log-level', 'info']
    with open(logfile, 'wb') as out:
        p = subprocess.Popen(cmd, env={**env, 'ROUTENLP_DECISION_LOG': log_url}, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
    url, t0 = f'http://127.0.0.1:{port}', time.perf_counter()
    try:
        while True:
            if p.poll() is not None: pytest.fail(f'`routenlp serve` exited ({p.returncode}):\n{logfile.read_text()[-3000:]}')
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + '/health', timeout=5).status_code == 200: break
            if time.perf_counter() - t0 > 120: pytest.fail(f'the gateway did not answer /health within 120 s:\n{logfile.read_text()[-3000:]}')
            time.sleep(0.2)
        yield p, url
    finally:
        if p.poll() is None: p.kill()
        p.wait(30)


def queries(n: int) -> list[str]:
    "Distinct customer-service queries (the text matters little to durability; distinct ones defeat any cache)."
    base = ['my card has not arrived yet', 'how do I top up by bank transfer', 'I was charged twice for one payment',
            'can I change my PIN at an ATM', 'why was my transfer declined', 'the exchange rate on my payment is wrong']
    return [f'{base[i % len(base)]} (case {i})' for i in range(n)]


async def load_until_killed(url: str, proc: subprocess.Popen) -> tuple[list[str], int]:
    """CONCURRENCY workers fire /route (every fourth with execute) until MIN_ACKS decisions were acknowledged, then the
    server is SIGKILLed while requests are still in flight; ([(acknowledged decision id, executed)], requests that
    failed after)."""
    acked, failed, killed = [], 0, asyncio.Event()
    texts = enumerate(queries(10_000))

    async def worker(client: httpx.AsyncClient):
        nonlocal failed
        while not killed.is_set():
            i, text = next(texts)
            body = {'query': text, 'task': TASK, 'execute': i % 4 == 0}
            try: r = await client.post('/route', json=body)
            except httpx.TransportError:
                failed += 1
                continue
            assert r.status_code == 200, r.text
            acked.append((r.json()['decision_id'], body['execute']))
            if len(acked) >= MIN_ACKS and not killed.is_set():
                os.kill(proc.pid, signal.SIGKILL)   # others are mid-request now
                killed.set()

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=30, limits=limits) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(CONCURRENCY))), 120)
    return acked, failed


@pytest.fixture(scope='module')
def killed(cfg_path, models, env, workdir):
    "A `routenlp serve` under load SIGKILLed after MIN_ACKS acknowledged decisions; its log URL and what the client saw."
    url = f"sqlite:///{workdir / 'kill9.db'}"
    with gateway_process(cfg_path, models, env, url, workdir / 'kill9.log') as (p, base):
        t0 = time.perf_counter()
        acked, failed = asyncio.run(load_until_killed(base, p))
        assert p.wait(10) == -signal.SIGKILL
        took = time.perf_counter() - t0
    return {'url': url, 'acked': acked, 'failed': failed, 'took': took}


def test_kill_9_loses_no_acknowledged_decision(killed):
    acked = [d for d, _ in killed['acked']]
    assert len(acked) >= MIN_ACKS and len(set(acked)) == len(acked)
    assert killed['failed'] >= 1, 'no request was in flight at the kill'
    log = DecisionLog(killed['url'])
    try:
        assert log.integrity() == 'ok'
        missing = [d for d in acked if log.get(d) is None]
        assert not missing, f'{len(missing)} of {len(acked)} acknowledged decisions are not in the log, e.g. {missing[:3]}'
        for d, executed in killed['acked'][:40]:   # each stored with its trace: the executed ones with their answer
            row = log.get(d)
            assert row['task'] == TASK and row['start_tier'] == 'T1', row
            assert (row.get('answered_by') == 'T1' and bool(row.get('answer'))) == executed, row
        n_rows = log.counts()['decisions']
    finally:
        log.close()
    assert n_rows >= len(acked)
    print(f"{len(acked)} acked in {killed['took']:.1f} s, {killed['failed']} failed after the kill, {n_rows} rows in the log")


def metric_value(url: str, name: str) -> float:
    for line in httpx.get(url + '/metrics', timeout=5).text.splitlines():
        if line.startswith(name + ' ') or line.startswith(name + '{'): return float(line.rsplit(' ', 1)[1])
    return 0.0


def test_sigterm_drains_in_flight_requests(cfg_path, models, env, workdir, killed):
    """Slow requests, honestly: /route/batch with 256 executed items (the router and the T1 head on 256 queries, one
    thread). While they are in flight the server gets SIGTERM: each finishes with 200 and all 256 answers, a new
    connection after the signal is refused, and the process exits cleanly after the lifespan's shutdown. The gateway
    here restarts on the decision log of the SIGKILLed one: a decision acknowledged before the kill takes feedback."""
    items = [{'query': q, 'task': TASK, 'execute': True} for q in queries(256)]
    logfile = workdir / 'drain.log'
    with gateway_process(cfg_path, models, env, killed['url'], logfile) as (p, base):
        before = next(d for d, executed in killed['acked'] if executed)
        f = httpx.post(base + '/feedback', json={'decision_id': before, 'acceptable': True}, headers=AUTH, timeout=30)
        assert f.status_code == 200 and f.json()['acceptable'] is True, f.text
        results, errors = [], []

        def post():
            try:
                with httpx.Client(base_url=base, headers=AUTH, timeout=120) as c:
                    results.append((c.post('/route/batch', json={'items': items}), time.perf_counter()))
            except Exception as e: errors.append(e)

        threads = [threading.Thread(target=post) for _ in range(3)]
        t0 = time.perf_counter()
        for t in threads: t.start()
        # the gauge counts the /metrics request itself: 4 = the scrape + the three batches
        while metric_value(base, 'routenlp_in_flight_requests') < 1 + len(threads):
            assert time.perf_counter() - t0 < 30, 'the three batches did not get in flight together'
            time.sleep(0.02)
        p.send_signal(signal.SIGTERM)
        t_term = time.perf_counter()
        while True:   # a new connection is refused once the server has taken the signal (within seconds)
            try: httpx.get(base + '/health', timeout=5)
            except httpx.ConnectError: break
            assert time.perf_counter() - t_term < 5, 'the server still accepts connections 5 s after SIGTERM'
            time.sleep(0.05)
        t_refused, pending = time.perf_counter() - t_term, len(threads) - len(results)
        assert pending >= 1, 'every batch was done before new connections were refused: no drain was seen'
        for t in threads: t.join(120)
        assert not errors, errors
        assert [r.status_code for r, _ in results] == [200, 200, 200], [r.text[:300] for r, _ in results]
        after = sum(done > t_term for _, done in results)
        assert after == len(threads), f'{len(threads) - after} batches finished before the signal reached the server'
        for r, _ in results:
            body = r.json()
            assert body['n_ok'] == 256 and all(x['answer'] for x in body['results'])
        code = p.wait(60)
        finished = time.perf_counter() - t_term
    text = logfile.read_text()
    assert code in (0, -signal.SIGTERM), text[-3000:]
    assert 'Application shutdown complete' in text, text[-3000:]
    print(f'SIGTERM with {after} of 3 batches in flight: new connections refused {t_refused:.2f} s later (with {pending} '
          f'still running); all finished with 200; the process exited {finished:.1f} s after the signal ({code}); '
          f"router latency of one batch {results[0][0].json()['results'][0]['router_latency_ms']:.0f} ms")
