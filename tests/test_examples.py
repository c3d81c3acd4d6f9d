"""The examples run, at a small size, and say what they found."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_example(name, *args, cwd):
    return subprocess.run([sys.executable, str(ROOT / "examples" / name), *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


def test_margin_example_finds_the_gaussian_radius_and_the_users_reach(tmp_path):
    result = run_example("margin.py", "--out", tmp_path, "--size", "96", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "found 10" in result.stdout and "found 14" in result.stdout
    assert (tmp_path / "gaussian.png").is_file() and (tmp_path / "my_function.png").is_file()
