"""The ``gpu-tiler`` command line: the only place in gpu_tiler that prints.

Errors are one line naming the problem and the fix: exit code 2 for a bad path or parameter,
1 for a failure while computing; ``--debug`` shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """A problem with what was asked (path, parameter): exit code 2."""


# ---- helpers ----------------------------------------------------------------------------------


def _numbers(text, kind=float):
    """``"2"`` or ``"1,2,2"`` -> a number or a tuple of numbers."""
    try:
        values = tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number or a comma-separated list of numbers") from None
    return values[0] if len(values) == 1 else values


def _ints(text):
    return _numbers(text, int)


def _progress(args, label):
    """A progress callback (done, total) for save(), drawn with tqdm on a terminal, else silent."""
    if args.quiet or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    bar = tqdm(total=None, desc=label, unit="tile", leave=False)

    def update(done, total):
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


def _dask_progress(args, label):
    """A progress bar fed by dask's scheduler callbacks (tqdm's TqdmCallback) for work outside save()."""
    import contextlib

    if args.quiet or not sys.stderr.isatty():
        return contextlib.nullcontext()
    from tqdm.dask import TqdmCallback

    return TqdmCallback(desc=label, leave=False)


def _say(args, text):
    if not args.quiet:
        print(text)


def _open(path, what="input"):
    import gpu_tiler as gt

    if not Path(path).exists():
        raise UsageError(f"{what} '{path}' does not exist: give the path of a zarr store, TIFF or .npy file")
    return gt.open(path)


def _check_output(path, overwrite):
    if Path(path).exists() and not overwrite:
        raise UsageError(f"output '{path}' exists: pass --overwrite to replace it, or choose another path")


def _save(args, array, path, label, kind="image"):
    import gpu_tiler as gt

    _check_output(path, args.overwrite)
    start = time.perf_counter()
    fmt = "ome-zarr" if args.pyramid else args.out_format
    extra = {"pyramid_levels": args.pyramid, "kind": kind} if fmt == "ome-zarr" else {}
    gt.save(array, path, overwrite=args.overwrite, resume=args.resume, progress=_progress(args, label), format=fmt,
            **extra)
    seconds = time.perf_counter() - start
    _say(args, f"wrote {path}: {array.shape} {array.dtype} in {seconds:.1f} s")


def _claimed(args, argv):
    """Hold the output's claim for the whole command, so a second job into the same output is
    refused before it computes anything (labelling runs before the save that would claim it)."""
    import contextlib
    import shlex

    import gpu_tiler as gt

    output = getattr(args, "output", None)
    if output is None or args.command == "info":
        return contextlib.nullcontext()
    words = sys.argv[1:] if argv is None else list(argv)
    return gt.claim_output(output, wait=args.wait, job=shlex.join(["gpu-tiler", *map(str, words)]))


# ---- subcommands -----------------------------------------------------------------------------


def cmd_info(args):
    import platform

    import gpu_tiler as gt
    from gpu_tiler._backends import cupy_problem

    if args.cluster is not None or args.scheduler:
        from gpu_tiler._cluster import describe_workers
        from gpu_tiler._execute import active_client

        for line in describe_workers(active_client()):
            print(f"worker   {line}")
    if args.path:
        image = _open(args.path)
        print(f"{args.path}: shape {image.shape}, dtype {image.dtype}, chunks {image.chunksize}, "
              f"{image.nbytes / 2**20:.1f} MiB")
        meta = gt.metadata_of(image)
        if meta is not None:
            print(f"  {meta.describe()}")
        return 0
    print(f"gpu_tiler {gt.__version__} on Python {platform.python_version()}")
    for device in gt.devices():
        print(f"device   {device}")
    problem = cupy_problem()
    print(f"backends numpy: works; cupy: {'works' if problem is None else problem}")
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in ("numpy", "scipy", "scikit-image", "dask", "zarr", "tifffile", "cupy-cuda12x", "cupy-cuda13x",
                 "cucim-cu12", "cucim-cu13", "dask-cuda", "pyopencl"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    print(f"versions {', '.join(found)}")
    for line in _kernel_report():
        print(f"kernels  {line}")
    return 0


def _kernel_report():
    """Whether the shared kernel source compiles and runs on OpenCL and CUDA here."""
    from gpu_tiler._backends import cupy_problem
    from gpu_tiler._kernels import kernel_dir

    lines = []
    try:
        import pyopencl as cl

        ctx = cl.create_some_context(interactive=False)
        sources = sorted(p.name for p in kernel_dir().iterdir() if p.suffix in (".h", ".cl", ".cu"))
        program = '#include "portability.h"\nGT_KERNEL void gpu_tiler_probe(GT_GLOBAL gt_i32 *x) { x[GT_THREAD_ID()] += 1; }'
        cl.Program(ctx, program).build(options=["-I", str(kernel_dir())])
        lines.append(f"OpenCL: compiles and runs on {ctx.devices[0].name.strip()} ({', '.join(sources)})")
    except Exception as exc:  # report, don't fail: info is a diagnosis
        lines.append(f"OpenCL: not available ({type(exc).__name__}: {exc})")
    problem = cupy_problem()
    lines.append("CUDA: " + ("NVRTC available through CuPy" if problem is None else f"not available ({problem})"))
    return lines


FILTERS = {
    "gaussian": ("sigma", "order", "mode", "cval", "truncate"),
    "uniform": ("size", "mode", "cval"),
    "median": ("size", "mode", "cval"),
    "minimum": ("size", "mode", "cval"),
    "maximum": ("size", "mode", "cval"),
    "white_tophat": ("size", "mode", "cval"),
    "black_tophat": ("size", "mode", "cval"),
    "difference_of_gaussians": ("sigma_low", "sigma_high", "mode", "cval", "truncate"),
    "subtract_background": ("radius", "mode", "cval"),
    "threshold": ("value",),
}


def cmd_filter(args):
    import gpu_tiler as gt

    allowed = FILTERS[args.op]
    given = {k: v for k, v in vars(args).items() if k in {p for ps in FILTERS.values() for p in ps} and v is not None}
    extra = sorted(set(given) - set(allowed))
    if extra:
        raise UsageError(f"{args.op} does not take --{extra[0].replace('_', '-')}; it takes "
                         + ", ".join(f"--{p.replace('_', '-')}" for p in allowed))
    image = _open(args.input)
    params = {k: v for k, v in given.items() if k in allowed}
    if args.op == "threshold":
        value = params.get("value", "otsu")
        try:
            value = float(value)
        except ValueError:
            pass
        result = gt.threshold(image, value)
    else:
        required = {"gaussian": "sigma", "difference_of_gaussians": "sigma_low", "subtract_background": "radius"}
        need = required.get(args.op) or ("size" if "size" in allowed else None)
        if need and need not in params:
            raise UsageError(f"{args.op} needs --{need.replace('_', '-')}")
        result = getattr(gt, args.op)(image, **params)
    _say(args, f"{args.op} {params}: plan {gt.plan_of(result)}")
    _save(args, result, args.output, args.op)
    return 0


def cmd_label(args):
    import gpu_tiler as gt

    image = _open(args.input)
    _check_output(args.output, args.overwrite)
    start = time.perf_counter()
    with _dask_progress(args, "label: pass 1 and merge"):
        labels, count = gt.label(image, connectivity=args.connectivity)
    _say(args, f"found {count} objects (connectivity {args.connectivity}) in {time.perf_counter() - start:.1f} s")
    _save(args, labels, args.output, "label", kind="labels")
    return 0


def cmd_measure(args):
    import gpu_tiler as gt

    labels = _open(args.labels, "labels")
    intensity = _open(args.intensity, "intensity image") if args.intensity else None
    out = Path(args.output)
    _check_output(out, args.overwrite)
    table = gt.regionprops(labels, intensity)
    partial = out.with_name(f".{out.name}.partial")
    table.to_csv(partial, index=False)
    partial.replace(out)
    _say(args, f"wrote {out}: {len(table)} objects x {len(table.columns)} columns")
    return 0


def _function(spec):
    """``gaussian``/``median``/``uniform`` (SciPy) or ``module:function`` (your own)."""
    import scipy.ndimage as ndi

    builtin = {"gaussian": ndi.gaussian_filter, "median": ndi.median_filter, "uniform": ndi.uniform_filter,
               "maximum": ndi.maximum_filter, "minimum": ndi.minimum_filter}
    if spec in builtin:
        return builtin[spec]
    module, _, name = spec.partition(":")
    if not name:
        raise UsageError(f"--function {spec!r}: use one of {', '.join(builtin)} or module:function")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise UsageError(f"--function {spec!r} cannot be imported ({exc}); check the module and function names")


def cmd_margin(args):
    import gpu_tiler as gt
    from gpu_tiler.data import nuclei

    func = _function(args.function)
    image = _open(args.input) if args.input else nuclei((256, 256), chunks=256, seed=3)
    if image.size > 2**24:
        raise UsageError(f"input has {image.size} voxels; find_margin needs a sample that fits in memory "
                         "(crop it to at most 16 M voxels)")
    kwargs = {}
    for item in args.param or []:
        key, _, value = item.partition("=")
        if not _:
            raise UsageError(f"--param {item!r}: write name=value, e.g. --param sigma=2")
        kwargs[key] = _numbers(value)
    _check_output(args.output, args.overwrite)
    report = gt.find_margin(func, image, range(0, args.max_margin + 1), tolerance=args.tolerance,
                            plot=args.output, **kwargs)
    print(report)
    _say(args, f"wrote {args.output}")
    return 0 if report.margin is not None else EXIT_FAILURE


def cmd_preview(args):
    from gpu_tiler._preview import preview

    image = _open(args.input)
    labels = _open(args.labels, "labels") if args.labels else None
    _check_output(args.output, args.overwrite)
    path = preview(image, args.output, labels=labels, max_size=args.max_size, grid=not args.no_grid)
    _say(args, f"wrote {path}")
    return 0


def cmd_demo(args):
    from gpu_tiler._demo import run_demo

    return run_demo(Path(args.output), shape=(args.size, args.size), overwrite=True, say=lambda t: _say(args, t),
                    progress=lambda label: _progress(args, label))


class _distributed:
    """--cluster starts a local cluster, --scheduler connects to one; neither: run in this process."""

    def __init__(self, args):
        self.args, self.handle = args, None

    def __enter__(self):
        import gpu_tiler as gt

        if self.args.scheduler:
            from distributed import Client

            self.handle = Client(self.args.scheduler)
        elif self.args.cluster is not None:
            self.handle = gt.cluster(self.args.cluster or None)
        return self.handle

    def __exit__(self, *exc):
        if self.handle is not None:
            self.handle.close()
        return False


# ---- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=["auto", "numpy", "cupy"], help="array library (default: auto)")
    common.add_argument("--memory-budget", help="per-device budget: bytes, 512MiB, 2GB or a fraction like 0.25")
    common.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")
    common.add_argument("--resume", action="store_true", help="continue an output an earlier run left unfinished")
    common.add_argument("--wait", action="store_true",
                        help="when another job is writing the same output, wait for it instead of failing")
    common.add_argument("--format", choices=["zarr", "ome-zarr"], default="zarr", dest="out_format",
                        help="output format (ome-zarr: multiscale NGFF with axes and pixel sizes)")
    common.add_argument("--pyramid", type=int, metavar="LEVELS",
                        help="OME-Zarr pyramid levels (default: until the largest side is under 256)")
    common.add_argument("--cluster", nargs="?", const=0, type=int, metavar="N",
                        help="run on a local cluster (dask-cuda on GPUs, else N worker processes)")
    common.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask scheduler, e.g. tcp://host:8786")

    parser = argparse.ArgumentParser(prog="gpu-tiler", description="Process images larger than memory, tile by tile.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", parents=[common], help="devices, budgets, backends, versions, kernels; or an image")
    p.add_argument("path", nargs="?", help="an image to describe instead")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("filter", parents=[common], help="run a filter into a zarr store")
    p.add_argument("op", choices=sorted(FILTERS))
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--sigma", type=_numbers)
    p.add_argument("--order", type=_ints)
    p.add_argument("--size", type=_ints)
    p.add_argument("--mode", choices=["reflect", "mirror", "nearest", "wrap", "constant"])
    p.add_argument("--cval", type=float)
    p.add_argument("--truncate", type=float)
    p.add_argument("--sigma-low", type=_numbers)
    p.add_argument("--sigma-high", type=_numbers)
    p.add_argument("--radius", type=int)
    p.add_argument("--value", help="threshold: a number or 'otsu'")
    p.set_defaults(run=cmd_filter)

    p = sub.add_parser("label", parents=[common], help="connected components into a zarr store")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--connectivity", type=int, default=1)
    p.set_defaults(run=cmd_label)

    p = sub.add_parser("measure", parents=[common], help="region properties of a label image into a CSV table")
    p.add_argument("labels")
    p.add_argument("--intensity")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_measure)

    p = sub.add_parser("margin", parents=[common], help="how large must the margin be for a function?")
    p.add_argument("input", nargs="?", help="a small sample image (default: generated nuclei)")
    p.add_argument("--function", default="gaussian", help="gaussian, median, uniform, ... or module:function")
    p.add_argument("--param", action="append", help="name=value for the function, e.g. sigma=2 (repeatable)")
    p.add_argument("--max-margin", type=int, default=32)
    p.add_argument("--tolerance", type=float, default=0.0)
    p.add_argument("-o", "--output", default="margin.png")
    p.set_defaults(run=cmd_margin)

    p = sub.add_parser("preview", parents=[common], help="a PNG overview with the tile grid and labels")
    p.add_argument("input")
    p.add_argument("--labels")
    p.add_argument("--max-size", type=int, default=1024)
    p.add_argument("--no-grid", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_preview)

    p = sub.add_parser("demo", parents=[common], help="the main job on a generated image")
    p.add_argument("--size", type=int, default=8192, help="side of the generated square image")
    p.add_argument("-o", "--output", default="demo-output")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        import gpu_tiler as gt

        settings = {}
        if args.backend:
            settings["backend"] = args.backend
        if args.memory_budget:
            settings["memory_budget"] = args.memory_budget
        with gt.config(**settings), _claimed(args, argv), _distributed(args):
            return args.run(args)
    except KeyboardInterrupt:
        print("gpu-tiler: interrupted; no output was left half-written", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, unless --debug
        if getattr(args, "debug", False):
            raise
        usage = isinstance(exc, (UsageError, ValueError, FileNotFoundError, FileExistsError, TypeError))
        kind = "error" if usage else f"failed ({type(exc).__name__})"
        print(f"gpu-tiler: {kind}: {exc}", file=sys.stderr)
        return EXIT_USAGE if usage else EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
