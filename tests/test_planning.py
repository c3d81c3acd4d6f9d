import math

import numpy as np
import pytest

import gpu_tiler as gt
from gpu_tiler._planning.plan import tile_bytes

MiB = 2**20


@pytest.mark.parametrize(
    "shape, halo",
    [
        ((10_000,), 5),
        ((4097, 3001), 8),
        ((4096, 4096), (0, 30)),
        ((97, 1031, 517), 3),
        ((5, 64, 300, 301), (0, 2, 4, 4)),
        ((1, 1, 100_000), 1),
    ],
)
@pytest.mark.parametrize("budget", ["2MiB", "16MiB", "128MiB"])
def test_plan_stays_inside_the_budget_and_covers_the_image(shape, halo, budget):
    plan = gt.plan_tiles(shape, "float32", halo=halo, budget=budget, tiles_in_flight=2)
    budget_bytes = gt.parse_budget(budget)
    assert plan.budget_bytes == budget_bytes
    assert plan.tiles_in_flight * plan.bytes_per_tile <= budget_bytes
    assert plan.peak_bytes == plan.tiles_in_flight * plan.bytes_per_tile
    halo_t = (halo,) * len(shape) if np.isscalar(halo) else halo
    assert plan.halo == halo_t
    assert plan.bytes_per_tile == tile_bytes(plan.tile_shape, halo_t, 4, 4, 2)
    assert all(1 <= t <= n for t, n in zip(plan.tile_shape, shape))
    assert tuple(sum(c) for c in plan.chunks) == shape
    assert plan.n_tiles == math.prod(len(c) for c in plan.chunks)
    # Cuts are even: no sliver tiles beyond what rounding up leaves.
    for chunks, t in zip(plan.chunks, plan.tile_shape):
        assert all(c == t for c in chunks[:-1])


def test_bytes_per_tile_counts_halo_working_copies_and_output():
    plan = gt.plan_tiles((100, 100), "uint16", halo=10, budget="1GiB", out_dtype="float32", working_copies=3)
    assert plan.tile_shape == (100, 100)
    assert plan.bytes_per_tile == 120 * 120 * 2 + 120 * 120 * 4 * 3 + 100 * 100 * 4


def test_a_whole_image_that_fits_is_one_tile():
    plan = gt.plan_tiles((64, 64), "uint8", halo=2, budget="1GiB")
    assert plan.tile_shape == (64, 64) and plan.n_tiles == 1


def test_plan_uses_most_of_the_budget():
    plan = gt.plan_tiles((8192, 8192), "float32", halo=8, budget="128MiB", tiles_in_flight=2, cache_voxels=0)
    assert plan.peak_bytes > 0.5 * 128 * MiB


def test_host_tiles_are_cut_to_the_cache_size_on_chunk_edges():
    plan = gt.plan_tiles((8192, 8192), "uint16", halo=8, budget="4GiB", chunks=(1024, 1024), tiles_in_flight=2)
    assert plan.tile_shape == (1024, 1024)  # HOST_TILE_VOXELS, on the source's chunk edges
    assert gt.plan_tiles((8192, 8192), "uint16", halo=8, budget="4GiB", chunks=(1024, 1024), tiles_in_flight=2,
                         cache_voxels=4 * 2**20).tile_shape == (2048, 2048)
    narrow = gt.plan_tiles((100_000, 100), "float32", halo=30, budget="4GiB", tiles_in_flight=2)
    assert narrow.tile_shape[1] == 100 and narrow.tile_shape[0] >= 120  # never shorter than four halos


def test_halo_larger_than_the_tile_still_plans():
    plan = gt.plan_tiles((1000, 1000), "float64", halo=100, budget="2MiB", tiles_in_flight=1)
    assert plan.peak_bytes <= 2 * MiB
    assert min(plan.tile_shape) < 100  # the halo is wider than the tile, and that is allowed


def test_tiles_align_with_source_chunks_where_one_fits():
    plan = gt.plan_tiles((4096, 4096), "uint16", halo=4, budget="16MiB", chunks=(256, 256), tiles_in_flight=2)
    assert all(t % 256 == 0 for t in plan.tile_shape)
    assert plan.peak_bytes <= 16 * MiB


def test_fewer_tiles_in_flight_when_the_budget_is_tight():
    one = tile_bytes((1, 1), (50, 50), 8, 8, 2)
    plan = gt.plan_tiles((500, 500), "float64", halo=50, budget=one * 3, tiles_in_flight=8)
    assert plan.tiles_in_flight == 3
    assert plan.peak_bytes <= one * 3


def test_a_budget_too_small_for_one_tile_says_what_to_raise():
    with pytest.raises(ValueError, match=r"raise memory_budget to at least \d+ bytes") as info:
        gt.plan_tiles((1000, 1000), "float32", halo=200, budget=1000)
    assert "halo (200, 200)" in str(info.value)


def test_given_tile_shape_is_kept_or_refused():
    plan = gt.plan_tiles((300, 300), "float32", halo=3, budget="64MiB", tile_shape=(64, 1000))
    assert plan.tile_shape == (64, 300)
    with pytest.raises(ValueError, match="pass a smaller tile_shape"):
        gt.plan_tiles((3000, 3000), "float32", halo=3, budget="1MiB", tile_shape=(2000, 2000))
    with pytest.raises(ValueError, match="tile_shape"):
        gt.plan_tiles((30, 30), "float32", tile_shape=(0, 4), budget="1MiB")


def test_default_budget_and_in_flight_come_from_config():
    with gt.config(memory_budget="8MiB", tiles_in_flight=3):
        plan = gt.plan_tiles((4096, 4096), "float32", halo=4)
    assert plan.budget_bytes == 8 * MiB and plan.tiles_in_flight == 3


@pytest.mark.parametrize("halo", [-1, 1.5, (1, 2, 3)])
def test_bad_halo_is_refused(halo):
    with pytest.raises(ValueError, match="halo"):
        gt.plan_tiles((10, 10), "uint8", halo=halo, budget="1MiB")


def test_an_image_that_fits_is_still_cut_for_every_tile_in_flight():
    plan = gt.plan_tiles((4096, 4096), "float32", halo=20, budget="4GiB", tiles_in_flight=2, cache_voxels=0)
    assert plan.n_tiles >= 2 and plan.tile_shape[1] == 4096
    small = gt.plan_tiles((100, 100), "float32", halo=20, budget="4GiB", tiles_in_flight=2)
    assert small.n_tiles == 1  # cutting would leave tiles shorter than four halos


def test_whole_axes_are_never_cut():
    plan = gt.plan_tiles((512, 2048), "float64", budget="2MiB", tiles_in_flight=2, whole_axes=(1,))
    assert plan.tile_shape[1] == 2048 and plan.peak_bytes <= 2 * MiB
    with pytest.raises(ValueError, match="raise memory_budget"):
        gt.plan_tiles((4, 10**6), "float64", budget="1MiB", whole_axes=(1,))
