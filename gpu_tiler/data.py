"""Generated images: lazy, deterministic, the same voxels for any chunking."""
from __future__ import annotations

import dask.array as da
import numpy as np


def _hash_noise(coords, seed):
    """Uniform noise in [0, 1) from global voxel coordinates (independent of chunking)."""
    h = np.full(coords[0].shape, (seed * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFF, dtype=np.uint64)
    for axis, c in enumerate(coords):
        h ^= (c.astype(np.uint64) + np.uint64(axis * 0x632BE5AB)) * np.uint64(0x85EBCA6B)
        h = (h ^ (h >> np.uint64(13))) * np.uint64(0xC2B2AE35)
        h &= np.uint64(0xFFFFFFFF)
    h ^= h >> np.uint64(16)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(2**24)


def _nuclei_block(centers, radii, brightness, noise, seed, dtype, block_info=None):
    info = block_info[None]
    location = info["array-location"]
    out = np.zeros(info["chunk-shape"], dtype=np.float32)
    for c, r, b in zip(centers, radii, brightness):
        # the nucleus' bounding box inside this chunk, in chunk coordinates
        box = [(max(lo, int(np.floor(ci - r))), min(hi, int(np.ceil(ci + r)) + 1)) for ci, (lo, hi) in zip(c, location)]
        if any(start >= stop for start, stop in box):
            continue
        grids = np.meshgrid(*(np.arange(start, stop) for start, stop in box), indexing="ij", sparse=True)
        d2 = sum(((g - ci) / r) ** 2 for g, ci in zip(grids, c))
        # a smooth dome; plain arithmetic (no exp) so every chunking gives the same bits
        region = tuple(slice(start - lo, stop - lo) for (start, stop), (lo, _) in zip(box, location))
        out[region] += (b * np.clip(1.0 - d2 * d2, 0.0, 1.0)).astype(np.float32)
    dense = np.meshgrid(*(np.arange(a, b) for a, b in location), indexing="ij")
    out += noise * _hash_noise(dense, seed)
    if np.issubdtype(dtype, np.integer):
        out = np.clip(out * 1000, 0, np.iinfo(dtype).max)
    return out.astype(dtype)


def nuclei(shape=(2048, 2048), *, density=3.0, radius=12.0, noise=0.2, seed=0, dtype=np.float32, chunks=512):
    """A lazy fluorescence-like image of blob-shaped 'nuclei' on a noisy background.

    Any number of axes. Nuclei centres, radii and brightness come from ``seed``; each chunk is
    computed from the nuclei near it, so the image is the same for every ``chunks``. ``density``
    scales the number of nuclei (1.0: about one per (8 * radius)^ndim voxels). Integer ``dtype``
    scales intensities by 1000.
    """
    shape = tuple(int(n) for n in shape)
    ndim = len(shape)
    rng = np.random.default_rng(seed)
    count = max(1, int(density * np.prod(shape) / (8 * radius) ** ndim))
    centers = rng.uniform(0, 1, size=(count, ndim)) * np.array(shape)
    radii = rng.uniform(0.6, 1.4, size=count) * radius
    brightness = rng.uniform(0.5, 1.0, size=count)
    template = da.empty(shape, chunks=chunks, dtype=dtype)
    return da.map_blocks(
        _nuclei_block, centers, radii, brightness, float(noise), int(seed), np.dtype(dtype),
        chunks=template.chunks, dtype=dtype, meta=np.empty((0,) * ndim, dtype=dtype),
        name=f"gpu_tiler-nuclei-{seed}-{'x'.join(map(str, shape))}-{density}-{radius}-{noise}-{np.dtype(dtype)}",
    )


# --------------------------------------------------------------------------------------------
# Mandelbrot zoom frames (the lecture's exercise (a); see examples/mandelbrot_first_uniform.py)
#
# Convention, shared by every function below so that the same pixel always gets the same bits:
#   scale(i) = scale0 / zoom**i          (Python floats: one C ``pow`` and one division)
#   step(i)  = scale(i) / size           (the distance between neighbouring pixels)
#   x(col)   = cx + (col - size/2) * step(i)     (real part; col 0 is the left edge)
#   y(row)   = cy + (row - size/2) * step(i)     (imaginary part; row 0 has the smallest y,
#                                                 so show frames with origin="lower")
# The frame spans [c - scale/2, c + scale/2) on both axes and pixel (size//2, size//2) is the
# centre itself when ``size`` is even. With z_0 = 0 and z_n = z_{n-1}^2 + c (float64), a pixel's
# count is the first n in 1..max_iter with |z_n|^2 = x_n^2 + y_n^2 > 4, or max_iter when there is
# none (so "escapes at iteration max_iter" and "never escapes" share the value max_iter).
# Every step is one correctly rounded float64 operation (z_re <- z_re^2 - z_im^2 + c_re and
# z_im <- (z_re + z_re) * z_im + c_im), never NumPy's complex multiply, which may use fused
# multiply-adds on some CPUs and so round differently; the counts are thus the same on every
# machine, on NumPy and on CuPy. That matters for deep frames: from about frame 126000 of the
# default zoom the pixel spacing is below the float64 resolution at the centre (1.1e-16 in x),
# neighbouring pixels round to the same point, and the picture is decided by rounding.
# --------------------------------------------------------------------------------------------

MANDELBROT_CENTER = (-0.743645857047151, 0.13182592380533)


def mandelbrot_scale(i, *, zoom=1.00025, scale0=3.0):
    """The width of frame ``i`` in the complex plane: ``scale0 / zoom**i`` (a Python float)."""
    return float(scale0) / float(zoom) ** int(i)


def _escape_counts(cr, ci, max_iter, xp, check_every=8):
    """Escape counts (uint16, 1..max_iter) of the points ``cr + i*ci`` (1-D float64 arrays).

    Escaped points are dropped from the working arrays (every ``check_every`` iterations, when at
    least 1/8 of them have escaped), so the work shrinks as the points escape. Each point's
    arithmetic is the same whatever other points it is computed with, so its count is too.
    """
    n = cr.shape[0]
    out = xp.full(n, max_iter, dtype=xp.uint16)
    idx = xp.arange(n)
    zr = xp.zeros(n, dtype=xp.float64)
    zi = xp.zeros(n, dtype=xp.float64)
    zr2 = xp.zeros(n, dtype=xp.float64)
    zi2 = xp.zeros(n, dtype=xp.float64)
    counts = xp.zeros(n, dtype=xp.uint16)  # 0: not escaped yet
    for it in range(1, max_iter + 1):
        zi = (zr + zr) * zi + ci  # z <- z^2 + c, using zr^2 and zi^2 from the last step
        zr = zr2 - zi2 + cr
        zr2 = zr * zr
        zi2 = zi * zi
        counts[((zr2 + zi2) > 4.0) & (counts == 0)] = it
        if it % check_every == 0 and it < max_iter:
            done = counts != 0
            n_done = int(done.sum())  # the one host sync, every check_every iterations
            if n_done * 8 >= idx.shape[0]:
                out[idx[done]] = counts[done]
                keep = ~done
                idx, cr, ci, zr, zi, zr2, zi2, counts = (
                    a[keep] for a in (idx, cr, ci, zr, zi, zr2, zi2, counts))
                if idx.shape[0] == 0:
                    return out
    done = counts != 0
    out[idx[done]] = counts[done]
    return out


def mandelbrot_pixels(frames, rows, cols, *, size=512, max_iter=256, center=MANDELBROT_CENTER,
                      zoom=1.00025, scale0=3.0, xp=np):
    """Escape counts of the pixels ``rows x cols`` of each frame in ``frames``, all in one go.

    Returns a ``(len(frames), len(rows), len(cols))`` uint16 array of ``xp`` (NumPy or CuPy).
    The values are bit-for-bit those of the same pixels in :func:`mandelbrot_frame` (which is this
    function with every row and column of one frame): each pixel's coordinates and iterations are
    the same float64 operations whichever other pixels or frames are computed with it. That lets
    a few sample pixels of thousands of frames stand exactly for those pixels of the full frames.
    """
    xp = np if xp is None else xp
    if not 1 <= int(max_iter) <= np.iinfo(np.uint16).max:
        raise ValueError(f"max_iter must be in 1..65535 for uint16 counts, got {max_iter}")
    frames = [int(i) for i in np.atleast_1d(np.asarray(frames)).ravel()]
    steps = np.array([mandelbrot_scale(i, zoom=zoom, scale0=scale0) / size for i in frames],
                     dtype=np.float64)
    half = size / 2
    xoff = np.asarray(cols, dtype=np.float64) - half  # exact: integers minus an integer or a half
    yoff = np.asarray(rows, dtype=np.float64) - half
    steps, xoff, yoff = (xp.asarray(a) for a in (steps, xoff, yoff))
    cx, cy = float(center[0]), float(center[1])
    shape = (len(frames), yoff.shape[0], xoff.shape[0])
    cr = cx + xoff[None, None, :] * steps[:, None, None]
    ci = cy + yoff[None, :, None] * steps[:, None, None]
    cr = xp.ascontiguousarray(xp.broadcast_to(cr, shape)).ravel()
    ci = xp.ascontiguousarray(xp.broadcast_to(ci, shape)).ravel()
    if xp is np:
        with np.errstate(over="ignore", invalid="ignore"):  # escaped points overflow harmlessly
            counts = _escape_counts(cr, ci, int(max_iter), xp)
    else:
        counts = _escape_counts(cr, ci, int(max_iter), xp)
    return counts.reshape(shape)


def mandelbrot_frame(i, *, size=512, max_iter=256, center=MANDELBROT_CENTER, zoom=1.00025,
                     scale0=3.0, xp=np):
    """Frame ``i`` of a Mandelbrot zoom: a ``(size, size)`` uint16 array of escape counts.

    The frame is centred on ``center`` (cx, cy) and ``mandelbrot_scale(i) = scale0 / zoom**i``
    wide; pixel (row, col) is the point ``x = cx + (col - size/2) * scale/size``,
    ``y = cy + (row - size/2) * scale/size`` (row 0 has the smallest imaginary part). The count is
    the first iteration n (1..max_iter) of z <- z^2 + c from z = 0 at which |z|^2 > 4, and
    ``max_iter`` for points that do not escape within ``max_iter`` iterations. Vectorised with
    ``xp`` (``numpy`` or ``cupy``; the result is an array of that library); escaped points are
    masked out of the iteration so the work shrinks as they escape.
    """
    pixels = np.arange(int(size))
    return mandelbrot_pixels([i], pixels, pixels, size=size, max_iter=max_iter, center=center,
                             zoom=zoom, scale0=scale0, xp=xp)[0]


def _mandelbrot_block(size, max_iter, center, zoom, scale0, xp, block_id=None):
    # one frame per block, so the block's index along axis 0 is the frame number; block_id is
    # cheap where block_info would cost seconds to prepare for 200000 blocks
    return mandelbrot_pixels([block_id[0]], np.arange(size), np.arange(size), size=size,
                             max_iter=max_iter, center=center, zoom=zoom, scale0=scale0, xp=xp)


def mandelbrot_stack(n_frames=200000, *, size=512, max_iter=256, center=MANDELBROT_CENTER,
                     zoom=1.00025, scale0=3.0, xp=np):
    """A lazy ``(n_frames, size, size)`` uint16 dask array: frame i is :func:`mandelbrot_frame`.

    One task per frame (chunks of one frame), so slicing a few frames out computes only those.
    Built with ``da.map_blocks`` rather than ``da.stack`` of ``da.from_delayed`` per frame: the
    graph is the same (one task per frame, each a call computing one frame), but ``da.stack`` of
    200000 delayed frames takes about a minute to build (one graph layer per frame), while
    ``map_blocks`` builds one layer in well under a second. Chunks are ``xp`` arrays (NumPy
    or CuPy).
    """
    xp = np if xp is None else xp
    n_frames, size = int(n_frames), int(size)
    center = (float(center[0]), float(center[1]))
    name = (f"gpu_tiler-mandelbrot-{n_frames}-{size}-{int(max_iter)}-{center[0]!r}-{center[1]!r}-"
            f"{float(zoom)!r}-{float(scale0)!r}-{xp.__name__}")
    return da.map_blocks(
        _mandelbrot_block, size, int(max_iter), center, float(zoom), float(scale0), xp,
        chunks=((1,) * n_frames, (size,), (size,)), dtype=np.uint16,
        meta=xp.empty((0, 0, 0), dtype=xp.uint16), name=name,
    )
