"""bench/profile_step.py splits a profiled step into phases and counts each phase's operators and host reads."""

import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import profile_step  # noqa: E402  bench/profile_step.py


def test_a_phase_counts_its_computing_operators_and_its_host_reads():
    x = torch.randn(4, 4, requires_grad=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(profile_step.PROFILED_STEPS):
            with record_function("forward"):
                y = x.view(16) + 1  # a view (not counted) and an addition
                with record_function("model"):
                    z = (y * 2).sum()  # two operators inside the model
                bool(z > 0)  # a comparison, and its value read back
            with record_function("backward"):
                z.backward()
    found = profile_step.count(prof.events(), gpu=False)
    assert found["model_passes"] == 1 and found["host_reads"] == 1
    assert found["ops"]["model"] == 2
    assert found["ops"]["around"] == 3  # add, gt and the read itself (_local_scalar_dense)
    assert found["ops"]["backward"] > 0 and found["ops"]["optimizer"] == 0
