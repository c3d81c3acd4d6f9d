"""The counting exercise runs at a small size: gpu_tiler counts what the whole image counts, naive tiles overcount."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import scipy.ndimage as ndi

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "count_nuclei.py"


def run(*args, cwd):
    return subprocess.run([sys.executable, str(EXAMPLE), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          timeout=600, check=False)


def counts(stdout):
    """Method name -> the count printed for it."""
    found = {}
    for line in stdout.splitlines():
        match = re.match(r"\s+(whole image|naive per-tile count|gpu_tiler\.label|gpu_tiler\.map_labels)\b.*?\s(\d+)\s+[+-]\d+",
                         line)
        if match:
            found[match.group(1)] = int(match.group(2))
    return found


def test_gpu_tiler_counts_equal_the_whole_image_and_the_naive_count_is_higher(tmp_path):
    store = tmp_path / "nuclei.zarr"
    result = run("--size", 1024, "--tile", 256, "--halo", 32, "--store", store, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = counts(result.stdout)
    assert set(found) == {"whole image", "naive per-tile count", "gpu_tiler.label", "gpu_tiler.map_labels"}, result.stdout
    whole = found["whole image"]
    assert found["gpu_tiler.label"] == whole == found["gpu_tiler.map_labels"]
    assert found["naive per-tile count"] > whole > 100
    assert "within 0.5 %" in result.stdout
    # the printed reference is scipy on the image the example saved
    import gpu_tiler as gt

    assert ndi.label(np.asarray(gt.open(store)) > 0.3)[1] == whole


def test_without_the_whole_image_gpu_tiler_is_compared_with_itself(tmp_path):
    result = run("--size", 512, "--tile", 128, "--no-whole", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    found = counts(result.stdout)
    assert "whole image" not in found and "whole image: skipped" in result.stdout
    assert found["gpu_tiler.label"] == found["gpu_tiler.map_labels"] < found["naive per-tile count"]
