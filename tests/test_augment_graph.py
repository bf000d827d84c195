"""The in-graph (accelerator) augmentation equals the CPU loader's (OpenCV) to 1e-4, for every
study augmentation it supports (issue 25 item 6). Research use only - not a medical device."""
from __future__ import annotations

import numpy as np
import pytest

from mammo_core.errors import MammoError
from mammo_core.training.augment import AUGMENT_SPECS, augment_batch, with_overrides
from mammo_core.training.augment_graph import augment_in_graph

SPECS = {**{k: v for k, v in AUGMENT_SPECS.items() if k != "none"},
         "vflip_shift": with_overrides(AUGMENT_SPECS["geometric"], {"vertical_flip": True, "width_shift_range": 0.4}),
         "rot90_geometric": with_overrides(AUGMENT_SPECS["geometric_rot90_reflect"], {"rot90": True})}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_in_graph_augmentation_matches_the_cpu_path(name):
    from keras import ops

    rng = np.random.default_rng(5)
    x = rng.random((12, 150, 150, 1), dtype=np.float32)
    idx = np.arange(100, 112)
    ref = augment_batch(x, idx, SPECS[name], seed=4, epoch=2)
    got = ops.convert_to_numpy(augment_in_graph(ops.convert_to_tensor(x), idx, SPECS[name], seed=4, epoch=2))
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 1e-4, np.abs(got - ref).max()


def test_constant_fill_is_refused():
    spec = with_overrides(AUGMENT_SPECS["geometric"], {"fill_mode": "constant"})
    with pytest.raises(MammoError, match="fill modes"):
        augment_in_graph(np.zeros((1, 150, 150, 1), np.float32), [0], spec, 0, 0)
