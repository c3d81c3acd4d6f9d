import pytest

import gpu_tiler as gt
from gpu_tiler._config import DEFAULT_HOST_FRACTION, get_setting


@pytest.mark.parametrize(
    "text, expected",
    [
        (1024, 1024),
        ("1024", 1024),
        ("512MiB", 512 * 2**20),
        ("512 MiB", 512 * 2**20),
        ("2GB", 2 * 10**9),
        ("1.5GiB", int(1.5 * 2**30)),
        ("64kb", 64_000),
        ("3 gib", 3 * 2**30),
        (0.5, 0.5),
        ("0.25", 0.25),
        ("50%", 0.5),
        (1.0, 1.0),
        (2048.0, 2048),
    ],
)
def test_budget_parses(text, expected):
    value = gt.parse_budget(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("bad", ["lots", "12 parsecs", "-5MiB", "0", 0, -1, 1.5, "150%", "", True, [1]])
def test_budget_that_does_not_parse_is_a_value_error_quoting_it(bad):
    with pytest.raises(ValueError) as info:
        gt.parse_budget(bad)
    assert repr(bad) in str(info.value)


def test_config_sets_and_context_restores():
    assert get_setting("backend") == "auto"
    assert get_setting("memory_budget") is None
    gt.config(memory_budget="256MiB")
    assert get_setting("memory_budget") == 256 * 2**20
    with gt.config(memory_budget=0.1, backend="numpy"):
        assert get_setting("memory_budget") == 0.1
        assert get_setting("backend") == "numpy"
    assert get_setting("memory_budget") == 256 * 2**20
    assert get_setting("backend") == "auto"
    gt.config(memory_budget=None)
    assert get_setting("memory_budget") is None


def test_config_rejects_bad_values_and_changes_nothing():
    with pytest.raises(ValueError, match="'tpu'"):
        gt.config(backend="tpu")
    with pytest.raises(ValueError, match="'a lot'"):
        gt.config(memory_budget="a lot", backend="numpy")
    assert get_setting("backend") == "auto"
    with pytest.raises(ValueError, match="tiles_in_flight"):
        gt.config(tiles_in_flight=0)


def test_environment_variables_apply_and_config_wins(monkeypatch):
    monkeypatch.setenv("GPU_TILER_MEMORY_BUDGET", "1GiB")
    monkeypatch.setenv("GPU_TILER_BACKEND", "numpy")
    monkeypatch.setenv("GPU_TILER_TILES_IN_FLIGHT", "3")
    assert get_setting("memory_budget") == 2**30
    assert get_setting("backend") == "numpy"
    assert get_setting("tiles_in_flight") == 3
    with gt.config(memory_budget="2MiB"):
        assert get_setting("memory_budget") == 2 * 2**20
    monkeypatch.setenv("GPU_TILER_MEMORY_BUDGET", "plenty")
    with pytest.raises(ValueError, match="GPU_TILER_MEMORY_BUDGET='plenty'"):
        get_setting("memory_budget")


def test_devices_lists_the_host_with_default_and_configured_budgets():
    host = gt.devices()[0]
    assert host.kind == "cpu" and host.index == 0 and host.name
    assert 0 < host.free_bytes <= host.total_bytes
    assert host.budget_bytes == pytest.approx(host.free_bytes * DEFAULT_HOST_FRACTION, rel=0.05)
    with gt.config(memory_budget="300MiB"):
        assert gt.devices()[0].budget_bytes == 300 * 2**20
    assert gt.devices("1GiB")[0].budget_bytes == 2**30
    half = gt.devices(0.5)[0]
    assert half.budget_bytes == pytest.approx(half.free_bytes * 0.5, rel=0.05)
    assert "budget" in str(host)
