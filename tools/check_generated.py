"""CI check: notebooks are nbdev-clean and `routenlp/` is exactly what `nbdev_export` makes of them.

Runs `nbdev_clean` and `nbdev_export` in place and fails, naming the files, when either changed anything.
(Run locally, it leaves the cleaned / exported files behind, ready to commit.)"""
import hashlib, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def snapshot(patterns):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest()
            for pat in patterns for p in sorted(ROOT.glob(pat))}


def changed(before, after):
    return sorted(str(p.relative_to(ROOT)) for p in set(before) | set(after) if before.get(p) != after.get(p))


def check(command, patterns, what):
    before = snapshot(patterns)
    subprocess.run([str(BIN / command)], cwd=ROOT, check=True)
    diff = changed(before, snapshot(patterns))
    if diff:
        print(f"FAIL: {what}; `{command}` changed: " + ", ".join(diff), file=sys.stderr)
    return not diff


ok = check('nbdev_clean', ['nbs/**/*.ipynb'], 'notebooks are not nbdev-clean')
ok &= check('nbdev_export', ['routenlp/**/*.py'], 'routenlp/ differs from the notebooks (edit nbs/, then nbdev_export)')
print('notebooks clean and package in sync' if ok else 'generated-file check failed')
sys.exit(0 if ok else 1)
