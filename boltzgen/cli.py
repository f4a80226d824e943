"""The ``boltzgen`` command: ``run``, ``systems``, ``report``.

Errors in user input are one line on stderr and exit code 2; never a traceback. A run that
finished but whose answer is not usable (:meth:`boltzgen.Result.problems`) writes its file and
exits with code 3; Ctrl-C exits with 130, SIGTERM with 143 (no partial or temporary files).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own errors: one line, exit 2
        self.exit(2, f"boltzgen: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="boltzgen", description="Boltzmann-generator free energies with error bars and bounds."
    )
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    r = sub.add_parser("run", help="train a sampler and estimate the free energy of a run spec")
    r.add_argument("spec", nargs="?", help="TOML run spec (default: the built-in Coulomb-gas demo)")
    r.add_argument("--out", help="results file (HDF5); default runs/out/<spec name>.h5")
    r.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a spec value, e.g. --set ensemble.beta=2.0 (repeatable)",
    )
    r.add_argument(
        "--resume", action="store_true", help="continue training from OUT.ckpt if it exists"
    )
    r.add_argument("--force", action="store_true", help="overwrite an existing results file")
    r.add_argument("--quiet", action="store_true", help="no progress bars")

    sub.add_parser("systems", help="list the built-in systems and their parameters")
    sub.add_parser("samplers", help="list the samplers and their hyper-parameters")

    rep = sub.add_parser("report", help="print the free-energy table of a results file")
    rep.add_argument("file", help="results file written by `boltzgen run`")
    rep.add_argument("--plot", metavar="PNG", help="also plot the training curves to this PNG file")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``boltzgen`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    if args.version:
        from boltzgen import __version__

        print(f"boltzgen {__version__}")
        return 0
    if args.command is None:
        print(
            "boltzgen: error: no command given; one of run, systems, samplers, report "
            "(boltzgen --help)",
            file=sys.stderr,
        )
        return 2
    from boltzgen.config import SpecError

    previous = signal.signal(signal.SIGTERM, _terminate)
    # Ctrl-C raises KeyboardInterrupt even when the shell started us with SIGINT ignored (a
    # background job of a non-interactive shell), so an interrupt is never silently lost.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return {
            "run": _cmd_run,
            "systems": _cmd_systems,
            "samplers": _cmd_samplers,
            "report": _cmd_report,
        }[args.command](args)
    except SpecError as err:
        print(f"boltzgen: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("boltzgen: interrupted", file=sys.stderr)
        return 130
    except _Terminated:
        print("boltzgen: terminated (SIGTERM)", file=sys.stderr)
        return 143
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


class _Terminated(BaseException):
    """Raised by the SIGTERM handler: unwinds like Ctrl-C (temporary files are removed)."""


def _terminate(signum, frame):
    raise _Terminated


def _cmd_run(args) -> int:
    from boltzgen.config import SpecError, load_spec

    spec = load_spec(args.spec, args.overrides)
    name = os.path.splitext(os.path.basename(args.spec))[0] if args.spec else "default"
    out = args.out if args.out is not None else os.path.join("runs", "out", f"{name}.h5")
    _check_out(out, args)
    from boltzgen.results import remove_stale_temporaries

    remove_stale_temporaries(out)
    remove_stale_temporaries(out + ".ckpt")
    remove_stale_temporaries(out + ".ckpt.finetune")  # a fine-tuned run's second phase
    t0 = time.perf_counter()
    try:
        result = spec.run(checkpoint=out + ".ckpt", resume=args.resume, progress=not args.quiet)
    except ValueError as err:  # a checkpoint of another run, or one with too many steps
        if "checkpoint" in str(err):
            raise SpecError(str(err).splitlines()[0]) from None
        raise
    result.timings["total"] = time.perf_counter() - t0
    result.save(out)
    print()
    print(result.table())
    print(f"\nwrote {out}")
    problems = result.problems()
    if problems:  # ran, but the answer is not usable: exit 3 (the file says why too)
        print(f"boltzgen: the answer is not usable: {'; '.join(problems)}", file=sys.stderr)
        return 3
    return 0


def _check_out(out: str, args) -> None:
    """Refuse a bad ``--out`` before any work.

    A directory, the spec itself, an existing file without ``--force`` (or ``--resume``), a
    missing or unwritable directory.
    """
    from boltzgen.config import SpecError

    if os.path.isdir(out):
        raise SpecError(f"--out {out!r} is a directory; give a file name")
    if not os.path.basename(out):
        raise SpecError(f"--out {out!r} is not a file name")
    if args.spec and os.path.exists(out) and os.path.samefile(out, args.spec):
        raise SpecError(f"--out {out!r} is the spec file itself")
    if os.path.exists(out) and not (args.force or args.resume):
        raise SpecError(f"{out!r} exists; pass --force to overwrite it")
    out_dir = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(out_dir):
        if args.out is not None:
            raise SpecError(f"output directory {out_dir!r} does not exist")
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as err:
            raise SpecError(f"cannot create output directory {out_dir!r}: {err.strerror}") from None
    try:  # a real write, not os.access: root passes access checks on read-only file systems
        import tempfile

        with tempfile.NamedTemporaryFile(dir=out_dir, prefix=".boltzgen-probe-"):
            pass
    except OSError as err:
        raise SpecError(f"output directory {out_dir!r} is not writable: {err.strerror}") from None


def _print_registry(table) -> int:
    for kind, entry in table.items():
        print(f"{kind}: {entry.summary}")
        for name, (_, default, doc) in entry.params.items():
            print(f"    {name:<14} default {default!r:<8} {doc}")
    return 0


def _cmd_systems(args) -> int:
    from boltzgen.systems import SYSTEMS

    return _print_registry(SYSTEMS)


def _cmd_samplers(args) -> int:
    from boltzgen.flows import SAMPLERS

    return _print_registry(SAMPLERS)


def _cmd_report(args) -> int:
    from boltzgen.config import SpecError
    from boltzgen.results import Result

    if not os.path.exists(args.file):
        raise SpecError(f"results file not found: {args.file}")
    if os.path.isdir(args.file):
        raise SpecError(f"results file {args.file!r} is a directory")
    if args.plot:
        plot_dir = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(plot_dir):
            raise SpecError(f"--plot directory {plot_dir!r} does not exist")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SpecError("--plot needs matplotlib: pip install 'boltzgen[plot]'") from None
    try:
        result = Result.load(args.file, samples=False)
    except ValueError as err:
        raise SpecError(str(err)) from None
    print(result.table())
    if args.plot:
        from boltzgen.report import plot_curve, plot_training

        (plot_curve if result.curve else plot_training)(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
