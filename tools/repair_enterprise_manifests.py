"""One-off repair of the committed enterprise manifests (issue #8, bug 3), without re-collecting them.

Before the fix, `collect._manifest` rebuilt per-tier facts from the tiers of the *current* run only, so the T2/T3
runs that finished the tables dropped T1's model sha256 and price from all six manifests, and every manifest
recorded `git_dirty: true` because the run's own outcome table was uncommitted while it wrote.

For each task this script
1. collects T1 again into a temporary folder (the ONNX heads the committed code builds, on exactly the committed
   queries), compares its rows with the committed T1 rows (output, quality, acceptable, tokens, cost, confidence;
   latency is measured anew and not compared), and writes the rebuilt head's sha256 and price into the manifest
   with that agreement beside it. The head file that collected the committed rows was never recorded, so the sha256
   is the rebuilt head's and says so (`model_sha256_source`). Head builds are deterministic (the same bytes twice,
   and the same bytes as the code before issue #8's refactor, 8e1a773), but they do not reproduce the collecting
   head bit for bit: e.g. fin-ner 897 / 900 identical tag sequences, confidences within 0.0035;
2. re-evaluates the dirty flag with the collection's own files excluded: the manifest's `prompts_sha256` must equal
   the sha256 of `routenlp/prompts.py` at the recorded commit (the code that built every prompt), and the model
   files are sha256-pinned per tier; when both hold, `git_dirty` becomes false and `provenance.repair` says what
   was checked, when, and what the old value was.
Nothing in the outcome tables changes. Run: `python tools/repair_enterprise_manifests.py [--tasks ...]`."""
import argparse, hashlib, json, subprocess, sys, tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from routenlp.collect import collect, enterprise_table_path, read_partial
from routenlp.core import load_config, project_root
from routenlp.data import TASK_REGISTRY
from routenlp.outcomes import manifest_path

COMPARED = ['query_id', 'output', 'quality', 'acceptable', 'input_tokens', 'output_tokens', 'cost_usd']


def t1_replay(task, config, workdir):
    "(committed T1 rows, replayed T1 rows, replayed manifest) for `task`."
    committed, _ = read_partial(enterprise_table_path(task))
    committed = committed[committed['tier'] == 'T1'].reset_index(drop=True)
    collect([task], ['T1'], config, out_dir=workdir, progress=False, chunk_size=256)
    replay, manifest = read_partial(enterprise_table_path(task, workdir))
    return committed, replay[replay['tier'] == 'T1'].reset_index(drop=True), manifest


def agreement(committed, replay) -> dict:
    "How far the replayed T1 rows are from the committed ones, per compared column."
    a = committed.set_index('query_id').sort_index(); b = replay.set_index('query_id').sort_index()
    if not a.index.equals(b.index): raise ValueError(f'the replay answered other queries ({len(a)} vs {len(b)} rows)')
    out = {'rows': len(a)}
    for col in COMPARED[1:]: out[f'identical_{col}'] = int((a[col] == b[col]).sum())
    out['max_abs_confidence_gap'] = round(float(np.nanmax(np.abs(a['confidence'].to_numpy(float) - b['confidence'].to_numpy(float)))), 6)
    out['mean_quality_committed'] = round(float(a['quality'].mean()), 4)
    out['mean_quality_replayed'] = round(float(b['quality'].mean()), 4)
    return out


def prompts_sha_at(commit: str) -> str | None:
    src = subprocess.run(['git', 'show', f'{commit}:routenlp/prompts.py'], cwd=project_root(), capture_output=True, text=True)
    return hashlib.sha256(src.stdout.encode()).hexdigest()[:16] if src.returncode == 0 else None


def repair(task, config, workdir) -> str:
    path = manifest_path(enterprise_table_path(task))
    manifest = json.loads(path.read_text())
    committed, replay, fresh = t1_replay(task, config, workdir)
    agree = agreement(committed, replay)
    t1 = manifest['tiers']['T1']
    for key in ('model_sha256', 'price_per_1k'): t1[key] = fresh['tiers']['T1'][key]
    t1['model_sha256_source'] = ('rebuilt: the int8 ONNX head the committed code builds (deterministically); the file that '
                                 'collected these rows was not recorded (issue #8, bug 3)')
    t1['replay'] = agree
    prov = manifest['provenance']
    pinned = all(manifest['tiers'][t].get('model_sha256') for t in manifest['tiers'])
    same_prompts = manifest.get('prompts_sha256') == prompts_sha_at(prov['git_sha'])
    note = {'date_utc': datetime.now(timezone.utc).isoformat(timespec='seconds'), 'by': 'tools/repair_enterprise_manifests.py',
            'git_dirty_was': prov.get('git_dirty'), 'prompts_match_commit': same_prompts, 'model_files_pinned': pinned,
            'why': 'collect wrote its own (tracked) outcome table while running, which git counted as uncommitted code'}
    if prov.get('git_dirty') and same_prompts and pinned: prov['git_dirty'] = False
    prov['repair'] = note
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + '\n')
    return (f"{task}: T1 sha256 {t1['model_sha256'][:12]}… (rebuilt); replay {agree}; "
            f"git_dirty {note['git_dirty_was']} -> {prov['git_dirty']} (prompts match commit: {same_prompts})")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--tasks', nargs='*', default=list(TASK_REGISTRY))
    args = ap.parse_args(argv)
    config = load_config()
    with tempfile.TemporaryDirectory() as d:
        for task in args.tasks: print(repair(task, config, Path(d)), flush=True)


if __name__ == '__main__':
    sys.exit(main())
