"""state_file.py: nested training state in one safetensors file, read back exactly, nothing unpickled."""

import math
import random

import pytest
import torch
from safetensors.torch import load_file

from softprompt.files.state_file import load_state, save_state


def test_state_round_trips_exactly_types_included(tmp_path):
    random.seed(3)
    optimiser = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2))])
    optimiser.param_groups[0]["params"][0].grad = torch.ones(3, 2)
    optimiser.step()
    state = {
        "optimizer": optimiser.state_dict(),  # keyed by parameter index (ints)
        "random": random.getstate(),  # a tuple holding a tuple of ints
        "best": -math.inf,
        "history": [{"step": 1, "eval/accuracy": 61.25}],
        "none": None,
        "flags": [True, False],
        "half": torch.randn(2, 2).to(torch.bfloat16),
        "scalar": torch.tensor(7),
        "rng": torch.get_rng_state(),
    }
    path = tmp_path / "state.safetensors"
    save_state(state, path)
    back = load_state(path)
    assert back.keys() == state.keys()
    assert back["random"] == state["random"] and isinstance(back["random"], tuple)
    random.setstate(back["random"])  # accepted as the generator's own state
    assert list(back["optimizer"]["state"]) == [0]
    torch.testing.assert_close(
        back["optimizer"]["state"][0]["exp_avg"], state["optimizer"]["state"][0]["exp_avg"], rtol=0, atol=0
    )
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert (
        back["best"] == -math.inf
        and back["history"] == state["history"]
        and back["none"] is None
        and back["flags"] == [True, False]
    )
    assert back["half"].dtype == torch.bfloat16 and torch.equal(back["half"], state["half"])
    assert back["scalar"].shape == () and back["scalar"].item() == 7
    assert torch.equal(back["rng"], state["rng"])
    assert (
        len(load_file(path)) == 3 + 3
    )  # a plain safetensors file: Adam's step, exp_avg, exp_avg_sq and the three above


def test_a_value_it_cannot_store_is_refused(tmp_path):
    with pytest.raises(TypeError, match="cannot store a set"):
        save_state({"x": {1, 2}}, tmp_path / "s.safetensors")
