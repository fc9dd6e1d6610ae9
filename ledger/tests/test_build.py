"""The committed ABI and bytecode are what the pinned compiler makes of the committed sources."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_build_matches_sources():
    node = shutil.which("node")
    assert node, "node is needed to compile the contracts"
    result = subprocess.run([node, "ledger/contracts/compile.js", "--check"], cwd=ROOT, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "matches" in result.stdout


def test_artifacts_pin_the_compiler_version():
    pinned = json.loads((ROOT / "package.json").read_text())["dependencies"]["solc"]
    for path in (ROOT / "ledger/contracts/build").glob("*.json"):
        art = json.loads(path.read_text())
        assert art["compiler"].startswith(pinned + "+"), path
        assert art["bytecode"].startswith("0x") and len(art["bytecode"]) > 100
