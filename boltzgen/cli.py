"""The ``boltzgen`` command: ``run``, ``systems``, ``report``.

Errors in user input are one line on stderr and exit code 2; never a traceback.
"""

from __future__ import annotations

import argparse
import os
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
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

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
        _parser().print_help()
        return 2
    from boltzgen.config import SpecError

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


def _cmd_run(args) -> int:
    from boltzgen.config import SpecError, load_spec, to_toml

    spec = load_spec(args.spec, args.overrides)
    name = os.path.splitext(os.path.basename(args.spec))[0] if args.spec else "default"
    out = args.out or os.path.join("runs", "out", f"{name}.h5")
    if os.path.isdir(out):
        raise SpecError(f"--out {out!r} is a directory; give a file name")
    out_dir = os.path.dirname(os.path.abspath(out))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as err:
        raise SpecError(f"cannot create output directory {out_dir!r}: {err.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise SpecError(f"output directory {out_dir!r} is not writable")

    import boltzgen as bg

    system = bg.systems.make_system(
        spec["system"]["kind"], **{k: v for k, v in spec["system"].items() if k != "kind"}
    )
    sampler = dict(spec["sampler"])
    reference = dict(spec["reference"])
    refine = dict(spec["refine"])
    tr, es = spec["train"], spec["estimate"]
    t0 = time.perf_counter()
    common = dict(
        sampler=sampler.pop("kind"),
        sampler_options=sampler,
        steps=tr["steps"],
        batch_size=tr["batch_size"],
        learning_rate=tr["learning_rate"],
        clip=tr["clip"],
        beta_anneal=tr["beta_anneal"],
        n_samples=es["n_samples"],
        chunk_size=es["chunk_size"],
        n_boot=es["n_boot"],
        seed=spec["seed"],
        progress=not args.quiet,
        spec_text=to_toml(spec),
    )
    if spec["ensemble"]["betas"]:  # one β-conditioned training, a free-energy curve
        result = bg.run_curve(system, spec["ensemble"]["betas"], **common)
    else:
        result = bg.run(
            system,
            spec["ensemble"]["beta"],
            objective=tr["objective"],
            reference=reference.pop("method"),
            reference_options=reference,
            refine=refine.pop("method"),
            refine_options=refine,
            data_options=dict(spec["data"]),
            matching_options=dict(spec["matching"]),
            indistinguishable=spec["ensemble"]["indistinguishable"],
            checkpoint_path=out + ".ckpt",
            checkpoint_every=tr["checkpoint_every"],
            resume=args.resume,
            **common,
        )
    result.timings["total"] = time.perf_counter() - t0
    result.save(out)
    print()
    print(result.table())
    print(f"\nwrote {out}")
    return 0


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
