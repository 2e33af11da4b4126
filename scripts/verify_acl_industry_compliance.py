#!/usr/bin/env python
"""The seed's compliance script: checks that the repository states limitations, risks and ethics, compute resources,
data licences (data cards), human-evaluation status, reproducibility commands and its own licence, and prints what
is missing. Exit status 0 when everything is stated, 1 when something is missing, 2 for an unknown check name.

It is `routenlp verify-compliance` (routenlp.compliance, nbs/39_compliance.ipynb); arguments are passed through:

    python scripts/verify_acl_industry_compliance.py [--check NAME ...] [--root PATH] [--data-dir PATH]
"""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))   # run from a checkout without `pip install -e .`

from routenlp.cli import main  # noqa: E402

if __name__ == '__main__':
    sys.exit(main(['verify-compliance', *sys.argv[1:]]))
