"""The decision log with real parts (issue #11): a writer killed with SIGKILL mid-stream loses no acknowledged
decision (SQLite WAL), and PostgreSQL mode against a real PostgreSQL server this file starts (initdb + pg_ctl, as an
unprivileged user when run as root), two DecisionLog instances standing in for two gateway replicas."""
import glob, math, os, pwd, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path

import pytest

from routenlp.decision_log import DecisionLog

ROOT = Path(__file__).resolve().parents[1]

# The child: 32 concurrent `arecord` callers; an id is printed (and flushed) only after its arecord returned, i.e.
# only once the transaction holding it has committed. Whatever reaches the parent's pipe was acknowledged.
WRITER = r'''
import asyncio, sys
from routenlp.decision_log import DecisionLog
log = DecisionLog(sys.argv[1], batch_max=64)
run = sys.argv[2]
async def caller(w):
    i = 0
    while True:
        d = {'decision_id': f'{run}-{w}-{i}', 'task': 'ner', 'start_tier': 't1', 'answered_by': 't2',
             'cost_usd': 0.001, 'confidence': float('nan')}
        await log.arecord([d], key_id='k')
        sys.stdout.write(d['decision_id'] + '\n'); sys.stdout.flush()
        i += 1
async def main():
    await asyncio.gather(*(caller(w) for w in range(32)))
asyncio.run(main())
'''


def _kill_midstream(url: str, run: str, min_acks: int = 500, timeout: float = 60) -> list[str]:
    "Start the writer, SIGKILL it once it has acknowledged >= min_acks ids; every id it acknowledged."
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.Popen([sys.executable, '-c', WRITER, url, run], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    acked, t0 = [], time.monotonic()
    try:
        while len(acked) < min_acks:
            line = p.stdout.readline()
            if not line:
                raise AssertionError(f"writer exited (rc {p.wait()}) after {len(acked)} acks: {p.stderr.read()[-2000:]}")
            acked.append(line.strip())
            assert time.monotonic() - t0 < timeout, f"only {len(acked)} acks in {timeout} s"
        os.kill(p.pid, signal.SIGKILL)
        acked += [l.strip() for l in p.stdout.read().splitlines() if l.strip()]   # printed before it died: acked too
        assert p.wait() == -signal.SIGKILL, p.returncode
    finally:
        if p.poll() is None: p.kill(); p.wait()
        p.stdout.close(); p.stderr.close()
    return acked


def test_kill9_loses_no_acknowledged_decision(tmp_path):
    url = f'sqlite:///{tmp_path}/decisions.db'
    total = []
    for run in ('r0', 'r1'):   # twice, the second on the log the first left behind
        acked = _kill_midstream(url, run)
        assert len(acked) >= 500 and len(set(acked)) == len(acked)
        total += acked
        with DecisionLog(url) as log:
            assert log.integrity() == 'ok'
            missing = [i for i in acked if log.get(i) is None]
            assert not missing, f"{len(missing)} acknowledged decisions lost, e.g. {missing[:5]}"
            n = log.counts()['decisions']
            assert n >= len(total), (n, len(total))   # committed but not yet printed rows may be there too
            assert math.isclose(log.spent('k'), 0.001 * n, rel_tol=1e-9), (log.spent('k'), n)
            got = log.get(acked[-1])
            assert (got['task'], got['answered_by'], got['confidence'], got['key_id']) == ('ner', 't2', None, 'k')


# ---------------------------------------------------------------- PostgreSQL

def _pg_bin(name: str) -> str | None:
    "A PostgreSQL server binary on PATH, else the newest under /usr/lib/postgresql/*/bin (Debian's apt layout)."
    found = shutil.which(name)
    if found: return found
    cands = sorted(glob.glob(f'/usr/lib/postgresql/*/bin/{name}'), key=lambda p: int(Path(p).parts[-3]))
    return cands[-1] if cands else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def pg_url():
    "A throwaway PostgreSQL server on 127.0.0.1 (trust auth); skipped only when its binaries are not installed."
    initdb, pg_ctl = _pg_bin('initdb'), _pg_bin('pg_ctl')
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL mode not tested: no initdb / pg_ctl on PATH or under /usr/lib/postgresql/*/bin "
                    "(install the `postgresql` apt package; .ci/run does)")
    base = Path(tempfile.mkdtemp(prefix='routenlp-pg-'))
    as_user = {}
    if os.geteuid() == 0:   # initdb refuses root: run the server as nobody, in a folder nobody owns
        pw = pwd.getpwnam('nobody')
        os.chown(base, pw.pw_uid, pw.pw_gid)
        as_user = {'user': pw.pw_uid, 'group': pw.pw_gid, 'extra_groups': []}
    data, log, port = base / 'data', base / 'server.log', _free_port()
    env = {**os.environ, 'LC_ALL': 'C', 'LANG': 'C'}
    def run(*cmd):
        r = subprocess.run(cmd, env=env, cwd=base, capture_output=True, text=True, timeout=60, **as_user)
        tail = log.read_text()[-2000:] if log.exists() else ''
        assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}): {r.stderr[-2000:]}\n{tail}"
    try:
        run(initdb, '-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync')
        run(pg_ctl, '-D', data, '-l', log, '-w', '-t', '30', '-o',
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={base}", 'start')
        yield f'postgresql://postgres@127.0.0.1:{port}/postgres'   # no driver named: psycopg (settings.ini), else pg8000
    finally:
        if (data / 'postmaster.pid').exists():
            subprocess.run([pg_ctl, '-D', data, '-m', 'immediate', 'stop'], env=env, cwd=base, capture_output=True,
                           timeout=60, **as_user)
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql_round_trip_and_shared_state(pg_url):
    a, b = DecisionLog(pg_url), DecisionLog(pg_url)   # two gateway replicas sharing one log
    try:
        d = {'decision_id': 'pg-1', 'task': 'ner', 'start_tier': 't1', 'answered_by': 't2', 'cost_usd': 0.25,
             'latency_ms': 40.0, 'segment': 'eu', 'alpha': 0.1, 'p_acceptable': {'t1': float('nan'), 't2': 0.9}}
        a.record([d], key_id='team')
        got = b.get('pg-1')   # written by one replica, read by the other
        assert got['p_acceptable'] == {'t1': None, 't2': 0.9} and got['key_id'] == 'team' and got['segment'] == 'eu'
        import asyncio
        async def many(log, prefix):
            await asyncio.gather(*(log.arecord([{'decision_id': f'{prefix}{i}', 'task': 'ner', 'start_tier': 't1',
                                                 'cost_usd': 0.5}], key_id='team') for i in range(40)))
        asyncio.run(many(b, 'pg-b'))
        assert b.stats['commits'] < 40   # group commit on PostgreSQL too
        assert math.isclose(a.spent('team'), 0.25 + 40 * 0.5) and a.spent('other') == 0.0
        with pytest.raises(ValueError, match='already in the log'):
            b.record([d])
        with pytest.raises(KeyError, match='pg-404'):
            a.add_feedback('pg-404', acceptable=True)
        with pytest.raises(ValueError, match=r'\[0, 1\]'):
            a.add_feedback('pg-1', quality=2.0)
        fb = a.add_feedback('pg-1', acceptable=False, update={'tier': 't2', 'task': 'ner', 'alpha': 0.1,
                                                               'tau_before': 0.7, 'tau_after': 0.72})
        assert (fb['acceptable'], fb['tau_after']) == (False, 0.72)
        assert b.thresholds(0.1) == {('t2', 'ner'): 0.72}   # the calibrator state one replica saved, seen by the other
        b.save_threshold('t2', 'ner', 0.1, 0.8); b.save_threshold('t1', 'ner', 0.1, math.inf)
        assert a.thresholds(0.1) == {('t2', 'ner'): 0.8, ('t1', 'ner'): math.inf} and a.thresholds(0.05) == {}
        assert a.counts() == b.counts() == {'decisions': 41, 'feedback': 1}
        assert a.integrity() == b.integrity() == 'ok'
    finally:
        a.close(); b.close()
    with DecisionLog(pg_url) as again:   # a restarted replica resumes the state
        assert again.thresholds(0.1)[('t2', 'ner')] == 0.8 and again.counts()['decisions'] == 41


def test_unreachable_postgresql_names_the_url():
    with pytest.raises(ConnectionError, match=r'127\.0\.0\.1:1/nodb'):
        DecisionLog('postgresql://u:pw@127.0.0.1:1/nodb')
