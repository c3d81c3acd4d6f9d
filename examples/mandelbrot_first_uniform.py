"""Exercise (a): the first frame of a Mandelbrot zoom in which all pixels have the same value.

The frames form a lazy dask stack (``gpu_tiler.data.mandelbrot_stack``: 200000 frames of 512x512
uint16 escape counts, max_iter 256, frame i ``3.0 / 1.00025**i`` wide around
(-0.743645857047151, 0.13182592380533), one task per frame). Computing them all would take about
a day on a CPU, so the search reasons about what "uniform" means instead:

* A frame is uniform only if *every* pixel has the same value, so two pixels that differ prove it
  is not. A few sample pixels (the corners, the edge midpoints and the centre: a 3x3 grid) of
  thousands of frames at once, in one vectorised array, reject almost every frame.
* ``mandelbrot_pixels`` gives a sample pixel exactly the bits it has in the full frame (the same
  float64 operations on the same coordinates), so a rejection is a proof, not a guess: nothing is
  skipped. The frames whose samples agree go through denser grids (every 16th, then every 4th
  pixel and row, always with the last row and column), which reject exactly in the same way.
* The few frames left are computed in full, in frame order, from the lazy stack, and checked with
  min == max. The first that passes is the answer: every frame before it was proved non-uniform.

Batches of frames are dask tasks run by the threaded scheduler; the array library is the backend
``gpu_tiler.resolve_backend`` picks (``--backend``): NumPy on CPUs, CuPy on a CUDA GPU.

    python examples/mandelbrot_first_uniform.py          # the exercise: ~10 s on 2 CPU cores
    python examples/mandelbrot_first_uniform.py --size 32 --max-iter 64 --frames 50000

Exit status 0 when a uniform frame is found, 1 when none of the first ``--frames`` frames is.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import dask
import numpy as np

import gpu_tiler as gt
from gpu_tiler.data import (
    MANDELBROT_CENTER,
    mandelbrot_frame,
    mandelbrot_pixels,
    mandelbrot_scale,
    mandelbrot_stack,
)


def to_numpy(array):
    """A NumPy copy of a NumPy or CuPy array."""
    get = getattr(array, "get", None)
    return get() if callable(get) else np.asarray(array)


def sample_grids(size):
    """The pixel positions (one axis; the grid is their square) of each cheap rejection stage.

    Strides size/2, 16 and 4 (those that are smaller than the one before and at least 2): the first
    grid is the corners, edge midpoints and centre. The last row and column are always included.
    """
    grids, last = [], size
    for stride in (size // 2, 16, 4):
        if 2 <= stride < last:
            grids.append(np.array(sorted(set(range(0, size, stride)) | {size - 1})))
            last = stride
    return grids or [np.array(sorted({0, size // 2, size - 1}))]


def agreeing(frames, grid, params):
    """The frames (a NumPy array of frame numbers) whose pixels ``grid x grid`` all agree."""
    counts = mandelbrot_pixels(frames, grid, grid, **params)
    flat = counts.reshape(counts.shape[0], -1)
    agree = to_numpy((flat == flat[:, :1]).all(axis=1))
    return np.asarray(frames)[agree]


def split(items, size):
    return [items[k:k + size] for k in range(0, len(items), max(1, size))]


class Search:
    """The cascade: sample grids of growing density, then full frames; every stage in frame order.

    ``proved[k]`` collects the frames that stage k proved non-uniform (the last entry: frames
    computed in full), so the caller can check that they are exactly the frames before the answer.
    """

    def __init__(self, n_frames, *, size, max_iter, xp, batch, workers):
        self.params = dict(size=size, max_iter=max_iter, xp=xp)
        self.stack = mandelbrot_stack(n_frames, **self.params)  # lazy; only candidates computed
        self.grids = sample_grids(size)
        self.points = len(self.grids[0]) ** 2 * batch  # points per task, about the same per stage
        self.workers = workers
        self.proved = [[] for _ in range(len(self.grids) + 1)]
        self.full = 0  # frames computed in full

    def first_uniform(self, candidates, stage=0):
        """(frame, value) of the first uniform frame among ``candidates`` (sorted), or None.

        Stage ``stage`` rejects with its grid a chunk of candidates at a time (one dask task per
        ``per_task`` frames, the tasks run in parallel); the survivors of a chunk go through the
        next stages before the next chunk, so the search stops soon after the first uniform frame
        instead of pushing every later frame through the expensive stages.
        """
        if stage == len(self.grids):
            return self._full(candidates)
        grid = self.grids[stage]
        per_task = max(1, self.points // grid.size ** 2)
        for chunk in split(candidates, per_task * self.workers):
            tasks = [dask.delayed(agreeing)(part, grid, self.params) for part in split(chunk, per_task)]
            kept = np.concatenate(dask.compute(*tasks, scheduler="threads", num_workers=self.workers))
            self.proved[stage].append(np.setdiff1d(chunk, kept, assume_unique=True))
            found = self.first_uniform(kept, stage + 1)
            if found is not None:
                return found
        return None

    def _full(self, candidates):
        """Frames that every sample grid let through: in full from the lazy stack, a few at a time,
        in order; min == max decides."""
        for group in split(candidates, self.workers):
            # stack[i] per frame: a one-task graph, cheap to cut out of the 200000 (fancy indexing
            # stack[[i, j]] costs a good fraction of a second on that many chunks)
            frames = dask.compute(*(self.stack[int(i)] for i in group), scheduler="threads",
                                  num_workers=self.workers)
            self.full += len(group)
            lo = np.array([int(f.min()) for f in frames])
            hi = np.array([int(f.max()) for f in frames])
            uniform = np.flatnonzero(lo == hi)
            if uniform.size:
                first = uniform[0]
                self.proved[-1].append(group[:first])
                return int(group[first]), int(lo[first])
            self.proved[-1].append(group)
        return None

    def proved_before(self, answer):
        """Per stage, the frames before ``answer`` it proved non-uniform."""
        return [np.concatenate(p + [np.zeros(0, dtype=np.int64)]) for p in self.proved]


def find_first_uniform(n_frames, *, size=512, max_iter=256, xp=np, batch=4096, workers=None,
                       log=print):
    """The first frame (< n_frames) whose pixels are all equal.

    Returns ``(frame, value, search)``, frame and value None when there is none; ``search`` holds
    which frames each stage proved non-uniform and how many were computed in full. Raises if the
    frames proved non-uniform are not exactly all frames before the answer (nothing skipped).
    """
    workers = workers or (os.cpu_count() or 1)
    search = Search(n_frames, size=size, max_iter=max_iter, xp=xp, batch=batch, workers=workers)
    window = batch * workers  # frames per round of the first stage
    found = None
    for start in range(0, n_frames, window):
        end = min(start + window, n_frames)
        found = search.first_uniform(np.arange(start, end))
        if found is not None:
            break
        log(f"  frames {start:>6}..{end - 1:>6} (scale down to {mandelbrot_scale(end - 1):.3g}): "
            f"none uniform; {search.full} computed in full so far")
    frame, value = found if found is not None else (None, None)
    # the proof that nothing was skipped: the rejected frames are exactly 0 .. frame-1
    before = n_frames if frame is None else frame
    rejected = np.sort(np.concatenate(search.proved_before(before)))
    rejected = rejected[rejected < before]
    if not np.array_equal(rejected, np.arange(before)):
        raise AssertionError("the frames proved non-uniform are not exactly those before the answer")
    return frame, value, search


def verify(answer, value, *, size, max_iter, xp, grids, extra=2):
    """Check the answer independently of the search: frame ``answer`` computed directly (not via the
    stack) is uniform with ``value``; the frames just before it, computed in full, are not; and
    their sample pixels from ``mandelbrot_pixels`` are bit for bit those of the full frames (what
    makes the cheap rejection exact). Returns a list of (ok, message)."""
    params = dict(size=size, max_iter=max_iter, xp=xp)
    checks = []
    frame = to_numpy(mandelbrot_frame(answer, **params))
    ok = frame.min() == frame.max() == value
    checks.append((ok, f"frame {answer} computed directly: all {frame.size} pixels "
                       f"{'equal ' + str(value) if ok else 'NOT equal'}"))
    for i in range(max(0, answer - extra), answer):
        full = to_numpy(mandelbrot_frame(i, **params))
        checks.append((full.min() != full.max(),
                       f"frame {i} computed in full: values {full.min()}..{full.max()}, not uniform"))
        for grid in grids:
            samples = to_numpy(mandelbrot_pixels([i], grid, grid, **params))[0]
            same = np.array_equal(samples, full[np.ix_(grid, grid)])
            checks.append((same, f"frame {i}: its {len(grid)}x{len(grid)} sample pixels equal the full "
                                 f"frame's{'' if same else ' -- MISMATCH'}"))
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=200000, help="number of frames (default 200000)")
    parser.add_argument("--size", type=int, default=512, help="frame width and height (default 512)")
    parser.add_argument("--max-iter", type=int, default=256, help="iterations (default 256)")
    parser.add_argument("--backend", choices=["auto", "numpy", "cupy"], default=None,
                        help="array library (default: the configured one, 'auto')")
    parser.add_argument("--batch", type=int, default=None,
                        help="frames per dask task in the first stage (default 4096 CPU, 65536 GPU)")
    parser.add_argument("--no-verify", action="store_true", help="skip the independent check")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.size < 2 or not 1 <= args.max_iter <= 65535:
        parser.error("need --frames >= 1, --size >= 2 and --max-iter in 1..65535")

    try:
        backend = gt.resolve_backend(backend=args.backend)
    except (RuntimeError, ValueError) as exc:  # e.g. --backend cupy where no GPU works
        parser.error(str(exc))
    xp = backend.xp
    gpu = backend.name != "numpy"
    batch = args.batch or (65536 if gpu else 4096)
    workers = 1 if gpu else (os.cpu_count() or 1)
    print(f"Mandelbrot zoom: {args.frames} frames of {args.size}x{args.size}, max_iter {args.max_iter}, "
          f"centre {MANDELBROT_CENTER}, scale 3.0 / 1.00025**i")
    print(f"backend {backend.name}, {workers} thread(s), {batch} frames per first-stage task")

    start = time.perf_counter()
    answer, value, search = find_first_uniform(args.frames, size=args.size, max_iter=args.max_iter,
                                               xp=xp, batch=batch, workers=workers)
    seconds = time.perf_counter() - start
    before = answer if answer is not None else args.frames
    proved = [int((p < before).sum()) for p in search.proved_before(before)]
    print(f"frames 0..{before - 1}, each proved non-uniform (together exactly these, none skipped):")
    for grid, count in zip(search.grids, proved):
        print(f"  {count:>7} by {len(grid)}x{len(grid)} sample pixels that differ")
    print(f"  {proved[-1]:>7} computed in full")
    print(f"{search.full} frames computed in full in all, {seconds:.1f} s")
    if answer is None:
        print(f"no frame among the first {args.frames} is uniform")
        return 1
    print(f"first uniform frame: {answer}  scale {mandelbrot_scale(answer):.6g}  "
          f"(3.0 / 1.00025**{answer})  all pixels {value}")
    if not args.no_verify:
        checks = verify(answer, value, size=args.size, max_iter=args.max_iter, xp=xp,
                        grids=sample_grids(args.size))
        for ok, message in checks:
            print(f"  check {'ok ' if ok else 'FAILED'} {message}")
        if not all(ok for ok, _ in checks):
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
