"""The benchmark's CPU path runs end to end (numbers are reported, not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


def test_benchmark_cpu_path(tmp_path):
    out = tmp_path / "r.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--shape", "tiny", "--steps", "1", "--warmup", "1",
                           "--batch", "2", "--json", str(out)], capture_output=True, text=True, timeout=300,
                          env={"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert [r["variant"] for r in results] == ["diffusers", "ours", "ours+cache"]
    for r in results:
        assert r["samples_per_s"] > 0 and r["peak_mb"] > 0 and r["loss"] == r["loss"]
    assert "vs diffusers" in done.stdout


def test_rounds_are_summarized_by_their_medians():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_speed", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    runs = [{"variant": "ours", "batch": 2, "process_cpu_s_per_step": cpu, "step_s": wall}
            for cpu, wall in ((1.0, 9.0), (3.0, 1.0), (2.0, 5.0))]
    summary = bench.summarize(runs)
    assert (summary["process_cpu_s_per_step"], summary["step_s"], summary["rounds"]) == (2.0, 5.0, 3)
    assert summary["process_cpu_s_per_step_all"] == [1.0, 3.0, 2.0]
    failed = {"variant": "ours", "batch": 2, "error": ["boom"]}
    assert bench.summarize(runs + [failed]) == failed  # one failed round fails the variant, not a median of the rest
