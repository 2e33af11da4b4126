"""Load benchmark of the gateway (issue #11, deliverable 6): a bounded async HTTP client (httpx, this process) against a
gateway that this script starts as a subprocess (`routenlp serve --tasks cs-intent --tiers T1` on a free loopback
port, one API key), with real queries (the cs-intent test split).

Measured, each level after a warm-up at the same concurrency, for a fixed duration:
  /route                 decisions/s, P50 / P99 latency at concurrency 1, 8, 32, 64
  /route/batch           decisions/s with batches of 64 and 256 items
  /v1/chat/completions   model `routenlp-cs-intent` (answered by the T1 ONNX head), req/s, P50 / P99
  lost requests          non-2xx answers, transport errors, batch items without a decision (must be 0)
  CPU                    of the gateway process and of this client, in % of one core (they share the machine)

Prints a markdown table and writes it, with the machine facts and the command, to benchmarks/gateway_load.md.
Targets (reported, not asserted): /route >= 500 req/s with P99 <= 50 ms at concurrency 32; /route/batch >= 2,000
decisions/s.

    ROUTENLP_DATA_DIR=../shared/data .venv/bin/python benchmarks/gateway_load.py            # ~2 min of load
    .venv/bin/python benchmarks/gateway_load.py --duration 4 --warmup 1 --out /tmp/g.md    # a quick look
    .venv/bin/python benchmarks/gateway_load.py --profile 32   # cProfile of the gateway at concurrency 32, top functions

The first start on a machine fits the router and thresholds and builds the T1 head of cs-intent into the cache
(minutes); later starts load them (`start-up` in the output says which it was).
"""
from __future__ import annotations

import argparse, asyncio, itertools, os, platform, pstats, signal, socket, subprocess, sys, tempfile, time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
KEY = 'sk-routenlp-bench'
TARGETS = {'route_rps_c32': 500.0, 'route_p99_ms_c32': 50.0, 'batch_dps': 2000.0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def gateway_cmd(args, port: int, profile_out: str | None = None) -> list[str]:
    cli = str(Path(sys.executable).parent / 'routenlp')
    serve = ['serve', '--host', '127.0.0.1', '--port', str(port), '--tasks', args.task, '--tiers', args.tiers,
             '--log-level', 'warning'] + (['--config', args.config] if args.config else [])
    return [sys.executable, '-m', 'cProfile', '-o', profile_out, cli, *serve] if profile_out else [cli, *serve]


def start_gateway(cmd: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, 'ROUTENLP_API_KEYS': KEY, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', '1')}
    with open(log, 'w') as out:
        return subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(url: str, proc: subprocess.Popen, log: Path, timeout_s: float) -> dict:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout_s:
        if proc.poll() is not None:
            sys.exit(f'the gateway exited ({proc.returncode}) during start-up:\n{log.read_text()[-3000:]}')
        try:
            h = httpx.get(url + '/health', timeout=5)
            if h.status_code == 200: return h.json()
        except httpx.TransportError: pass
        time.sleep(0.5)
    sys.exit(f'the gateway did not answer /health within {timeout_s:.0f} s (log: {log})')


def stop_gateway(proc: subprocess.Popen, sig=signal.SIGTERM, wait_s: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try: proc.wait(wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@dataclass
class Level:
    endpoint: str
    concurrency: int
    batch: int = 1
    latencies: list = field(default_factory=list)   # seconds, one per request
    decisions: int = 0
    lost: int = 0
    errors: dict = field(default_factory=dict)       # first few error kinds -> count
    router_ms: list = field(default_factory=list)    # the gateway's own router_latency_ms (/route only)
    wall: float = 0.0
    server_cpu: float = 0.0                          # CPU seconds of the gateway process during the level
    client_cpu: float = 0.0

    def row(self) -> dict:
        lat = np.array(self.latencies) * 1000 if self.latencies else np.array([np.nan])
        return {'endpoint': self.endpoint, 'concurrency': self.concurrency, 'batch': self.batch if self.batch > 1 else '',
                'requests': len(self.latencies), 'req_s': len(self.latencies) / self.wall,
                'decisions_s': self.decisions / self.wall, 'p50_ms': float(np.percentile(lat, 50)),
                'p99_ms': float(np.percentile(lat, 99)), 'lost': self.lost,
                'server_cpu_pct': 100 * self.server_cpu / self.wall, 'client_cpu_pct': 100 * self.client_cpu / self.wall,
                'server_cpu_ms_per_decision': 1000 * self.server_cpu / max(self.decisions, 1)}


def requests_for(endpoint: str, texts: list[str], task: str, batch: int):
    "An endless cycle of (path, JSON body, decisions it asks for) built from the real queries."
    q = itertools.cycle(texts)
    if endpoint == '/route':
        return ((endpoint, {'query': next(q), 'task': task}, 1) for _ in itertools.count())
    if endpoint == '/route/batch':
        return ((endpoint, {'items': [{'query': next(q), 'task': task} for _ in range(batch)]}, batch) for _ in itertools.count())
    if endpoint == '/v1/chat/completions':
        return ((endpoint, {'model': f'routenlp-{task}', 'messages': [{'role': 'user', 'content': next(q)}]}, 1)
                for _ in itertools.count())
    raise ValueError(f'unknown endpoint {endpoint!r}')


def judge(level: Level, r: httpx.Response, asked: int) -> None:
    "Count decisions (and lost ones) in one answer."
    if not 200 <= r.status_code < 300:
        level.lost += asked
        key = f'HTTP {r.status_code}'
        level.errors[key] = level.errors.get(key, 0) + 1
        return
    body = r.json()
    if level.endpoint == '/route/batch':
        level.decisions += body['n_ok']
        level.lost += body['n_errors']
    elif level.endpoint == '/route':
        level.decisions += 1
        level.router_ms.append(body['router_latency_ms'])
    else:
        ok = bool(body['choices'][0]['message']['content'])
        level.decisions += ok
        level.lost += not ok


async def run_level(url: str, level: Level, reqs, duration: float, warmup: float, proc) -> Level:
    """`level.concurrency` workers, each on its own keep-alive connection, send requests back to back for `warmup` s
    (discarded), then for `duration` s. (One shared httpx pool of 32+ connections costs the client several ms of CPU
    per request in pool bookkeeping; a client per worker keeps the client's share of the machine small.)"""
    async def worker(client: httpx.AsyncClient, until: float, record: bool):
        while time.perf_counter() < until:
            path, body, asked = next(reqs)
            t0 = time.perf_counter()
            try: r = await client.post(path, json=body)
            except httpx.HTTPError as e:
                if record:
                    level.lost += asked
                    level.errors[type(e).__name__] = level.errors.get(type(e).__name__, 0) + 1
                continue
            if record:
                level.latencies.append(time.perf_counter() - t0)
                judge(level, r, asked)
    clients = [httpx.AsyncClient(base_url=url, headers={'Authorization': f'Bearer {KEY}'}, timeout=httpx.Timeout(60.0),
                                 limits=httpx.Limits(max_connections=1)) for _ in range(level.concurrency)]
    try:
        if warmup > 0:
            until = time.perf_counter() + warmup
            await asyncio.gather(*(worker(c, until, False) for c in clients))
        server, c0 = psutil.Process(proc.pid), time.process_time()
        s0 = sum(server.cpu_times()[:2])
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, t0 + duration, True) for c in clients))
        level.wall = time.perf_counter() - t0
        level.server_cpu, level.client_cpu = sum(server.cpu_times()[:2]) - s0, time.process_time() - c0
    finally:
        for c in clients: await c.aclose()
    return level


async def run_all(url: str, plan: list[Level], texts: list[str], task: str, duration: float, warmup: float, proc,
                  log=print) -> list[Level]:
    for level in plan:
        await run_level(url, level, requests_for(level.endpoint, texts, task, level.batch), duration, warmup, proc)
        r = level.row()
        log(f"  {r['endpoint']:22s} c={r['concurrency']:<3d} batch={r['batch'] or 1:<4} {r['decisions_s']:8.0f} decisions/s  "
            f"P50 {r['p50_ms']:7.1f} ms  P99 {r['p99_ms']:7.1f} ms  lost {r['lost']}  "
            f"server CPU {r['server_cpu_pct']:.0f}%  client CPU {r['client_cpu_pct']:.0f}%")
    return plan


def machine_facts() -> dict:
    model = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines()
                  if l.startswith('model name')), platform.processor())
    sha = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no'], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return {'cpu': model, 'cores': os.cpu_count(), 'usable_cores': len(os.sched_getaffinity(0)),
            'memory_gib': round(psutil.virtual_memory().total / 2**30, 1), 'python': platform.python_version(),
            'commit': sha + (' (uncommitted changes)' if dirty else ''), 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def markdown(levels: list[Level], facts: dict, load_before, load_after, start: dict, args, argv: list[str]) -> str:
    rows = [l.row() for l in levels]
    head = ('| endpoint | concurrency | batch | requests | decisions/s | P50 ms | P99 ms | lost | gateway CPU % | '
            'gateway CPU ms / decision | client CPU % |')
    lines = [head, '|' + '---|' * 11]
    for r in rows:
        lines.append(f"| `{r['endpoint']}` | {r['concurrency']} | {r['batch']} | {r['requests']} | {r['decisions_s']:,.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['lost']} | {r['server_cpu_pct']:.0f} | "
                     f"{r['server_cpu_ms_per_decision']:.2f} | {r['client_cpu_pct']:.0f} |")
    verdicts = targets(levels)
    lost = sum(l.lost for l in levels)
    errors = {k: v for l in levels for k, v in l.errors.items()}
    route32 = next((l for l in levels if l.endpoint == '/route' and l.concurrency == 32), None)
    router_ms = (f"{np.percentile(route32.router_ms, 50):.2f} ms P50, {np.percentile(route32.router_ms, 99):.2f} ms P99"
                 if route32 and route32.router_ms else 'n/a')
    return '\n'.join([
        '# Gateway load benchmark', '',
        f"`{' '.join(argv)}` (benchmarks/gateway_load.py): a bounded async httpx client in its own process against "
        f"`routenlp serve --tasks {args.task} --tiers {args.tiers}` on loopback (bearer key on), real {args.task} test "
        f"queries; each level {args.warmup:g} s warm-up, then {args.duration:g} s measured. Client and gateway share the machine.", '',
        *lines, '',
        f"Lost requests: **{lost}**" + (f" ({errors})" if errors else '') + '.',
        f"Router time inside the gateway at concurrency 32 (its `router_latency_ms`, per micro-batch): {router_ms}.", '',
        '| target | measured | verdict |', '|---|---|---|',
        *[f'| {t} | {m} | {"pass" if ok else "FAIL"} |' for t, m, ok in verdicts], '',
        f"Machine: {facts['cpu']}, {facts['cores']} cores ({facts['usable_cores']} usable), {facts['memory_gib']} GiB; "
        f"load average {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f} before the run, "
        f"{load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f} after; Python {facts['python']}; "
        f"commit {facts['commit']}; {facts['date']}.",
        f"Gateway start-up to a ready /health: {start['seconds']:.1f} s (router {start['health'].get('router')}, "
        f"tiers {', '.join(start['health'].get('tiers', {}))}).",
        'Gateway CPU % is of one core; when gateway + client stay well under the core count, other processes held the '
        'CPU (see the load average) and the throughput is a floor. Gateway CPU ms per decision does not depend on that.', ''])


def targets(levels: list[Level]) -> list[tuple[str, str, bool]]:
    out = []
    route32 = next((l.row() for l in levels if l.endpoint == '/route' and l.concurrency == 32), None)
    if route32:
        out.append(('/route >= 500 req/s at c=32', f"{route32['decisions_s']:,.0f} req/s", route32['decisions_s'] >= TARGETS['route_rps_c32']))
        out.append(('/route P99 <= 50 ms at c=32', f"{route32['p99_ms']:.1f} ms", route32['p99_ms'] <= TARGETS['route_p99_ms_c32']))
    batch = [l.row() for l in levels if l.endpoint == '/route/batch']
    if batch:
        best = max(batch, key=lambda r: r['decisions_s'])
        out.append(('/route/batch >= 2,000 decisions/s', f"{best['decisions_s']:,.0f} decisions/s (batch {best['batch']})",
                    best['decisions_s'] >= TARGETS['batch_dps']))
    out.append(('lost requests = 0', str(sum(l.lost for l in levels)), sum(l.lost for l in levels) == 0))
    return out


def queries(args) -> list[str]:
    from routenlp.core import load_config
    from routenlp.data import load_benchmark
    config = load_config(args.config) if args.config else load_config()
    return list(load_benchmark(args.task, 'test', 0, config).queries.text)


def plan_of(args) -> list[Level]:
    ints = lambda s: [int(x) for x in s.split(',') if x]
    return ([Level('/route', c) for c in ints(args.levels)]
            + [Level('/route/batch', c, b) for b in ints(args.batch_sizes) for c in ints(args.batch_concurrency)]
            + [Level('/v1/chat/completions', c) for c in ints(args.chat_levels)])


def profile(args, texts: list[str]) -> None:
    "The gateway under cProfile (main thread: the event loop, the micro-batched router), one /route level; top functions."
    out = Path(tempfile.mkdtemp(prefix='gateway-prof-')) / 'gateway.prof'
    port, log = free_port(), out.with_suffix('.log')
    proc = start_gateway(gateway_cmd(args, port, str(out)), log)
    try:
        url = f'http://127.0.0.1:{port}'
        wait_ready(url, proc, log, args.start_timeout)
        lv = asyncio.run(run_all(url, [Level('/route', args.profile)], texts, args.task, args.duration, args.warmup, proc))[0]
    finally: stop_gateway(proc, signal.SIGINT)   # SIGINT: uvicorn stops, cProfile writes its file on the way out
    if not out.exists(): sys.exit(f'no profile written ({log})')
    print(f'\n/route at c={args.profile} under cProfile: {lv.row()["decisions_s"]:.0f} req/s (profiler overhead included)')
    stats = pstats.Stats(str(out))
    stats.sort_stats('tottime').print_stats(25)
    stats.sort_stats('cumulative').print_stats(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--task', default='cs-intent')
    p.add_argument('--tiers', default='T1')
    p.add_argument('--config', default=None, help='config YAML (default: configs/default.yaml)')
    p.add_argument('--levels', default='1,8,32,64', help='/route concurrency levels')
    p.add_argument('--batch-sizes', default='64,256')
    p.add_argument('--batch-concurrency', default='1,4', help='concurrent /route/batch requests')
    p.add_argument('--chat-levels', default='1,8', help='/v1/chat/completions concurrency levels')
    p.add_argument('--duration', type=float, default=10.0, help='measured seconds per level')
    p.add_argument('--warmup', type=float, default=2.0, help='warm-up seconds per level (discarded)')
    p.add_argument('--start-timeout', type=float, default=1800.0, help='seconds to wait for a ready /health')
    p.add_argument('--profile', type=int, default=None, metavar='C', help='only profile the gateway at /route concurrency C')
    p.add_argument('--out', default=str(ROOT / 'benchmarks' / 'gateway_load.md'), help='markdown output')
    args = p.parse_args(argv)
    texts = queries(args)
    if args.profile: profile(args, texts); return 0
    load_before = os.getloadavg()
    port = free_port()
    log = Path(tempfile.mkdtemp(prefix='gateway-load-')) / 'gateway.log'
    t0 = time.perf_counter()
    proc = start_gateway(gateway_cmd(args, port), log)
    try:
        url = f'http://127.0.0.1:{port}'
        health = wait_ready(url, proc, log, args.start_timeout)
        start = {'seconds': time.perf_counter() - t0, 'health': health}
        print(f"gateway ready in {start['seconds']:.1f} s: {health.get('status')}, tiers {list(health.get('tiers', {}))}; "
              f"{len(texts)} {args.task} queries; {args.warmup:g} s warm-up + {args.duration:g} s per level")
        levels = asyncio.run(run_all(url, plan_of(args), texts, args.task, args.duration, args.warmup, proc))
    finally: stop_gateway(proc)
    md = markdown(levels, machine_facts(), load_before, os.getloadavg(), start, args,
                  ['.venv/bin/python', 'benchmarks/gateway_load.py', *(argv if argv is not None else sys.argv[1:])])
    print('\n' + md)
    Path(args.out).write_text(md)
    print(f'written to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
