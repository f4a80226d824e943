"""CLI and run-spec validation: clear one-line errors, exit code 2, nothing half-written."""

import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

import boltzgen as bg
from boltzgen.cli import main
from boltzgen.config import SpecError, load_spec, read_spec, validate
from boltzgen.results import SCHEMA_VERSION

TINY = [
    "--set",
    "system.n_particles=2",
    "--set",
    "ensemble.beta=2.0",
    "--set",
    "train.steps=20",
    "--set",
    "train.batch_size=64",
    "--set",
    "estimate.n_samples=512",
    "--set",
    "estimate.chunk_size=256",
    "--set",
    "estimate.n_boot=10",
    "--set",
    "sampler.kind=equivariant",  # a coupling flow trained by reverse KL: quick to compile
    "--set",
    "sampler.n_layers=2",
    "--set",
    "sampler.hidden=8",
    "--set",
    "sampler.gap=false",
    "--set",
    "reference.n_chains=32",
    "--set",
    "reference.n_steps=20",
    "--set",
    "refine.method=none",
    "--quiet",
]


def test_default_spec_is_the_seed_demo():
    spec = load_spec()
    assert spec.system_params == {
        "kind": "coulomb",
        "n_particles": 6,
        "dim": 2,
        "trap": 1.0,
        "coupling": 1.0,
    }
    assert spec.beta == 10.0 and spec.seed == 0
    assert isinstance(spec.reference, bg.references.TrapAIS)
    assert spec.sampler_kind == "cnf"


def test_default_spec_is_the_library_default():
    """One source of defaults: the CLI's default spec builds exactly bg.run's default pieces."""
    spec = load_spec()
    assert spec.objective == bg.train.default_objective(spec.system)
    no_holdout = bg.train.HMCData(n_holdout=0)  # the data only train q
    assert spec.objective == bg.train.FineTuned(bg.train.FlowMatching(data=no_holdout))
    assert spec.trainer == bg.train.Trainer()
    assert spec.estimation == bg.Estimation()
    assert spec.stages == bg.stages.default_stages(spec.objective)
    assert spec.reference == bg.references.default_reference(spec.system)
    from boltzgen._run import default_sampler

    a = spec.build_sampler()
    b = default_sampler(spec.system, key=bg._keys.RunKeys(0).init)
    import equinox as eqx
    import jax
    import numpy as np

    for x, y in zip(
        jax.tree.leaves(eqx.filter(a, eqx.is_array)),
        jax.tree.leaves(eqx.filter(b, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_written_out_default_spec_is_the_default():
    """runs/coulomb-n6.toml says it is the built-in default with every key: it resolves to it."""
    path = Path(__file__).parent.parent / "runs" / "coulomb-n6.toml"
    assert load_spec(str(path)).to_toml() == load_spec().to_toml()


@pytest.fixture(scope="module")
def tiny_cli_run(tmp_path_factory):
    """One `boltzgen run` of the TINY spec: (results file, printed table)."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("tiny") / "r.h5"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["run", "--out", str(out), *TINY]) == 0
    return out, buf.getvalue()


def test_same_seed_same_numbers_through_the_cli_and_the_library(tiny_cli_run):
    """`boltzgen run` and bg.run with the same pieces give the same estimates."""
    out, _ = tiny_cli_run
    spec = load_spec(None, [a for a in TINY if a not in ("--set", "--quiet")])
    q = spec.build_sampler()
    r = bg.run(
        spec.system,
        2.0,
        q,
        trainer=spec.trainer,
        estimation=spec.estimation,
        stages=spec.stages,
        reference=spec.reference,
        progress=False,
    )
    back = bg.Result.load(out)
    for m, e in r.estimates.items():
        assert back.estimates[m].log_z == e.log_z, m
    assert back.reference["ais"].log_z == r.reference["ais"].log_z


def test_overrides_are_parsed_as_toml():
    raw = read_spec(
        None,
        [
            "ensemble.beta=2.0",
            "system.n_particles=2",
            "system.dim=1",
            "sampler.kind=realnvp",
            "seed=3",
        ],
    )
    assert raw == {
        "ensemble": {"beta": 2.0},
        "system": {"n_particles": 2, "dim": 1},
        "sampler": {"kind": "realnvp"},
        "seed": 3,
    }
    spec = validate(raw)
    assert spec.system_params["n_particles"] == 2 and spec.sampler_kind == "realnvp"


def test_spec_round_trips_through_toml(tmp_path):
    spec = load_spec(None, ["ensemble.beta=3.5", "system.dim=3", "refine.target_accept=0.6"])
    p = tmp_path / "s.toml"
    p.write_text(spec.to_toml())
    back = load_spec(str(p))
    assert back.to_toml() == spec.to_toml()
    assert back.stages == spec.stages and back.trainer == spec.trainer


@pytest.mark.parametrize(
    "override,match",
    [
        ("system.kind=nope", "unknown system.kind 'nope'; valid: coulomb"),
        ("ensemble.beta=-1.0", "ensemble.beta must be a positive finite number, got -1.0"),
        ("ensemble.beta=0", "ensemble.beta must be a positive finite number, got 0"),
        ("ensemble.beta=nan", "ensemble.beta must be a positive finite number, got nan"),
        ("ensemble.beta=inf", "ensemble.beta must be a positive finite number, got inf"),
        ('ensemble.beta="hot"', "ensemble.beta must be a positive finite number, got 'hot'"),
        ("ensemble.betas=[0.2, 0.5]", "ensemble.betas .* needs a spin system"),
        ("system.n_particles=0", "n_particles must be an integer >= 1, got 0"),
        ("system.n_particles=2.5", "system.n_particles must be int, got 2.5"),
        ("system.colour=1", "unknown parameter.*colour"),
        ("train.steps=-5", "train.steps must be an integer >= 0, got -5"),
        ("train.steps=abc", "train.steps must be an integer, got 'abc'"),
        ("train.batch_size=1.5", "train.batch_size must be an integer, got 1.5"),
        (
            "train.lr=0.1",
            "unknown key train.lr; valid: objective, finetune_steps, finetune_learning_rate, "
            "finetune_batch_size, steps",
        ),
        (
            ('train.objective="reverse_kl"', "data.n_samples=10"),
            r"section \[data\] applies to the data objectives",
        ),
        (
            ('train.objective="reverse_kl"', "matching.pairing=ot"),
            r"section \[matching\] applies to the data objectives",
        ),
        ("train.pairing=ot", "unknown key train.pairing"),
        ("train.finetune_steps=-1", "train.finetune_steps must be an integer >= 0, got -1"),
        ("train.finetune_steps=2.5", "train.finetune_steps must be an integer, got 2.5"),
        ("train.finetune_learning_rate=0", "train.finetune_learning_rate must be"),
        (
            ("train.finetune_steps=0", "train.finetune_learning_rate=0.01"),
            "train.finetune_learning_rate needs train.finetune_steps >= 1",
        ),
        (
            ('train.objective="reverse_kl"', "train.finetune_steps=10"),
            "train.finetune_steps applies to the data objectives",
        ),
        ("estimate.n_samples=100000000000", "GiB"),
        ("train.objective=forward", "unknown train.objective 'forward'"),
        ("sampler.kind=magic", "unknown sampler.kind 'magic'"),
        ("sampler.depthh=3", "unknown parameter.*depthh for sampler 'cnf'; valid: hidden"),
        (
            "sampler.kind=realnvp",
            "sampler 'realnvp' on identical particles is reliable only in d = 1",
        ),
        ("sampler.hidden=2.5", "sampler.hidden must be int"),
        ("reference.method=nuts", "unknown reference.method 'nuts'"),
        ("reference.n_chainz=3", "unknown key reference.n_chainz"),
        ("estimate.n_samples=1", "estimate.n_samples must be an integer >= 2"),
        ("seed=-1", r"seed must be an integer in \[0, 2\*\*63\)"),
        ("seed=18446744073709551616", r"seed must be an integer in \[0, 2\*\*63\)"),
        ("bogus.key=1", "unknown top-level key 'bogus'"),
        ("ensemble.indistinguishable=1", "ensemble.indistinguishable must be true or false"),
    ],
)
def test_bad_specs_are_one_line_errors(override, match):
    overrides = [override] if isinstance(override, str) else list(override)
    with pytest.raises(SpecError, match=match) as info:
        load_spec(None, overrides)
    assert "\n" not in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="section.key=value"):
        load_spec(None, ["beta"])
    with pytest.raises(SpecError, match="given twice with different values"):
        load_spec(None, ["ensemble.beta=2", "ensemble.beta=3"])
    assert load_spec(None, ["ensemble.beta=2", "ensemble.beta=2"]).beta == 2.0


def test_bad_spec_files(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[system\nkind = 1")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(str(bad))
    empty = tmp_path / "empty.toml"
    empty.write_text("  \n")
    with pytest.raises(SpecError, match="the spec is empty"):
        load_spec(str(empty))
    latin = tmp_path / "latin.toml"
    latin.write_bytes("# caf\xe9\nseed = 1\n".encode("latin-1"))
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(str(latin))
    with pytest.raises(SpecError, match="is a directory"):
        load_spec(str(tmp_path))
    both = tmp_path / "both.toml"
    both.write_text('[system]\nkind = "ising"\nL = 3\n[ensemble]\nbeta = 0.4\nbetas = [0.2, 0.4]\n')
    with pytest.raises(SpecError, match="not both"):
        load_spec(str(both))
    curve = tmp_path / "curve.toml"
    curve.write_text(
        '[system]\nkind = "ising"\nL = 3\n[ensemble]\nbetas = [0.2, 0.4]\n'
        '[refine]\nmethod = "nmcmc"\n'
    )
    with pytest.raises(SpecError, match=r"section \[refine\] does not apply to a free-energy"):
        load_spec(str(curve))


def test_cli_bad_input_exit_code_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "r.h5"
    code = main(["run", "--out", str(out), "--set", "ensemble.beta=-1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "ensemble.beta must be a positive" in err
    assert not out.exists() and not os.listdir(tmp_path)
    assert main(["run", "--out", str(tmp_path / "no" / "r.h5"), "--quiet"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "--out", "/proc/boltzgen-r.h5", "--quiet"]) == 2
    assert "is not writable" in capsys.readouterr().err
    spec = tmp_path / "s.toml"
    spec.write_text("seed = 1\n")
    assert main(["run", str(spec), "--out", str(spec), "--quiet"]) == 2
    assert "is the spec file itself" in capsys.readouterr().err
    out.write_bytes(b"old")
    assert main(["run", "--out", str(out), "--quiet"]) == 2
    assert "pass --force" in capsys.readouterr().err and out.read_bytes() == b"old"


def test_cli_subprocess_no_traceback(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "boltzgen.cli",
            "run",
            "--set",
            "system.kind=nope",
            "--out",
            str(tmp_path / "x.h5"),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "unknown system.kind 'nope'" in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "boltzgen.cli", "frobnicate"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    r = subprocess.run(
        [sys.executable, "-m", "boltzgen.cli", "report", str(tmp_path / "none.h5")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "results file not found" in r.stderr


def test_cli_systems_lists_parameters(capsys):
    assert main(["systems"]) == 0
    out = capsys.readouterr().out
    assert "coulomb" in out and "n_particles" in out and "harmonic" in out


def test_cli_run_writes_file_and_report_reads_it(tiny_cli_run, tmp_path, capsys):
    import math

    out, printed = tiny_cli_run
    assert "importance" in printed and "ref:ais" in printed and "exact" in printed
    with h5py.File(out) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert "n_particles = 2" in f.attrs["spec"]
        assert f.attrs["beta"] == 2.0  # ensemble.beta of the spec
        for m in ("variational", "importance", "forward_bound"):
            assert m in f["estimates"]
        assert f["estimates/variational"].attrs["kind"] == "upper_bound"
        assert f["estimates/forward_bound"].attrs["kind"] == "lower_bound"
        assert "ais" in f["reference"] and f["reference/ais"].attrs["n_energy_evals"] > 0
        assert f["samples/x"].shape == (512, 2, 2)
        assert f["train/loss"].shape == (20,)
        exact = float(f["system/exact_log_z"][()])
        attrs = {m: dict(g.attrs) for m, g in f["estimates"].items()}
        ref = dict(f["reference/ais"].attrs)
        # Energy evaluations per phase: reverse KL evaluates one batch per step, estimation
        # one per sample, the reference what its own estimate records; no data, no stages.
        evals = dict(f["energy_evals"].attrs)
    assert evals == {
        "data": 0.0,
        "train": 20 * 64,
        "estimate": 512,
        "reference": ref["n_energy_evals"],
    }
    assert bg.Result.load(out).energy_evals == evals
    assert "energy evaluations: data 0, train 1.28e+03, estimate 512, reference " in printed
    # The stored exact ln Z is the system's (two charges in a 2-D trap, closed form).
    assert exact == bg.systems.CoulombGas(2, 2).exact_log_z(2.0)
    # The best estimate (smallest error bar among the unflagged estimates, read from the file's
    # attributes) has a finite, positive error bar and agrees with the exact ln Z and with the
    # run's own AIS reference (combined error) within 4σ.
    cands = {m: a for m, a in attrs.items() if a["kind"] == "estimate" and not a["flags"]}
    best_name = min(cands, key=lambda m: cands[m]["log_z_stderr"])
    best = cands[best_name]
    assert math.isfinite(best["log_z"]) and 0 < best["log_z_stderr"] < math.inf
    assert best["beta_f"] == -best["log_z"]
    assert abs(best["log_z"] - exact) <= 4 * best["log_z_stderr"], (best_name, best, exact)
    sigma = math.hypot(best["log_z_stderr"], ref["log_z_stderr"])
    assert abs(best["log_z"] - ref["log_z"]) <= 4 * sigma, (best_name, best, ref)
    assert bg.Result.load(out).best().method == best_name
    assert os.path.exists(str(out) + ".ckpt")
    assert main(["report", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    report = capsys.readouterr().out
    assert (tmp_path / "p.png").stat().st_size > 1000
    # The report prints β and, on the best estimate's row, its βF, error bar and ln Z as stored.
    assert "β = 2 " in report.splitlines()[0]
    row = next(ln for ln in report.splitlines() if ln.startswith(best_name + " "))
    assert f"{best['beta_f']:.6f}" in row and f"{best['log_z']:.6f}" in row
    assert f"{best['log_z_stderr']:.2g}" in row
    exact_row = next(ln for ln in report.splitlines() if ln.startswith("exact "))
    assert f"{exact:.6f}" in exact_row and f"{-exact:.6f}" in exact_row


def test_resume_refuses_another_runs_checkpoint_before_any_work(tmp_path, capsys):
    out = tmp_path / "r.h5"
    tiny = [a if a != "train.steps=20" else "train.steps=4" for a in TINY]
    assert main(["run", "--out", str(out), *tiny]) == 0
    capsys.readouterr()
    other_beta = [a if a != "ensemble.beta=2.0" else "ensemble.beta=5.0" for a in tiny]
    assert main(["run", "--out", str(out), *other_beta, "--resume"]) == 2
    assert "belongs to another run" in capsys.readouterr().err
    fewer = [a if a != "train.steps=4" else "train.steps=2" for a in tiny]
    assert main(["run", "--out", str(out), *fewer, "--resume"]) == 2
    assert "beyond train.steps = 2" in capsys.readouterr().err


def test_report_rejects_non_results_file(tmp_path, capsys):
    p = tmp_path / "other.h5"
    with h5py.File(p, "w") as f:
        f["a"] = 1
    assert main(["report", str(p)]) == 2
    assert "not a boltzgen results file" in capsys.readouterr().err


def test_example_specs_validate():
    import glob

    specs = sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "runs", "*.toml")))
    assert specs
    for path in specs:
        load_spec(path)


@pytest.mark.slow  # a real SIGKILL of a subprocess; exact resume is tested in test_train.py
def test_killed_in_training_resumes_from_its_checkpoint(tmp_path):
    """SIGKILL in training: the checkpoint is whole and a resumed run finishes.

    (A kill during the save of the results file is tests/test_interrupts.py.)
    """
    import signal
    import time

    out = tmp_path / "k.h5"
    ckpt = tmp_path / "k.h5.ckpt"
    args = [sys.executable, "-m", "boltzgen.cli", "run", "--out", str(out), *TINY]
    args[args.index("train.steps=20")] = "train.steps=100000"
    args += ["--set", "train.checkpoint_every=10", "--set", "train.chunk=5"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "no checkpoint written within 120 s"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()  # killed before the end: no results file, not a partial one
    with h5py.File(ckpt) as f:  # the checkpoint is complete and readable
        step = int(f.attrs["step"])
        assert step >= 10 and step % 10 == 0
    # resume with a short total: it continues from the checkpoint and finishes
    args[args.index("train.steps=100000")] = f"train.steps={step + 5}"
    r = subprocess.run([*args, "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    with h5py.File(out) as f:
        assert f["train/loss"].shape == (step + 5,)


def test_bool_or_auto_sampler_option():
    eq = "sampler.kind=equivariant"
    assert load_spec(None, [eq, "sampler.rotate=false"]).sampler_options["rotate"] is False
    assert load_spec(None, [eq, "sampler.rotate=true"]).sampler_options["rotate"] is True
    assert load_spec(None, [eq]).sampler_options["rotate"] == "auto"
    with pytest.raises(SpecError, match="sampler.rotate must be true, false or 'auto'"):
        load_spec(None, [eq, "sampler.rotate=sometimes"])


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    from boltzgen.results import remove_stale_temporaries

    out = tmp_path / "r.h5"
    dead = tmp_path / "r.h5.tmp-999999999"  # no such process
    alive = tmp_path / f"r.h5.tmp-{os.getppid()}"  # a running process: left alone
    other = tmp_path / "q.h5.tmp-999999999"  # another output name: left alone
    for p in (dead, alive, other):
        p.write_bytes(b"partial")
    assert remove_stale_temporaries(out) == [str(dead)]
    assert not dead.exists() and alive.exists() and other.exists()


@pytest.mark.slow  # a real SIGTERM of a subprocess in training
def test_sigterm_stops_cleanly_with_exit_143(tmp_path):
    import signal
    import time

    out = tmp_path / "t.h5"
    ckpt = tmp_path / "t.h5.ckpt"
    args = [sys.executable, "-m", "boltzgen.cli", "run", "--out", str(out), *TINY]
    args[args.index("train.steps=20")] = "train.steps=100000"
    args += ["--set", "train.checkpoint_every=10", "--set", "train.chunk=5"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "no checkpoint written within 120 s"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == "boltzgen: terminated (SIGTERM)"
    assert not out.exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.parametrize(
    "overrides",
    [
        ['train.objective="maximum_likelihood"', "train.reverse_weight=0.5", "data.n_samples=64"],
        [
            'sampler.kind="equivariant"',  # a coupling flow: reverse KL by default
            "train.path_gradient=true",
            "refine.path_chains=32",
            "refine.path_steps=7",
        ],
        ["train.finetune_steps=7", "train.finetune_learning_rate=0.001"],
        ['train.objective="interpolant"', "train.finetune_steps=7"],
    ],
)
def test_new_objective_and_path_settings_survive_the_written_spec(overrides):
    """The spec a run writes (to_toml) rebuilds the same objective and stages."""
    import tomllib

    from boltzgen.config import validate

    spec = load_spec(None, overrides)
    again = validate(tomllib.loads(spec.to_toml()))
    assert again.objective == spec.objective and again.stages == spec.stages
    assert again.objective != load_spec(None).objective
