"""Build the documentation site into site/ (`make docs`; `make test` runs it): `mkdocs build --strict`.

Strict mode turns every mkdocs warning into a failure: a broken link, a nav entry without its page, a docstring
mkdocstrings cannot render. After a successful build, `site/.build.json` records a hash of every input (notebooks,
package sources, README, docs/, mkdocs.yml, the hooks, the tables and figures the Results pages show) so that
tests/test_docs.py reuses a build of exactly these inputs and rebuilds otherwise (`--if-stale` does the same here).

    python tools/build_docs.py [--if-stale] [--site-dir site]
"""
import argparse, hashlib, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = ('nbs/*.ipynb', 'routenlp/**/*.py', 'README.md', 'docs/**/*', 'mkdocs.yml', 'tools/docs_hooks.py',
          'papers/tables/*.md', 'figures/*.png')   # the Results pages show these
STAMP = '.build.json'


def inputs_hash(root: Path = ROOT) -> str:
    "sha256 over the paths and bytes of every file the site is built from."
    h = hashlib.sha256()
    for path in sorted({p for pattern in INPUTS for p in root.glob(pattern) if p.is_file()}):
        h.update(path.relative_to(root).as_posix().encode() + b'\0' + path.read_bytes() + b'\0')
    return h.hexdigest()


def is_current(site_dir: Path, root: Path = ROOT) -> bool:
    "Whether `site_dir` holds a successful build of the current inputs."
    stamp = site_dir / STAMP
    return stamp.exists() and json.loads(stamp.read_text()).get('inputs') == inputs_hash(root)


def build(site_dir: Path | None = None, root: Path = ROOT) -> dict:
    "Run `mkdocs build --strict` into `site_dir`; raise with mkdocs' output when it fails; return the stamp."
    site_dir = Path(site_dir or root / 'site').resolve()
    digest, start = inputs_hash(root), time.perf_counter()
    mkdocs = Path(sys.executable).with_name('mkdocs')
    proc = subprocess.run([str(mkdocs), 'build', '--strict', '--clean', '--site-dir', str(site_dir)], cwd=root,
                          capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(root)})
    if proc.returncode:
        raise RuntimeError(f'mkdocs build --strict failed (exit {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr[-8000:]}')
    stamp = {'inputs': digest, 'seconds': round(time.perf_counter() - start, 1)}
    (site_dir / STAMP).write_text(json.dumps(stamp))
    return stamp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--site-dir', default=str(ROOT / 'site'))
    ap.add_argument('--if-stale', action='store_true', help='skip the build when site/ already holds these inputs')
    args = ap.parse_args(argv)
    site = Path(args.site_dir)
    if args.if_stale and is_current(site):
        print(f'docs: {site} is current'); return 0
    try: stamp = build(site)
    except RuntimeError as e:
        print(e, file=sys.stderr); return 1
    print(f"docs: built {site} in {stamp['seconds']} s (mkdocs build --strict)")
    return 0


if __name__ == '__main__':
    sys.exit(main())
