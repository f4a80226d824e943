"""CLI and run-spec validation: clear one-line errors, exit code 2, nothing half-written."""

import os
import subprocess
import sys

import h5py
import pytest

from boltzgen.cli import main
from boltzgen.config import SpecError, apply_override, load_spec, to_toml, validate
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
    assert spec["system"] == {
        "kind": "coulomb",
        "n_particles": 6,
        "dim": 2,
        "trap": 1.0,
        "coupling": 1.0,
    }
    assert spec["ensemble"]["beta"] == 10.0
    assert spec["reference"]["method"] == "ais"
    assert spec["sampler"]["kind"] == "equivariant"


def test_overrides_are_parsed_as_toml():
    raw = {}
    apply_override(raw, "ensemble.beta=2.0")
    apply_override(raw, "system.n_particles=2")
    apply_override(raw, "system.dim=1")
    apply_override(raw, "sampler.kind=realnvp")
    apply_override(raw, "seed=3")
    assert raw == {
        "ensemble": {"beta": 2.0},
        "system": {"n_particles": 2, "dim": 1},
        "sampler": {"kind": "realnvp"},
        "seed": 3,
    }
    spec = validate(raw)
    assert spec["system"]["n_particles"] == 2 and spec["sampler"]["kind"] == "realnvp"


def test_spec_round_trips_through_toml(tmp_path):
    spec = load_spec(None, ["ensemble.beta=3.5", "system.dim=3"])
    p = tmp_path / "s.toml"
    p.write_text(to_toml(spec))
    assert load_spec(str(p)) == spec


@pytest.mark.parametrize(
    "override,match",
    [
        ("system.kind=nope", "unknown system.kind 'nope'; valid: coulomb"),
        ("ensemble.beta=-1.0", "ensemble.beta must be positive, got -1.0"),
        ("ensemble.beta=0", "ensemble.beta must be positive, got 0"),
        ('ensemble.beta="hot"', "ensemble.beta must be number, got 'hot'"),
        ("system.n_particles=0", "n_particles must be an integer >= 1, got 0"),
        ("system.n_particles=2.5", "system.n_particles must be int, got 2.5"),
        ("system.colour=1", "unknown parameter.*colour"),
        ("train.steps=-5", "train.steps must be >= 0, got -5"),
        ("train.batch_size=1.5", "train.batch_size must be int, got 1.5"),
        ("train.lr=0.1", "unknown key train.lr; valid: objective, beta_anneal, steps"),
        ("train.objective=forward", "unknown train.objective 'forward'"),
        ("sampler.kind=magic", "unknown sampler.kind 'magic'"),
        (
            "sampler.depthh=3",
            "unknown parameter.*depthh for sampler 'equivariant'; valid: n_layers",
        ),
        (
            "sampler.kind=realnvp",
            "sampler 'realnvp' on identical particles is reliable only in d = 1",
        ),
        ("sampler.hidden=2.5", "sampler.hidden must be int"),
        ("reference.method=nuts", "unknown reference.method 'nuts'"),
        ("reference.n_chainz=3", "unknown key reference.n_chainz"),
        ("estimate.n_samples=1", "estimate.n_samples must be >= 2"),
        ("seed=-1", "seed must be a non-negative integer"),
        ("bogus.key=1", "unknown top-level key 'bogus'"),
        ("ensemble.indistinguishable=1", "ensemble.indistinguishable must be bool"),
    ],
)
def test_bad_specs_are_one_line_errors(override, match):
    with pytest.raises(SpecError, match=match) as info:
        load_spec(None, [override])
    assert "\n" not in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(SpecError, match="section.key=value"):
        load_spec(None, ["beta"])


def test_bad_spec_files(tmp_path):
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("[system\nkind = 1")
    with pytest.raises(SpecError, match="invalid TOML"):
        load_spec(str(bad))


def test_cli_bad_input_exit_code_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "r.h5"
    code = main(["run", "--out", str(out), "--set", "ensemble.beta=-1", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "ensemble.beta must be positive" in err
    assert not out.exists() and not os.listdir(tmp_path)


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


def test_cli_run_writes_file_and_report_reads_it(tmp_path, capsys):
    out = tmp_path / "r.h5"
    assert main(["run", "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "importance" in printed and "ref:ais" in printed and "exact" in printed
    with h5py.File(out) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert "n_particles = 2" in f.attrs["spec"]
        for m in ("variational", "importance", "forward_bound"):
            assert m in f["estimates"]
        assert f["estimates/variational"].attrs["kind"] == "upper_bound"
        assert f["estimates/forward_bound"].attrs["kind"] == "lower_bound"
        assert "ais" in f["reference"] and f["reference/ais"].attrs["n_energy_evals"] > 0
        assert f["samples/x"].shape == (512, 2, 2)
        assert f["train/loss"].shape == (20,)
        assert "exact_log_z" in f["system"]
    assert os.path.exists(str(out) + ".ckpt")
    assert main(["report", str(out), "--plot", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out
    assert "importance" in printed and (tmp_path / "p.png").stat().st_size > 1000


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


def test_killed_run_leaves_no_results_file_and_resumes(tmp_path):
    import signal
    import time

    out = tmp_path / "k.h5"
    ckpt = tmp_path / "k.h5.ckpt"
    args = [sys.executable, "-m", "boltzgen.cli", "run", "--out", str(out), *TINY]
    args[args.index("train.steps=20")] = "train.steps=100000"
    args += ["--set", "train.checkpoint_every=10"]
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
    assert load_spec(None, ["sampler.rotate=false"])["sampler"]["rotate"] is False
    assert load_spec(None, ["sampler.rotate=true"])["sampler"]["rotate"] is True
    assert load_spec(None)["sampler"]["rotate"] == "auto"
    with pytest.raises(SpecError, match="sampler.rotate must be true, false or 'auto'"):
        load_spec(None, ["sampler.rotate=sometimes"])
