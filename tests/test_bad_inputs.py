"""Every bad input the CLI refuses, and the table of them in docs/bad-inputs.md.

Each case is one ``boltzgen`` invocation (``boltzgen.cli.main`` in-process, in a fresh directory)
that must exit with code 2 and print exactly one line ``boltzgen: error: <message>`` naming the
bad key or value: no traceback, nothing written or changed in the directory, no training (the
training loop and the Monte Carlo training data raise if they are entered), and quickly. The
same test renders the table of every case with its message and compares it with the committed
docs/bad-inputs.md; ``BOLTZGEN_WRITE_DOCS=1`` rewrites the file instead.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import h5py
import pytest

from boltzgen.cli import main

DOC = Path(__file__).resolve().parent.parent / "docs" / "bad-inputs.md"
PREFIX = "boltzgen: error: "
OUT = "r.h5"  # every `run` case writes (or rather must not write) this file
MAX_SECONDS = 10.0  # a refused input returns well within this (JAX start-up included)

#: The tiny real run whose checkpoint and results file the resume and report cases use
#: (about 4 s: a 1-layer RealNVP on a 2-d Gaussian, 2 training steps, 2 samples).
TINY = (
    "system.kind=gaussian",
    "system.dim=2",
    "sampler.n_layers=1",
    "sampler.hidden=4",
    "sampler.depth=0",
    "sampler.learn_affine=false",
    "train.steps=2",
    "train.batch_size=8",
    "train.chunk=2",
    "estimate.n_samples=2",
    "estimate.chunk_size=2",
    "estimate.n_boot=0",
    "refine.method=none",
)


@dataclass(frozen=True)
class Case:
    """One bad invocation.

    Attributes:
        input: what is wrong, in a few words.
        argv: the arguments of ``boltzgen``.
        names: substrings the message must contain (the bad key, value or file).
        shown: the command column of the table (default: ``boltzgen`` + argv).
        setup: ``setup(directory, tiny_run_directory)`` creates the files the case needs.
        code: the exit code.
    """

    input: str
    argv: tuple[str, ...]
    names: tuple[str, ...]
    shown: str = ""
    setup: Callable[[Path, Path], None] | None = None
    code: int = 2

    def command(self) -> str:
        if self.shown:
            return self.shown
        return "boltzgen " + shlex.join(a for a in self.argv if a != "--quiet")


def _sets(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def S(input: str, *overrides: str, names: tuple[str, ...]) -> Case:
    """A ``boltzgen run --out r.h5 --quiet --set ...`` case (the table shows the overrides)."""
    argv = ("run", "--out", OUT, "--quiet", *_sets(overrides))
    return Case(input, argv, names, shown=" ".join(f"--set {o}" for o in overrides))


def R(input: str, *args: str, names: tuple[str, ...], setup=None) -> Case:
    """A ``boltzgen run ...`` case with its own arguments (``--quiet`` added)."""
    return Case(input, ("run", *args, "--quiet"), names, setup=setup)


def T(input: str, *changes: str, names: tuple[str, ...], setup=None) -> Case:
    """``boltzgen run --out r.h5 --resume`` with the tiny run's overrides and ``changes``.

    The case directory holds a copy of the tiny run's checkpoint unless ``setup`` says otherwise;
    a change ``-key`` drops that override.
    """
    argv = ("run", "--out", OUT, "--resume", "--quiet", *_tiny(*changes))
    shown = " ".join(["boltzgen run --out r.h5 --resume tiny"] + _shown(changes))
    return Case(input, argv, names, shown=shown, setup=setup or _tiny_file(_CKPT, _CKPT))


def _shown(changes) -> list[str]:
    sets = [f"--set {c}" for c in changes if not c.startswith("-")]
    dropped = [c[1:] for c in changes if c.startswith("-")]
    return sets + ([f"(without {', '.join(dropped)})"] if dropped else [])


def C(input: str, *args: str, names: tuple[str, ...], setup=None) -> Case:
    """Any other ``boltzgen`` invocation."""
    return Case(input, tuple(args), names, setup=setup)


# ------------------------------------------------------------------------------------------
# Setups: the files a case needs, made in its fresh directory
# ------------------------------------------------------------------------------------------


def _write(name: str, content: str | bytes):
    def setup(d: Path, tiny: Path) -> None:
        p = d / name
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")

    return setup


def _mkdir(name: str):
    def setup(d: Path, tiny: Path) -> None:
        (d / name).mkdir()

    return setup


def _h5(name: str, **attrs):
    def setup(d: Path, tiny: Path) -> None:
        with h5py.File(d / name, "w") as f:
            f["a"] = 1
            f.attrs.update(attrs)

    return setup


def _tiny_file(src: str, dst: str, truncate: bool = False):
    """Copy a file of the tiny run (``r.h5`` or ``r.h5.ckpt``), or its first half."""

    def setup(d: Path, tiny: Path) -> None:
        data = (tiny / src).read_bytes()
        (d / dst).write_bytes(data[: len(data) // 2] if truncate else data)

    return setup


def _both(*setups):
    def setup(d: Path, tiny: Path) -> None:
        for s in setups:
            s(d, tiny)

    return setup


def _tiny(*changes: str) -> list[str]:
    """The tiny run's overrides with ``changes`` replacing (or adding) keys; ``-key`` drops one."""
    keys = {c.lstrip("-").split("=", 1)[0] for c in changes}
    kept = [o for o in TINY if o.split("=", 1)[0] not in keys]
    return _sets(kept + [c for c in changes if not c.startswith("-")])


_SPEC = "spec.toml"
_CKPT = OUT + ".ckpt"

# ------------------------------------------------------------------------------------------
# The cases
# ------------------------------------------------------------------------------------------

CASES = [
    # [system]
    S("unknown system kind", "system.kind=nope", names=("system.kind", "'nope'")),
    S("no particles", "system.n_particles=0", names=("n_particles", "got 0")),
    S("negative particle number", "system.n_particles=-1", names=("n_particles", "got -1")),
    S("particle number of the wrong type", "system.n_particles=2.5", names=("n_particles", "2.5")),
    S(
        "particle number beyond memory",
        "system.n_particles=1000000000",
        names=("GiB", "estimate.n_samples"),
    ),
    S("dimension 4", "system.dim=4", names=("dim", "got 4")),
    S("dimension 0", "system.dim=0", names=("dim", "got 0")),
    S("zero trap stiffness", "system.trap=0", names=("trap", "got 0")),
    S("negative coupling", "system.coupling=-1", names=("coupling", "got -1")),
    S("NaN trap stiffness", "system.trap=nan", names=("trap", "nan")),
    S("unknown system parameter", "system.colour=1", names=("colour",)),
    S(
        "parameter of another system",
        "system.kind=ising",
        "system.n_particles=6",
        names=("n_particles", "'ising'"),
    ),
    S("Ising lattice of one site", "system.kind=ising", "system.L=1", names=("L", "got 1")),
    S(
        "Ising lattice beyond memory",
        "system.kind=ising",
        "system.L=100000",
        names=("GiB", "estimate.n_samples"),
    ),
    S(
        "unknown Ising boundary",
        "system.kind=ising",
        "system.boundary=klein",
        names=("boundary", "'klein'"),
    ),
    S("string coupling", "system.kind=ising", "system.Jh=strong", names=("Jh", "'strong'")),
    S("NaN Ising coupling", "system.kind=ising", "system.J=nan", names=("J", "nan")),
    S("SK glass of one spin", "system.kind=sk", "system.n_spins=1", names=("n_spins", "got 1")),
    S("negative coupling seed", "system.kind=sk", "system.seed=-1", names=("seed", "got -1")),
    S("zero Gaussian width", "system.kind=gaussian", "system.sigma=0", names=("sigma", "got 0")),
    S(
        "one double-well particle",
        "system.kind=double_well",
        "system.n_particles=1",
        names=("n_particles", "got 1"),
    ),
    S(
        "negative Lennard-Jones tether",
        "system.kind=lennard_jones",
        "system.tether=-1",
        names=("tether", "got -1"),
    ),
    S("[system] not a table", "system=3", names=("[system]", "got 3")),
    # [ensemble]
    S("β = 0", "ensemble.beta=0", names=("ensemble.beta", "got 0")),
    S("negative β", "ensemble.beta=-1", names=("ensemble.beta", "got -1")),
    S("NaN β", "ensemble.beta=nan", names=("ensemble.beta", "got nan")),
    S("infinite β", "ensemble.beta=inf", names=("ensemble.beta", "got inf")),
    S("β a string", "ensemble.beta=hot", names=("ensemble.beta", "'hot'")),
    S("β empty", "ensemble.beta=", names=("ensemble.beta", "''")),
    S("unknown ensemble key", "ensemble.temperature=1", names=("ensemble.temperature",)),
    S(
        "ensemble.indistinguishable not a bool",
        "ensemble.indistinguishable=1",
        names=("ensemble.indistinguishable", "got 1"),
    ),
    S(
        "β curve of a continuous system",
        "ensemble.betas=[0.2, 0.5]",
        names=("ensemble.betas", "'coulomb'"),
    ),
    S(
        "β curve with a negative β",
        "system.kind=ising",
        "ensemble.betas=[0.2, -0.5]",
        names=("ensemble.betas", "-0.5"),
    ),
    S("empty β curve", "system.kind=ising", "ensemble.betas=[]", names=("ensemble.betas", "[]")),
    S(
        "β curve not a list",
        "system.kind=ising",
        "ensemble.betas=0.5",
        names=("ensemble.betas", "0.5"),
    ),
    S(
        "section that does not apply to a curve",
        "system.kind=ising",
        "ensemble.betas=[0.2, 0.5]",
        "refine.method=nmcmc",
        names=("[refine]",),
    ),
    S(
        "objective that does not apply to a curve",
        "system.kind=ising",
        "ensemble.betas=[0.2, 0.5]",
        "train.objective=reinforce",
        names=("train.objective", "'reinforce'"),
    ),
    # seed
    S("negative seed", "seed=-1", names=("seed", "got -1")),
    S("seed >= 2**64", "seed=18446744073709551616", names=("seed", "18446744073709551616")),
    S("fractional seed", "seed=1.5", names=("seed", "1.5")),
    S("seed given as a section", "seed.x=1", names=("seed", "{'x': 1}")),
    # [sampler]
    S("unknown sampler kind", "sampler.kind=magic", names=("sampler.kind", "'magic'")),
    S("unknown sampler option", "sampler.depthh=3", names=("depthh",)),
    S("zero hidden width", "sampler.hidden=0", names=("hidden", "got 0")),
    S(
        "no coupling layers",
        "sampler.kind=equivariant",
        "sampler.n_layers=0",
        names=("n_layers", "got 0"),
    ),
    S("negative MLP depth", "sampler.depth=-1", names=("depth", "got -1")),
    S(
        "negative CNF depth",
        "sampler.kind=cnf",
        "sampler.depth=-1",
        names=("depth", "got -1"),
    ),
    S("zero CNF width", "sampler.kind=cnf", "sampler.hidden=0", names=("hidden", "got 0")),
    S("no CNF steps", "sampler.kind=cnf", "sampler.n_steps=0", names=("n_steps", "got 0")),
    S("unknown CNF field", "sampler.kind=cnf", "sampler.field=magic", names=("field", "'magic'")),
    S(
        "unknown coupling transform",
        "sampler.kind=equivariant",
        "sampler.transform=weird",
        names=("transform", "'weird'"),
    ),
    S("zero base scale", "sampler.base_scale=0", names=("base_scale",)),
    S(
        "bad sampler.rotate",
        "sampler.kind=equivariant",
        "sampler.rotate=sometimes",
        names=("sampler.rotate", "'sometimes'"),
    ),
    S(
        "sampler that does not fit the system",
        "sampler.kind=realnvp",
        names=("'realnvp'", "d = 2"),
    ),
    S("spin sampler for particles", "sampler.kind=pixelcnn", names=("'pixelcnn'",)),
    S(
        "even PixelCNN kernel",
        "system.kind=ising",
        "sampler.kernel_size=2",
        names=("kernel_size", "got 2"),
    ),
    S(
        "β-conditioned sampler without a curve",
        "sampler.beta_conditioned=true",
        names=("sampler.beta_conditioned",),
    ),
    S(
        "sampler without zero centre of mass for DW4",
        "system.kind=double_well",
        "sampler.zero_com=false",
        names=("'double_well'", "zero_com"),
    ),
    # [train]
    S("negative steps", "train.steps=-1", names=("train.steps", "got -1")),
    S("steps not an integer", "train.steps=1e3", names=("train.steps", "1000.0")),
    S(
        "steps beyond the int32 step index",
        "train.steps=100000000000000000000",
        names=("train.steps", "100000000000000000000"),
    ),
    S("zero batch size", "train.batch_size=0", names=("train.batch_size", "got 0")),
    S(
        "batch beyond memory",
        "train.batch_size=100000000000",
        names=("train.batch_size", "100000000000", "GiB"),
    ),
    S("negative learning rate", "train.learning_rate=-0.1", names=("train.learning_rate", "-0.1")),
    S("NaN learning rate", "train.learning_rate=nan", names=("train.learning_rate", "nan")),
    S("zero gradient clip", "train.clip=0", names=("train.clip", "got 0")),
    S("zero chunk", "train.chunk=0", names=("train.chunk", "got 0")),
    S("zero checkpoint period", "train.checkpoint_every=0", names=("train.checkpoint_every",)),
    S("negative warm-up", "train.warmup=-1", names=("train.warmup", "got -1")),
    S("unknown train key", "train.lr=0.1", names=("train.lr",)),
    S("unknown objective", "train.objective=forward", names=("train.objective", "'forward'")),
    S("objective not a string", "train.objective=1", names=("train.objective", "got 1")),
    S(
        "β ramp out of range",
        "train.objective=reverse_kl",
        "train.beta_anneal=-1",
        names=("train.beta_anneal", "-1"),
    ),
    S(
        "negative fine-tuning steps",
        "train.finetune_steps=-1",
        names=("train.finetune_steps", "got -1"),
    ),
    S(
        "fine-tuning an energy objective",
        "train.objective=reverse_kl",
        "train.finetune_steps=10",
        names=("train.finetune_steps", "'reverse_kl'"),
    ),
    S(
        "fine-tuning rate without fine-tuning steps",
        "train.finetune_steps=0",
        "train.finetune_learning_rate=0.01",
        names=("train.finetune_learning_rate", "train.finetune_steps"),
    ),
    S(
        "negative fine-tuning batch",
        "train.finetune_batch_size=-4",
        names=("finetune_batch_size", "-4"),
    ),
    S(
        "fine-tuning batch without fine-tuning steps",
        "train.finetune_steps=0",
        "train.finetune_batch_size=64",
        names=("train.finetune_batch_size", "train.finetune_steps"),
    ),
    S(
        "reverse KL on spins",
        "system.kind=ising",
        "train.objective=reverse_kl",
        names=("'reverse_kl'", "'ising'"),
    ),
    S(
        "flow matching with a coupling flow",
        "sampler.kind=equivariant",
        "train.objective=flow_matching",
        names=("'flow_matching'", "'cnf'"),
    ),
    S("[train] not a table", "train=1", names=("[train]", "got 1")),
    # [data] and [matching]
    S(
        "[data] without a data objective",
        "train.objective=reverse_kl",
        "data.n_samples=10",
        names=("[data]", "'reverse_kl'"),
    ),
    S(
        "[matching] without a data objective",
        "train.objective=reverse_kl",
        "matching.pairing=ot",
        names=("[matching]", "'reverse_kl'"),
    ),
    S(
        "no Monte Carlo training samples",
        "train.objective=flow_matching",
        "data.n_samples=0",
        names=("data.n_samples", "got 0"),
    ),
    S(
        "unknown data key",
        "train.objective=flow_matching",
        "data.bogus=1",
        names=("data.bogus",),
    ),
    S(
        "unknown pairing",
        "train.objective=flow_matching",
        "matching.pairing=magic",
        names=("matching.pairing", "'magic'"),
    ),
    S(
        "non-positive interpolant noise",
        "train.objective=interpolant",
        "sampler.kind=cnf",
        "matching.gamma_scale=-1",
        names=("matching.gamma_scale", "-1"),
    ),
    S(
        "NaN FEAT step",
        "train.objective=interpolant",
        "sampler.kind=cnf",
        "matching.feat_eps=nan",
        names=("matching.feat_eps", "nan"),
    ),
    S(
        "FEAT paths without the interpolant",
        "train.objective=flow_matching",
        "matching.feat_paths=10",
        names=("matching.feat_paths", "'flow_matching'"),
    ),
    S(
        "no FEAT paths",
        "train.objective=interpolant",
        "sampler.kind=cnf",
        "matching.feat_paths=0",
        names=("matching.feat_paths", "got 0"),
    ),
    # [estimate]
    S("no estimation samples", "estimate.n_samples=0", names=("estimate.n_samples", "got 0")),
    S("one estimation sample", "estimate.n_samples=1", names=("estimate.n_samples", "got 1")),
    S("sample count a bool", "estimate.n_samples=true", names=("estimate.n_samples", "True")),
    S(
        "estimation beyond memory",
        "estimate.n_samples=100000000000",
        names=("GiB", "estimate.n_samples"),
    ),
    S("zero chunk size", "estimate.chunk_size=0", names=("estimate.chunk_size", "got 0")),
    S("negative bootstrap count", "estimate.n_boot=-1", names=("estimate.n_boot", "got -1")),
    S("unknown estimate key", "estimate.size=1", names=("estimate.size",)),
    # [refine]
    S("no refinement chains", "refine.n_chains=0", names=("refine.n_chains", "got 0")),
    S("no refinement steps", "refine.n_steps=0", names=("refine.n_steps", "got 0")),
    S("unknown refinement method", "refine.method=magic", names=("refine.method", "'magic'")),
    S("unknown path kernel", "refine.path_kernel=magic", names=("refine.path_kernel", "'magic'")),
    S("method not a string", "refine.method=1", names=("refine.method", "got 1")),
    S("acceptance target above 1", "refine.target_accept=1.5", names=("refine.target_accept",)),
    S("negative step size", "refine.step_size=-1", names=("refine.step_size", "-1")),
    S("unknown local kernel", "refine.local_kernel=nuts", names=("refine.local_kernel", "'nuts'")),
    S("warm-up beyond the steps", "refine.n_warmup=500", names=("refine.n_warmup", "500")),
    S("unknown precision", "refine.precision=float16", names=("refine.precision", "'float16'")),
    S(
        "key of another method",
        "refine.method=ais",
        "refine.resample_threshold=0.5",
        names=("refine.resample_threshold",),
    ),
    S(
        "settings without a method",
        "refine.method=none",
        "refine.n_chains=5",
        names=("refine.n_chains", "'none'"),
    ),
    S(
        "resampling threshold above 1",
        "refine.method=smc",
        "refine.resample_threshold=1.5",
        names=("refine.resample_threshold", "1.5"),
    ),
    S(
        "refinement beyond memory",
        "refine.n_chains=100000000000",
        names=("GiB", "chain counts"),
    ),
    S(
        "HMC refinement of spins",
        "system.kind=ising",
        "refine.method=ais",
        names=("refine.method", "'ais'", "'ising'"),
    ),
    S(
        "gradient moves on spins",
        "system.kind=ising",
        "refine.local_kernel=mala",
        names=("refine.local_kernel", "'mala'"),
    ),
    # [reference]
    S("unknown reference method", "reference.method=nuts", names=("reference.method", "'nuts'")),
    S("reference method a bool", "reference.method=true", names=("reference.method", "True")),
    S("misspelt reference key", "reference.n_chainz=3", names=("reference.n_chainz",)),
    S("acceptance target 2", "reference.target_accept=2", names=("reference.target_accept",)),
    S("zero schedule power", "reference.power=0", names=("reference.power", "got 0")),
    S("unknown AIS kernel", "reference.kernel=nuts", names=("reference.kernel", "'nuts'")),
    S("no reference chains", "reference.n_chains=0", names=("reference.n_chains", "got 0")),
    S("negative pilot chains", "reference.pilot_chains=-1", names=("reference.pilot_chains",)),
    S(
        "ladder of one state",
        "reference.method=ladder",
        "reference.n_states=1",
        names=("reference.n_states", "got 1"),
    ),
    S("spin reference for particles", "reference.method=ti", names=("'ti'", "'coulomb'")),
    S(
        "trap reference for a Gaussian",
        "system.kind=gaussian",
        "reference.method=ais",
        names=("'ais'", "'gaussian'"),
    ),
    S(
        "settings without a reference",
        "reference.method=none",
        "reference.n_chains=5",
        names=("reference.n_chains", "'none'"),
    ),
    S(
        "unknown spin kernel",
        "system.kind=ising",
        "reference.method=ti",
        "reference.kernel=wolff",
        names=("reference.kernel", "'wolff'"),
    ),
    # unknown sections, --set syntax
    S("unknown section", "bogus.key=1", names=("'bogus'",)),
    S("override without =", "beta", names=("--set", "'beta'")),
    S("override with three parts", "a.b.c=1", names=("--set", "'a.b.c=1'")),
    S("override with an empty section", ".beta=1", names=("--set", "'.beta=1'")),
    S("override without a key", "=1", names=("--set", "'=1'")),
    S(
        "repeated override, different values",
        "ensemble.beta=2",
        "ensemble.beta=3",
        names=("ensemble.beta", "(2, 3)"),
    ),
    # spec files
    R(
        "spec not TOML",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "invalid TOML"),
        setup=_write(_SPEC, "[system\nkind = 1\n"),
    ),
    R(
        "spec with a repeated key",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "line 2"),
        setup=_write(_SPEC, "seed = 1\nseed = 2\n"),
    ),
    R(
        "spec with a byte-order mark",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "line 1, column 1"),
        setup=_write(_SPEC, "\ufeffseed = 1\n"),
    ),
    R(
        "spec not UTF-8",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "UTF-8"),
        setup=_write(_SPEC, "# caf\xe9\nseed = 1\n".encode("latin-1")),
    ),
    R("spec missing", "missing.toml", "--out", OUT, names=("missing.toml",)),
    R(
        "spec empty",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "empty"),
        setup=_write(_SPEC, "  \n"),
    ),
    R(
        "spec of comments only",
        _SPEC,
        "--out",
        OUT,
        names=(_SPEC, "empty"),
        setup=_write(_SPEC, "# nothing here\n"),
    ),
    R("spec a directory", "specs", "--out", OUT, names=("'specs'",), setup=_mkdir("specs")),
    R(
        "spec with a section given as a value",
        _SPEC,
        "--out",
        OUT,
        names=("[system]", "'coulomb'"),
        setup=_write(_SPEC, 'system = "coulomb"\n'),
    ),
    R(
        "spec with an unknown top-level key",
        _SPEC,
        "--out",
        OUT,
        names=("'temperature'",),
        setup=_write(_SPEC, "temperature = 300\n"),
    ),
    R(
        "spec with an empty system kind",
        _SPEC,
        "--out",
        OUT,
        names=("system.kind", "''"),
        setup=_write(_SPEC, '[system]\nkind = ""\n'),
    ),
    R(
        "spec with both beta and betas",
        _SPEC,
        "--out",
        OUT,
        names=("ensemble.beta", "ensemble.betas"),
        setup=_write(
            _SPEC, '[system]\nkind = "ising"\n[ensemble]\nbeta = 0.4\nbetas = [0.2, 0.4]\n'
        ),
    ),
    # --out
    R("--out a directory", "--out", "outdir", names=("'outdir'",), setup=_mkdir("outdir")),
    R(
        "--out the spec itself",
        _SPEC,
        "--out",
        _SPEC,
        names=(_SPEC, "spec file itself"),
        setup=_write(_SPEC, "seed = 1\n"),
    ),
    R(
        "--out an existing file without --force",
        "--out",
        OUT,
        names=(OUT, "--force"),
        setup=_write(OUT, "old results"),
    ),
    R("--out in a missing directory", "--out", "nodir/r.h5", names=("nodir",)),
    R("--out in a read-only directory", "--out", "/proc/boltzgen-r.h5", names=("/proc",)),
    # --resume
    R(
        "--resume from a corrupt checkpoint",
        "--out",
        OUT,
        "--resume",
        names=(_CKPT,),
        setup=_write(_CKPT, b"\x00garbage\xff" * 64),
    ),
    T(
        "--resume from a truncated checkpoint",
        names=(_CKPT, "truncated"),
        setup=_tiny_file(_CKPT, _CKPT, truncate=True),
    ),
    R(
        "--resume from an HDF5 file that is no checkpoint",
        "--out",
        OUT,
        "--resume",
        names=(_CKPT, "not a boltzgen checkpoint"),
        setup=_h5(_CKPT),
    ),
    R(
        "--resume from a directory",
        "--out",
        OUT,
        "--resume",
        names=(_CKPT, "directory"),
        setup=_mkdir(_CKPT),
    ),
    T(
        "--resume with a checkpoint of another sampler",
        "sampler.kind=cnf",
        "-sampler.n_layers",
        "-sampler.learn_affine",
        names=(_CKPT, "another run"),
    ),
    T(
        "--resume with a checkpoint of a wider sampler",
        "sampler.hidden=8",
        names=(_CKPT, "another run"),
    ),
    T("--resume with a checkpoint of another β", "ensemble.beta=5.0", names=(_CKPT, "another run")),
    T("--resume with a checkpoint of another seed", "seed=7", names=(_CKPT, "another run")),
    T(
        "--resume beyond train.steps",
        "train.steps=1",
        names=(_CKPT, "train.steps = 1"),
    ),
    T(
        "--resume with the results file present, wrong run",
        "train.learning_rate=0.1",
        names=(_CKPT, "another run"),
        setup=_both(_tiny_file(OUT, OUT), _tiny_file(_CKPT, _CKPT)),
    ),
    # report
    C("report of a missing file", "report", "missing.h5", names=("missing.h5",)),
    C(
        "report of a file that is not HDF5",
        "report",
        "text.h5",
        names=("'text.h5'",),
        setup=_write("text.h5", "hello\n"),
    ),
    C(
        "report of an HDF5 file without boltzgen groups",
        "report",
        "other.h5",
        names=("'other.h5'", "schema_version"),
        setup=_h5("other.h5"),
    ),
    C(
        "report of a training checkpoint",
        "report",
        _CKPT,
        names=(_CKPT, "not a boltzgen results file"),
        setup=_tiny_file(_CKPT, _CKPT),
    ),
    C(
        "report of a newer schema",
        "report",
        "new.h5",
        names=("'new.h5'", "99"),
        setup=_h5("new.h5", schema_version=99),
    ),
    C("report of a directory", "report", "adir", names=("'adir'",), setup=_mkdir("adir")),
    C("report without a file", "report", names=("file",)),
    # the command line itself
    C("unknown subcommand", "frobnicate", names=("'frobnicate'",)),
    C("unknown option", "run", "--bogus", names=("--bogus",)),
    C("--set without its value", "run", "--set", names=("--set",)),
    C(
        "two spec files",
        "run",
        "a.toml",
        "b.toml",
        names=("b.toml",),
    ),
    # found by this test, fixed in cli.py and results.py
    R("--out the empty string", "--out", "", names=("--out",)),
    R("--out a path ending in a slash", "--out", "x.h5/", names=("x.h5/",)),
    C(
        "report of an HDF5 file with a schema but no groups",
        "report",
        "partial.h5",
        names=("'partial.h5'",),
        setup=_h5("partial.h5", schema_version=4),
    ),
    C(
        "report --plot into a missing directory",
        "report",
        OUT,
        "--plot",
        "nodir/p.png",
        names=("nodir",),
        setup=_tiny_file(OUT, OUT),
    ),
    C("no subcommand", names=("no command",)),
]


# ------------------------------------------------------------------------------------------
# Running a case
# ------------------------------------------------------------------------------------------


def _no_training(*args, **kwargs):
    raise AssertionError("training was entered: the input must be refused before")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A real two-step run: its directory holds r.h5 and its checkpoint r.h5.ckpt."""
    d = tmp_path_factory.mktemp("tiny")
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["run", "--out", str(d / OUT), "--quiet", *_sets(TINY)])
    assert code in (0, 3), code  # 3: ran, answer not usable (2 samples); the files are there
    assert (d / OUT).exists() and (d / _CKPT).exists()
    return d


@pytest.fixture
def refuse_work(monkeypatch):
    """Make training and the Monte Carlo training data raise if they are ever entered."""
    from boltzgen.train import HMCData
    from boltzgen.train._trainer import Trainer

    monkeypatch.setattr(Trainer, "fit", _no_training)
    monkeypatch.setattr(HMCData, "sample", _no_training)


def _snapshot(d: Path) -> dict:
    return {
        str(p.relative_to(d)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(d.rglob("*"))
    }


def _scrub(msg: str, d: Path) -> str:
    """The message with the case's directory and h5py's volatile details replaced."""
    for path in {os.path.realpath(d), str(d)}:
        msg = msg.replace(path, "<tmp>")
    msg = re.sub(r"\(file read failed: [^)]*\)", "(file read failed: …)", msg)
    return re.sub(r"\b(eof|base_addr|stored_eof) = \d+", r"\1 = <n>", msg)


def _run(case: Case, d: Path, tiny: Path, capsys, monkeypatch) -> tuple[list[str], str]:
    """Run ``case`` in the fresh directory ``d``; return (problems, scrubbed message)."""
    d.mkdir()
    monkeypatch.chdir(d)
    if case.setup is not None:
        case.setup(d, tiny)
    before = _snapshot(d)
    capsys.readouterr()
    t0 = time.perf_counter()
    try:
        code = main(list(case.argv))
    except SystemExit as err:  # argparse's errors
        code = err.code
    except Exception as err:  # a traceback: reported with the case
        return [f"raised {type(err).__name__}: {err}"], ""
    elapsed = time.perf_counter() - t0
    err = capsys.readouterr().err
    problems = []
    if code != case.code:
        problems.append(f"exit code {code}, expected {case.code}")
    if not (err.startswith(PREFIX) and err.endswith("\n") and err.count("\n") == 1):
        problems.append(f"stderr is not one line {PREFIX!r}...: {err!r}")
    msg = err[len(PREFIX) :].rstrip("\n")
    missing = [n for n in case.names if n not in msg]
    if missing:
        problems.append(f"message does not name {missing}: {msg!r}")
    if "`" in msg:
        problems.append(f"backquote in the message breaks the table: {msg!r}")
    after = _snapshot(d)
    if after != before:
        problems.append(f"files changed: {sorted(set(after.items()) ^ set(before.items()))}")
    if elapsed > MAX_SECONDS:
        problems.append(f"took {elapsed:.1f} s (> {MAX_SECONDS} s)")
    return problems, _scrub(msg, d)


# ------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------

HEADER = """\
# Bad inputs and their messages

This file is generated by `tests/test_bad_inputs.py`; do not edit it by hand. The test runs each
row as one `boltzgen` invocation in a fresh directory and checks that it exits with the code
shown and prints exactly one line, `boltzgen: error: <message>`, on stderr (no traceback); that
the message names the bad key, value or file; that no file is written or changed; and that the
input is refused before any training. The test fails when this file differs from the table it
generates; regenerate it with
`BOLTZGEN_WRITE_DOCS=1 .venv/bin/python -m pytest tests/test_bad_inputs.py -p no:randomly`.
Rows showing only `--set` options run `boltzgen run --out r.h5 --quiet --set ...` on the default
spec, `<tmp>` stands for the directory of the run, and `tiny` for the overrides of a real
two-step run, made first, whose checkpoint the `--resume` rows start from:
`{tiny}`.
(`train.steps = 0` is not an error: it evaluates the untrained sampler.)
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(rows: list[tuple[Case, str]]) -> str:
    """The markdown of docs/bad-inputs.md."""
    tiny = " ".join(_sets(TINY))
    lines = [
        HEADER.format(tiny=tiny),
        f"{len(rows)} bad inputs.",
        "",
        "| input | command / override | exit | message |",
        "| --- | --- | --- | --- |",
    ]
    for case, msg in rows:
        command = case.command()
        lines.append(f"| {_cell(case.input)} | `{_cell(command)}` | {case.code} | `{_cell(msg)}` |")
    return "\n".join(lines) + "\n"


def test_cases_are_distinct():
    assert len(CASES) >= 45
    assert len({c.input for c in CASES}) == len(CASES), "two cases with the same description"
    plain = [c.argv for c in CASES if c.setup is None]  # the others differ by their files
    assert len(set(plain)) == len(plain), "two cases with the same command"


def test_bad_inputs_table(tiny_run, tmp_path, capsys, monkeypatch, refuse_work):
    """Every case is refused properly; the table of them is docs/bad-inputs.md."""
    rows, failures = [], []
    for i, case in enumerate(CASES):
        problems, msg = _run(case, tmp_path / f"case{i:03d}", tiny_run, capsys, monkeypatch)
        failures += [f"{case.input} ({case.command()}): {p}" for p in problems]
        rows.append((case, msg))
    assert not failures, "\n".join(failures)
    text = render(rows)
    if os.environ.get("BOLTZGEN_WRITE_DOCS") == "1":
        DOC.write_text(text, encoding="utf-8")
    else:
        assert DOC.exists(), f"{DOC} missing: run with BOLTZGEN_WRITE_DOCS=1 to write it"
        assert DOC.read_text(encoding="utf-8") == text, (
            f"{DOC} is out of date: run with BOLTZGEN_WRITE_DOCS=1 to rewrite it"
        )
