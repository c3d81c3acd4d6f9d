"""The ``gpu-tiler`` command line: the only place in gpu_tiler that prints.

Errors are one line naming the problem and the fix: exit code 2 for a problem with what was asked
(a bad path or parameter, an existing output, a refused resume), found before computing; 1 for a
failure while computing. ``--debug`` shows the traceback instead.

``gpu-tiler filter OP`` has one subcommand per public filter of :mod:`gpu_tiler.filters`, its options
read from the function's signature and its help from the docstring: a filter added there is on the
command line with no edit here.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

import gpu_tiler as gt
from gpu_tiler import filters
from gpu_tiler._backends import cupy_problem
from gpu_tiler._config import BACKENDS
from gpu_tiler._demo import run_demo
from gpu_tiler._engine.materialise import explain
from gpu_tiler._execution.bounded import PassLog, active_client
from gpu_tiler._execution import host_memory
from gpu_tiler._execution.cluster import describe_workers
from gpu_tiler._io.sinks import check_label_output
from gpu_tiler._planning.halo import MODES
from gpu_tiler._registry import info_of_name
from gpu_tiler._tools.preview import preview
from gpu_tiler.data import nuclei
from gpu_tiler.labels._merge import MERGERS, get_merger

EXIT_USAGE = 2
EXIT_FAILURE = 1


class UsageError(Exception):
    """A problem with what was asked (path, parameter): exit code 2."""


# ---- exit codes -------------------------------------------------------------------------------

#: What was asked cannot be done, whenever it is found: exit 2.
_ALWAYS_USAGE = (UsageError, FileExistsError, gt.ResumeRefusedError)
#: Another job holds the output, or an input changed under this one: exit 1, whenever it is found.
_ALWAYS_FAILURE = (gt.OutputInUseError, gt.InputChangedError)
#: Raised while checking the arguments and building the lazy computation: a bad path or parameter.
_USAGE_BEFORE_COMPUTING = (ValueError, TypeError, FileNotFoundError)


def _start_computing(args):
    """Mark the rest of a command as the computation: what was asked is checked and the lazy result
    built, so an error raised from here on (a ValueError inside a tile function, say) is a failure."""
    args.computing = True


def exit_code(exc, computing: bool) -> int:
    """2 for a problem with what was asked, 1 for a failure (see the module's docstring)."""
    if isinstance(exc, _ALWAYS_USAGE):
        return EXIT_USAGE
    if isinstance(exc, _ALWAYS_FAILURE) or computing:
        return EXIT_FAILURE
    return EXIT_USAGE if isinstance(exc, _USAGE_BEFORE_COMPUTING) else EXIT_FAILURE


# ---- helpers ----------------------------------------------------------------------------------


def _numbers(text, kind=float):
    """``"2"`` or ``"1,2,2"`` -> a number or a tuple of numbers."""
    try:
        values = tuple(kind(v) for v in str(text).split(","))
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise argparse.ArgumentTypeError(f"{text!r} is not a {what} or a comma-separated list of {what}s") from None
    return values[0] if len(values) == 1 else values


def _ints(text):
    return _numbers(text, int)


def _value(text):
    """A whole number, a number, a comma-separated list of either, or else the text as given
    (``"3"`` -> 3, ``"1,2.5"`` -> (1.0, 2.5), ``"otsu"`` -> ``"otsu"``)."""
    for kind in (int, float):
        try:
            return _numbers(text, kind)
        except argparse.ArgumentTypeError:
            pass
    return text


def _modes(text):
    """A boundary mode, or one per axis separated by commas (``nearest`` or ``reflect,nearest``)."""
    modes = tuple(text.split(","))
    for mode in modes:
        if mode not in MODES:
            raise argparse.ArgumentTypeError(f"{mode!r} is not a boundary mode; use one of {', '.join(MODES)} "
                                             "(or one per axis separated by commas)")
    return modes[0] if len(modes) == 1 else modes

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
    if args.quiet or not sys.stderr.isatty():
        return contextlib.nullcontext()
    from tqdm.dask import TqdmCallback

    return TqdmCallback(desc=label, leave=False)


def _say(args, text):
    if not args.quiet:
        print(text)


def _open(path, what="input"):
    if not Path(path).exists():
        raise UsageError(f"{what} '{path}' does not exist: give the path of a zarr store, TIFF or .npy file")
    return gt.open(path)


def _check_output(path, overwrite):
    if Path(path).exists() and not overwrite:
        raise UsageError(f"output '{path}' exists: pass --overwrite to replace it, or choose another path")


#: NGFF versions a new OME-Zarr store can have, and the zarr format each lives on
NGFF_ZARR_FORMAT = {"0.4": 2, "0.5": 3}


def _save(args, array, path, label, kind="image"):
    start = time.perf_counter()
    fmt = "ome-zarr" if args.pyramid or args.ngff else args.out_format
    extra = {"pyramid_levels": args.pyramid, "kind": kind} if fmt == "ome-zarr" else {}
    if args.ngff:  # a label image inside an image follows the image's version; save refuses another one
        extra["zarr_format"] = NGFF_ZARR_FORMAT[args.ngff]
    gt.save(array, path, overwrite=args.overwrite, resume=args.resume, progress=_progress(args, label), format=fmt,
            **extra)
    seconds = time.perf_counter() - start
    _say(args, f"wrote {path}: {array.shape} {array.dtype} in {seconds:.1f} s")


def _claimed(args, argv):
    """Hold the output's claim for the whole command, so a second job into the same output is
    refused before it computes anything (labelling runs before the save that would claim it)."""
    output = getattr(args, "output", None)
    if output is None or args.command == "info":
        return contextlib.nullcontext()
    words = sys.argv[1:] if argv is None else list(argv)
    return gt.claim_output(output, wait=args.wait, job=shlex.join(["gpu-tiler", *map(str, words)]))


# ---- filters, derived from gpu_tiler.filters --------------------------------------------------

#: Filter parameters that are not options: the CLI gives the budget (``--memory-budget``), runs one
#: filter per command (nothing to ``fuse``), writes to the output path (not an ``output=`` target), and
#: cannot take an array (``footprint``, ``structure``, ``weights``, ``mask``) or a Python ``function``.
NOT_OPTIONS = ("budget", "fuse", "footprint", "structure", "weights", "mask", "output", "function")


def filter_functions() -> dict:
    """The public filters, by name: each function in ``gpu_tiler.filters.__all__`` that takes an
    ``image`` first, except the threshold methods (such as ``threshold_otsu``), which give a number."""
    methods = list(filters.THRESHOLD_METHODS.values())
    found = {}
    for name in filters.__all__:
        func = getattr(filters, name, None)
        if not inspect.isfunction(func) or any(func is m for m in methods):
            continue
        parameters = _signature(func).parameters
        needs_array = any(p.default is p.empty and n in NOT_OPTIONS for n, p in parameters.items())
        if next(iter(parameters), None) == "image" and not needs_array:  # convolve needs weights: not here
            found[name] = func
    return found


def _signature(func):
    try:
        return inspect.signature(func, eval_str=True)
    except (NameError, SyntaxError, TypeError):  # an annotation that cannot be evaluated here: use its text
        return inspect.signature(func)


def _parameter_help(doc: str) -> dict:
    """``name -> first line of its description`` from a docstring's numpydoc ``Parameters`` section or
    Sphinx ``:param name:`` fields (empty when it has neither)."""
    found = {m.group(1): m.group(2).strip() for m in re.finditer(r"^\s*:param\s+(?:\w+\s+)?(\w+):(.*)$", doc, re.M)}
    lines = doc.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            name = None
            for entry in lines[i + 2:]:
                if entry.strip() and set(entry.strip()) == {"-"}:  # the next section's underline
                    break
                if entry and not entry[0].isspace():
                    name = entry.split(":")[0].strip()
                elif name and entry.strip() and name not in found:
                    found[name] = entry.strip()
            break
    return found


def _option_kind(param):
    """How an option's text becomes the parameter's value, and what to call it in the help: from the
    annotation, else the default's type; a str default or none at all takes a number or text."""
    if param.name == "mode":
        return _modes, "MODE", f"{', '.join(MODES)}, or one per axis, e.g. reflect,nearest"
    empty = inspect.Parameter.empty
    annotation = param.annotation if isinstance(param.annotation, type) and param.annotation is not empty else None
    kind = annotation or (None if param.default is None or param.default is empty else type(param.default))
    if kind is bool:
        return None, None, None
    if kind is int:
        return _ints, "N", "a whole number, or one per axis, e.g. 3 or 1,3,3"
    if kind is float:
        return _numbers, "X", "a number, or one per axis, e.g. 2 or 1,2,2"
    if annotation is str:
        return str, "TEXT", None
    return _value, "VALUE", "a number, one per axis (1,2,2) or a name"


class _Parameter(argparse.Action):
    """Collects a filter's options into ``args.params`` (only those given: the function's defaults hold
    for the rest), apart from the command's own arguments."""

    def __call__(self, parser, namespace, values, option_string=None):
        params = dict(getattr(namespace, "params", None) or {})
        params[self.dest] = self.const if self.nargs == 0 else values
        namespace.params = params


def _option_names(name: str) -> list[str]:
    """``--sigma-low`` for ``sigma_low``; a parameter of alternatives (``value_or_method``) is also
    called by its first (``--value``)."""
    names = ["--" + name.replace("_", "-")]
    if "_or_" in name:
        names.append("--" + name.split("_or_")[0].replace("_", "-"))
    return names


def _add_filter(ops, common, name, func):
    """One ``gpu-tiler filter NAME`` subcommand: input, output and an option per parameter of ``func``."""
    doc = inspect.getdoc(func) or name
    described = _parameter_help(doc)
    summary = " ".join(doc.split("\n\n")[0].split())  # the first paragraph, on one line
    parser = ops.add_parser(name, parents=[common], help=summary.replace("%", "%%"), description=doc,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help="the image: a zarr store, OME-Zarr, TIFF or .npy file")
    parser.add_argument("output", help="the zarr store to write")
    group = parser.add_argument_group(f"{name}'s parameters (from gpu_tiler.filters.{name})")
    options, required = [], []
    for param in list(_signature(func).parameters.values())[1:]:
        if param.name in NOT_OPTIONS or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        convert, metavar, form = _option_kind(param)
        given = param.default is inspect.Parameter.empty
        if given:
            required.append(param.name)
        text = "; ".join(t for t in (described.get(param.name), form) if t)
        text += " (required)" if given else " (optional)" if param.default is None else f" (default: {param.default})"
        names = _option_names(param.name)
        if convert is None:  # a switch: --name turns a False default on, --no-name a True one off
            names = names if not param.default else ["--no-" + n[2:] for n in names]
            group.add_argument(*names, dest=param.name, action=_Parameter, nargs=0, const=not param.default,
                                default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        else:
            group.add_argument(*names, dest=param.name, action=_Parameter, type=convert, metavar=metavar,
                                default=argparse.SUPPRESS, help=text.replace("%", "%%"))
        options.append(names[0])
    parser.set_defaults(run=cmd_filter, function=func, options=tuple(options), required=tuple(required), params=None,
                        common_options=tuple(common._option_string_actions))


def _unknown_options(parser, args, extra):
    """Arguments no parser took: for a filter, one line naming the options it does take."""
    if getattr(args, "command", None) == "filter" and extra[0].startswith("-"):
        flag = extra[0].split("=")[0]
        if flag in args.common_options:  # given before the filter's name, where only --help is known
            raise UsageError(f"{flag} goes after the filter's name: gpu-tiler filter {args.op} INPUT OUTPUT {flag} ...")
        takes = ", ".join(args.options) or "no options"
        raise UsageError(f"{args.op} does not take {flag}; it takes {takes}")
    parser.error(f"unrecognized arguments: {' '.join(extra)}")


# ---- subcommands -----------------------------------------------------------------------------


def cmd_info(args):
    import platform
    from importlib.metadata import PackageNotFoundError, version

    image = _open(args.path) if args.path else None
    _start_computing(args)
    if args.cluster is not None or args.scheduler:
        for line in describe_workers(active_client()):
            print(f"worker   {line}")
    if image is not None:
        print(f"{args.path}: shape {image.shape}, dtype {image.dtype}, chunks {image.chunksize}, "
              f"{image.nbytes / 2**20:.1f} MiB")
        meta = gt.metadata_of(image)
        if meta is not None:
            print(f"  {meta.describe()}")
        return 0
    print(f"gpu_tiler {gt.__version__} on Python {platform.python_version()}")
    for device in gt.devices():
        print(f"device   {device}")
    print(f"memory   host allocator: {host_memory.state} (docs/pipelines.md, \"Host memory\")")
    problem = cupy_problem()
    print(f"backends numpy: works; cupy: {'works' if problem is None else problem}")
    found = []
    for name in ("numpy", "scipy", "scikit-image", "dask", "zarr", "tifffile", "cupy-cuda12x", "cupy-cuda13x",
                 "cucim-cu12", "cucim-cu13", "dask-cuda", "pyopencl"):
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            pass
    print(f"versions {', '.join(found)}")
    for line in kernel_report():
        print(f"kernels  {line}")
    return 0


#: How ``info`` names the union-find mergers that run a kernel (``numpy`` is the host reference).
MERGER_NAMES = {"cuda": "CUDA", "opencl": "OpenCL", "c": "C (host CPU threads)"}
#: A tiny union-find: nodes 0-1-2 and 3-4 joined, 5 alone; every merger must give these roots.
_PROBE = (np.array([1, 2, 4]), np.array([0, 1, 3]), 6)


def kernel_report() -> list[str]:
    """Whether each kernel merger runs here: it is asked to merge a tiny input, and "runs" only when
    it returned the roots NumPy's union-find gives. A merger that cannot start says why."""
    first, second, n_nodes = _PROBE
    expected = np.asarray(get_merger("numpy").roots(first, second, n_nodes))
    lines = []
    for name in MERGERS:
        if name == "numpy":
            continue
        label = MERGER_NAMES.get(name, name)
        problem = cupy_problem() if name == "cuda" else None
        if problem is not None:
            lines.append(f"{label}: not available ({problem})")
            continue
        try:
            merger = get_merger(name)
            roots = merger.roots(first, second, n_nodes)
            roots = np.asarray(roots.get() if hasattr(roots, "get") else roots)
        except Exception as exc:  # report, don't fail: info is a diagnosis
            lines.append(f"{label}: not available ({type(exc).__name__}: {exc})")
            continue
        used = getattr(merger, "name", name)
        if used != name:
            lines.append(f"{label}: not available; the {used} merger stands in")
        elif np.array_equal(roots, expected):
            lines.append(f"{label}: the union-find kernel runs{_where(name)} (a {n_nodes}-node merge equals NumPy's)")
        else:
            lines.append(f"{label}: the union-find kernel ran{_where(name)} but gave roots {roots.tolist()}, "
                         f"not {expected.tolist()}")
    return lines


def _where(name):
    """`` on DEVICE`` for the OpenCL merger (pyopencl picks the device as the merger does), else ``""``."""
    if name != "opencl":
        return ""
    try:
        import pyopencl as cl

        return f" on {cl.create_some_context(interactive=False).devices[0].name.strip()}"
    except Exception:  # the merger ran, so this does not fail; the name is a nicety
        return ""


def cmd_filter(args):
    params = args.params or {}
    for name in args.required:
        if name not in params:
            raise UsageError(f"{args.op} needs {_option_names(name)[0]}; see gpu-tiler filter {args.op} --help")
    image = _open(args.input)
    _check_output(args.output, args.overwrite)
    result = args.function(image, **params)
    _say(args, f"{args.op} {params}: plan {gt.plan_of(result)}")
    _start_computing(args)
    _save(args, result, args.output, args.op)
    return 0


def cmd_label(args):
    image = _open(args.input)
    _check_output(args.output, args.overwrite)
    if args.pyramid or args.ngff or args.out_format == "ome-zarr":  # into IMAGE/labels/NAME: IMAGE's version

        try:
            check_label_output(args.output, NGFF_ZARR_FORMAT.get(args.ngff))
        except ValueError as exc:
            raise UsageError(str(exc).replace("zarr_format=3", "--ngff 0.5").replace("zarr_format=2", "--ngff 0.4")
                             .replace("leave zarr_format out", "leave --ngff out")) from None
    _start_computing(args)
    start = time.perf_counter()
    with _dask_progress(args, "label: pass 1 and merge"):
        labels, count = gt.label(image, connectivity=args.connectivity)
    _say(args, f"found {count} objects (connectivity {args.connectivity}) in {time.perf_counter() - start:.1f} s")
    _save(args, labels, args.output, "label", kind="labels")
    return 0


def _names(text: str) -> list[str]:
    """A comma-separated list of names (``--properties label,area``), blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def cmd_measure(args):
    labels = _open(args.labels, "labels")
    intensity = _open(args.intensity, "intensity image") if args.intensity else None
    out = Path(args.output)
    _check_output(out, args.overwrite)
    _start_computing(args)
    properties = args.properties
    if not properties:  # the command line's default: shape, and intensity statistics when there are intensities
        properties = ["label", "area", "centroid", "bbox"] + (
            ["intensity_mean", "intensity_min", "intensity_max"] if intensity is not None else [])
    table = gt.regionprops(labels, intensity, properties=properties)
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


def _function_params(func, spec, items):
    """``--param name=value`` items as keyword arguments that ``func(tile, **kwargs)`` accepts."""
    kwargs = {}
    for item in items:
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise UsageError(f"--param {item!r}: write name=value, e.g. --param sigma=2")
        kwargs[key] = _value(value)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):  # no signature to check against (a builtin): the call will tell
        return kwargs
    try:
        signature.bind(None, **kwargs)
    except TypeError as exc:
        raise UsageError(f"--param: {spec} cannot be called with {kwargs} ({exc}); check the names") from None
    return kwargs


def _stage_names(names, inputs) -> str:
    """A pass's stages, from its graph's layer names: gpu_tiler's operations computed, the kept
    intermediates and the stored inputs (``inputs``: path -> layer name) read."""
    stages, reads = set(), set()
    for name in names:
        info = info_of_name(name)
        short = re.sub(r"-[0-9a-f]{8,}", "", name).removeprefix("gpu_tiler-").strip("_").replace("-", " ")
        if name.startswith("kept-") or (info is not None and info.materialised is not None):
            reads.add(f"the kept {short}" if not name.startswith("kept-") else "a kept intermediate")
        elif name.startswith("gpu_tiler-") and not name.startswith(("gpu_tiler-window-", "gpu_tiler-write-")):
            stages.add(short)
        reads.update(path for path, layer in inputs.items() if name == layer)
    text = ", ".join(sorted(stages)) or "reading"
    return text + (f" (reads {', '.join(sorted(reads))})" if reads else "")


class _PassBars(PassLog):
    """One progress bar per pass on a terminal (each pass named by the step that ran it, the stages it
    computed and what it read); the passes are listed afterwards with :meth:`lines`."""

    def __init__(self, args, inputs):
        super().__init__(self._started)
        self.tty, self.inputs, self.step = not args.quiet and sys.stderr.isatty(), inputs, ""

    def _started(self, p):
        p.extra["text"] = f"{self.step}: {_stage_names(p.names, self.inputs)}"
        if not self.tty:
            return None
        from tqdm import tqdm

        bar = tqdm(total=p.total, desc=f"pass {len(self.passes)} ({p.extra['text']})", unit="task", leave=False)

        def update(done, total):
            bar.total = total
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update

    def lines(self):
        return [f"pass {k} ({p.extra['text']}), {p.total} tasks" for k, p in enumerate(self.passes, 1)]


def cmd_segment(args):
    image = _open(args.input)
    out = Path(args.output)
    _check_output(out, args.overwrite)
    _start_computing(args)
    start = time.perf_counter()
    with _PassBars(args, {args.input: image.name}) as log:
        smoothed = gt.gaussian(image, args.sigma)
        log.step = "threshold"
        level = gt.threshold_otsu(smoothed)
        mask = gt.threshold(smoothed, level)  # the level computed once; the Gaussian kept by threshold_otsu
        log.step = "label"
        labels, count = gt.label(mask, connectivity=args.connectivity)
        log.step = "regionprops"
        table = gt.regionprops(labels, image, properties=args.properties)
    partial = out.with_name(f".{out.name}.partial")
    table.to_csv(partial, index=False)
    partial.replace(out)
    _say(args, f"gaussian sigma {args.sigma} -> Otsu level {level} -> {count} objects -> {len(table.columns)} columns")
    _say(args, explain(mask))
    for line in log.lines():
        _say(args, line)
    _say(args, f"wrote {out}: {len(table)} objects x {len(table.columns)} columns in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_margin(args):
    func = _function(args.function)
    image = _open(args.input) if args.input else nuclei((256, 256), chunks=256, seed=3)
    if image.size > 2**24:
        raise UsageError(f"input has {image.size} voxels; find_margin needs a sample that fits in memory "
                         "(crop it to at most 16 M voxels)")
    kwargs = _function_params(func, args.function, args.param or [])
    _check_output(args.output, args.overwrite)
    _start_computing(args)
    report = gt.find_margin(func, image, range(0, args.max_margin + 1), tolerance=args.tolerance,
                            plot=args.output, **kwargs)
    print(report)
    _say(args, f"wrote {args.output}")
    return 0 if report.margin is not None else EXIT_FAILURE


def cmd_preview(args):
    image = _open(args.input)
    labels = _open(args.labels, "labels") if args.labels else None
    _check_output(args.output, args.overwrite)
    _start_computing(args)
    path = preview(image, args.output, labels=labels, max_size=args.max_size, grid=not args.no_grid)
    _say(args, f"wrote {path}")
    return 0


def cmd_demo(args):
    _start_computing(args)
    return run_demo(Path(args.output), shape=(args.size, args.size), overwrite=True, say=lambda t: _say(args, t),
                    progress=lambda label: _progress(args, label))


class _distributed:
    """--cluster starts a local cluster, --scheduler connects to one; neither: run in this process."""

    def __init__(self, args):
        self.args, self.handle = args, None

    def __enter__(self):
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


def _at_least(low):
    """An argparse type: a whole number >= ``low``."""

    def convert(text):
        number = _ints(text)
        if not isinstance(number, int) or number < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {low}")
        return number

    return convert


def _not_negative(text):
    number = _numbers(text)
    if not isinstance(number, float) or not number >= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number >= 0")
    return number


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=BACKENDS,
                        help="array library (default: auto; standin: the strict GPU stand-in, for testing)")
    common.add_argument("--memory-budget", help="per-device budget: bytes, 512MiB, 2GB or a fraction like 0.25")
    common.add_argument("--quiet", action="store_true", help="no progress bars or summaries")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output")
    common.add_argument("--resume", action="store_true", help="continue an output an earlier run left unfinished")
    common.add_argument("--wait", action="store_true",
                        help="when another job is writing the same output, wait for it instead of failing")
    common.add_argument("--format", choices=["zarr", "ome-zarr"], default="zarr", dest="out_format",
                        help="output format (ome-zarr: multiscale NGFF with axes and pixel sizes)")
    common.add_argument("--pyramid", type=_at_least(1), metavar="LEVELS",
                        help="OME-Zarr pyramid levels (default: until the largest side is under 256)")
    common.add_argument("--ngff", choices=sorted(NGFF_ZARR_FORMAT),
                        help="OME-Zarr version of a new store: 0.5 (zarr v3, the default) or 0.4 (zarr v2); labels "
                             "saved into IMAGE/labels/NAME follow IMAGE's version (implies --format ome-zarr)")
    common.add_argument("--cluster", nargs="?", const=0, type=_at_least(0), metavar="N",
                        help="run on a local cluster (dask-cuda on GPUs, else N worker processes)")
    common.add_argument("--scheduler", metavar="ADDRESS", help="run on an existing dask scheduler, e.g. tcp://host:8786")

    parser = argparse.ArgumentParser(prog="gpu-tiler", description="Process images larger than memory, tile by tile.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", parents=[common], help="devices, budgets, backends, versions, kernels; or an image")
    p.add_argument("path", nargs="?", help="an image to describe instead")
    p.set_defaults(run=cmd_info)

    p = sub.add_parser("filter", help="run a filter into a zarr store",
                       description="Run one filter of gpu_tiler.filters into a zarr store; "
                                   "`gpu-tiler filter OP --help` lists OP's options.")
    ops = p.add_subparsers(dest="op", required=True, metavar="OP", title="filters")
    for name, func in sorted(filter_functions().items()):
        _add_filter(ops, common, name, func)

    p = sub.add_parser("label", parents=[common], help="connected components into a zarr store")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--connectivity", type=int, default=1)
    p.set_defaults(run=cmd_label)

    p = sub.add_parser("measure", parents=[common], help="region properties of a label image into a CSV table")
    p.add_argument("labels")
    p.add_argument("--intensity")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--properties", default=None, type=_names,
                   help="comma-separated regionprops properties (any of scikit-image's); default: label, area, "
                        "centroid, bbox, and intensity_mean, intensity_min, intensity_max with --intensity")
    p.set_defaults(run=cmd_measure)

    p = sub.add_parser("segment", parents=[common],
                       help="gaussian, Otsu threshold, label and measure into a CSV table (each stage computed once)",
                       description="Smooth with a Gaussian, threshold by Otsu's method over the whole image, label "
                                   "and measure the objects (against the input's intensities) into a CSV table. The "
                                   "Gaussian is computed once and kept for the passes after the threshold; one "
                                   "progress bar per pass, and the passes are listed at the end.")
    p.add_argument("input")
    p.add_argument("-o", "--output", required=True, help="the CSV table")
    p.add_argument("--sigma", type=_numbers, default=2.0, help="the Gaussian's sigma (one, or one per axis: 1,2,2)")
    p.add_argument("--connectivity", type=int, default=1)
    p.add_argument("--properties", default="label,area,centroid,intensity_mean", type=_names,
                   help="comma-separated regionprops properties")
    p.set_defaults(run=cmd_segment)

    p = sub.add_parser("margin", parents=[common], help="how large must the margin be for a function?")
    p.add_argument("input", nargs="?", help="a small sample image (default: generated nuclei)")
    p.add_argument("--function", default="gaussian", help="gaussian, median, uniform, ... or module:function")
    p.add_argument("--param", action="append", help="name=value for the function, e.g. sigma=2 (repeatable)")
    p.add_argument("--max-margin", type=_at_least(0), default=32)
    p.add_argument("--tolerance", type=_not_negative, default=0.0)
    p.add_argument("-o", "--output", default="margin.png")
    p.set_defaults(run=cmd_margin)

    p = sub.add_parser("preview", parents=[common], help="a PNG overview with the tile grid and labels")
    p.add_argument("input")
    p.add_argument("--labels")
    p.add_argument("--max-size", type=_at_least(1), default=1024)
    p.add_argument("--no-grid", action="store_true")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(run=cmd_preview)

    p = sub.add_parser("demo", parents=[common], help="the main job on a generated image")
    p.add_argument("--size", type=_at_least(1), default=8192, help="side of the generated square image")
    p.add_argument("-o", "--output", default="demo-output")
    p.set_defaults(run=cmd_demo)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.computing = False
    try:
        if extra:
            _unknown_options(parser, args, extra)
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
        code = exit_code(exc, args.computing)
        kind = "error" if code == EXIT_USAGE else f"failed ({type(exc).__name__})"
        print(f"gpu-tiler: {kind}: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
