"""`make reproduce`: execute every experiment notebook (nbs/9*.ipynb) with papermill.

Executed copies go to the git-ignored runs/; the notebooks themselves write papers/tables/ and figures/.
Notebooks whose `parameters` cell defines `seeds` get the seeds given here (mean ± std is computed inside).
Each notebook's own progress lines (one per seed) are streamed to stdout as it runs, and each notebook's wall
time is printed when it ends."""
import argparse, sys, time
from pathlib import Path

import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    ap.add_argument('--only', nargs='*', default=None, help='notebook name stems to run (default: all nbs/9*.ipynb)')
    args = ap.parse_args(argv)
    notebooks = sorted((ROOT / 'nbs').glob('9*.ipynb'))
    if args.only:
        notebooks = [nb for nb in notebooks if nb.stem in args.only]
    if not notebooks:
        sys.exit('no experiment notebooks (nbs/9*.ipynb) matched')
    runs = ROOT / 'runs'
    runs.mkdir(exist_ok=True)
    total = 0.0
    for nb in notebooks:
        declared = pm.inspect_notebook(str(nb))
        params = {}
        if 'seeds' in declared: params['seeds'] = args.seeds
        if 'out_root' in declared: params['out_root'] = str(ROOT)
        print(f'== {nb.name} {params}', flush=True)
        t0 = time.perf_counter()
        pm.execute_notebook(str(nb), str(runs / nb.name), parameters=params, cwd=str(ROOT / 'nbs'),
                            kernel_name='python3', progress_bar=False, log_output=True,
                            stdout_file=sys.stdout, stderr_file=sys.stderr)
        print(f'== {nb.name} done in {time.perf_counter() - t0:.0f} s', flush=True)
        total += time.perf_counter() - t0
    print(f'executed {len(notebooks)} notebook(s) in {total / 60:.1f} min; copies in runs/')


if __name__ == '__main__':
    main()
