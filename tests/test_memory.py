"""`keep_freed_memory`: big blocks freed by one call are reused by the next without new page faults.

Each case runs in a fresh interpreter: the setting is process-wide and must not leak into the test run.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[1] / "src")
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# faults per call of a two-layer network whose hidden map is 50 MB (12k pages when fresh), in the main
# thread, then in a worker thread as the server runs its jobs; the first two calls of each let the heap
# reach its peak
PROBE = """
import json, resource, sys, threading
from controlnet.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
import torch
from torch.nn.functional import conv2d
torch.set_num_threads(1)
x, w1, w2 = torch.ones(1, 8, 256, 768), torch.ones(64, 8, 3, 3) / 72, torch.ones(8, 64, 3, 3) / 576

def calls(out):
    for _ in range(4):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        conv2d(torch.relu(conv2d(x, w1, padding=1)), w2, padding=1).sum()
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

main, worker = [], []
calls(main)
thread = threading.Thread(target=calls, args=(worker,)); thread.start(); thread.join()
print(json.dumps({"applied": applied, "later_calls": main[2:] + worker[2:]}))
"""


def probe(mode: str, **env) -> dict:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    environment.update(PYTHONPATH=SRC, **env)
    done = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=environment,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
def test_freed_blocks_are_reused_without_page_faults_in_main_and_worker_threads():
    fresh, kept = probe("plain"), probe("keep")
    assert min(fresh["later_calls"]) > 10_000  # by default the hidden map's pages are new at every call
    assert kept["applied"] and max(kept["later_calls"]) < 2_000


@pytest.mark.skipif(not GLIBC, reason="glibc's allocator only")
@pytest.mark.parametrize("env", [{"CONTROLNET_KEEP_FREED_MEMORY": "0"}, {"MALLOC_TRIM_THRESHOLD_": "131072"}])
def test_left_alone_when_switched_off_or_when_the_user_tuned_glibc(env):
    result = probe("keep", **env)
    assert not result["applied"] and min(result["later_calls"]) > 10_000


def test_the_command_line_keeps_freed_memory(monkeypatch, capsys):
    import controlnet.cli as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    assert cli.main(["annotators"]) == 0
    assert calls == [True]
