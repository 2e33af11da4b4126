"""The measured tables of docs/COMPUTE_RESOURCES.md, from the repository's own records (nothing is timed here):

- collection: wall seconds per (enterprise task, tier) from `outcomes/enterprise/*.manifest.json` (`tiers.<T>.wall_s`,
  the time `routenlp collect` spent answering and scoring that tier's queries, servers running);
- T1 training: `train_seconds` / `export_seconds` of the T1 head manifests under the cache
  (`$ROUTENLP_CACHE_DIR/t1/**/manifest.json`; absent on a fresh machine, then the table says so).

    python tools/compute_resources.py            # prints both tables as Markdown
"""
import json, os, statistics
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collection_rows(root: Path = ROOT) -> list[dict]:
    rows = []
    for path in sorted((root / 'outcomes' / 'enterprise').glob('*.manifest.json')):
        m = json.loads(path.read_text())
        for tier, t in m['tiers'].items():
            rows.append({'task': m['task'], 'tier': tier, 'model': t.get('model'), 'queries': t.get('rows'),
                         'wall_s': t.get('wall_s'), 'queries_per_s': t.get('queries_per_s')})
    return rows


def collection_table(root: Path = ROOT) -> str:
    rows = collection_rows(root)
    tiers = sorted({r['tier'] for r in rows})
    lines = ['| task | ' + ' | '.join(f'{t} wall s (q/s)' for t in tiers) + ' | queries per tier |',
             '|---|' + '---:|' * len(tiers) + '---:|']
    for task in sorted({r['task'] for r in rows}):
        by = {r['tier']: r for r in rows if r['task'] == task}
        cells = [f"{by[t]['wall_s']:,.0f} ({by[t]['queries_per_s']:.2f})" if t in by else '' for t in tiers]
        lines.append(f'| {task} | ' + ' | '.join(cells) + f" | {by[tiers[0]]['queries']} |")
    totals = [sum(r['wall_s'] for r in rows if r['tier'] == t) for t in tiers]
    lines.append('| **all six** | ' + ' | '.join(f'**{s:,.0f} s = {s / 3600:.2f} h**' for s in totals) + ' | |')
    return '\n'.join(lines) + f'\n\nAll tiers together: {sum(totals):,.0f} s = {sum(totals) / 3600:.2f} h.'


def t1_table(cache: Path | None = None) -> str:
    cache = Path(cache or os.environ.get('ROUTENLP_CACHE_DIR', ROOT / '.cache' / 'routenlp'))
    ms = [json.loads(p.read_text()) for p in sorted((cache / 't1').glob('**/manifest.json'))]
    if not ms: return f'(no T1 head manifests under {cache / "t1"}: train the heads first)'
    lines = ['| task | heads | train rows | epochs | train s (median, range) | CPU s (median) | ONNX export + int8 s (median) |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for task in sorted({m['task'] for m in ms}):
        g = [m for m in ms if m['task'] == task]
        tr = [m['train_seconds'] for m in g]
        lines.append(f"| {task} | {len(g)} | {min(m['n_train'] for m in g)}–{max(m['n_train'] for m in g)} | "
                     f"{min(m['epochs'] for m in g)}–{max(m['epochs'] for m in g)} | {statistics.median(tr):.1f} "
                     f"({min(tr):.1f}–{max(tr):.1f}) | {statistics.median(m['train_cpu_seconds'] for m in g):.1f} | "
                     f"{statistics.median(m['export_seconds'] for m in g):.1f} |")
    return '\n'.join(lines)


if __name__ == '__main__':
    print('## Collection (outcomes/enterprise/*.manifest.json)\n')
    print(collection_table())
    print('\n## T1 head training (T1 head manifests)\n')
    print(t1_table())
