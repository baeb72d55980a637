"""train.reuse_freed_memory: after the first steps, a step reuses the memory the previous one freed."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, resource, sys, torch
from camoe.training.allocator import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else False
torch.ones(16 * 2**20)  # 64 MB: first touch of the pages in both runs
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    torch.ones(16 * 2**20)  # allocated, written, freed: what a training step does with its activations
print(json.dumps({"applied": applied, "again": reuse_freed_memory() if applied else False,
                  "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=120)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting exists for glibc's malloc only")
def test_freed_tensor_memory_is_reused_instead_of_page_faulted_again() -> None:
    on, off = _probe("on"), _probe("off")
    assert on["applied"] and on["again"]
    assert off["faults"] > 10 * 16_000 * 0.9  # 10 × 16,384 fresh 4 KiB pages without the setting
    assert on["faults"] < off["faults"] / 4  # measured: 32,768 vs 163,850
