"""Interrupts during the save of a results file: the previous file survives, nothing partial.

A subprocess runs the real CLI (``boltzgen.cli.main(["run", ...])``) with the training
replaced by a finished result and the HDF5 writer held inside the save (after it has written
everything into the temporary file, before the rename). The test then sends SIGINT, SIGTERM
or SIGKILL, and checks: the exit code (130, 143, killed), the previous results file byte for
byte, and that no temporary file is left (after SIGKILL, the next run removes it). The same
check run against a deliberately non-atomic writer (one that writes the results file in place)
must report the damage: that is what makes this test able to fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import boltzgen as bg
from boltzgen.systems import Gaussian
from boltzgen.train import Trainer

_CHILD = textwrap.dedent(
    """
    import sys, time
    import h5py
    from boltzgen import cli, config
    from boltzgen.results import Result

    src, out, marker, mode = sys.argv[1:5]
    finished = Result.load(src)
    config.RunSpec.run = lambda self, **kw: finished  # no training: the save is under test
    write = Result._write

    def held(self, f):
        write(self, f)
        f.flush()
        open(marker, "w").close()  # inside the save, the file fully written
        time.sleep(120)

    Result._write = held
    if mode == "naive":  # a deliberately non-atomic writer: the results file written in place
        def naive(self, path):
            with h5py.File(path, "w") as f:
                self._write(f)
        Result.save = naive
    sys.exit(cli.main(["run", "--out", out, "--force", "--quiet"]))
    """
)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished results file (a 2-step RealNVP on a 2-D Gaussian)."""
    path = tmp_path_factory.mktemp("finished") / "done.h5"
    r = bg.run(
        Gaussian.isotropic(2),
        1.0,
        bg.flows.make_sampler(
            "realnvp", Gaussian.isotropic(2), key=bg._keys.RunKeys(0).init, n_layers=2, hidden=8
        ),
        trainer=Trainer(steps=2, batch_size=16),
        estimation=bg.Estimation(n_samples=256, n_boot=0),
        stages=(),
        reference=None,
        progress=False,
    )
    r.save(path)
    return path


def _interrupt_during_save(finished, tmp_path, sig, mode="atomic"):
    """Run the child, signal it inside the save; return (exit code, problems found)."""
    out = tmp_path / "r.h5"
    shutil.copy(finished, out)  # the previous results file
    previous = out.read_bytes()
    marker = tmp_path / "in-save"
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(finished), str(out), str(marker), mode],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not marker.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert marker.exists(), f"the child never reached the save: {proc.stderr.read()}"
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    problems = []
    if not out.exists():
        problems.append("the previous results file is gone")
    elif out.read_bytes() != previous:
        problems.append("the previous results file was changed")
    else:
        bg.Result.load(out)  # and it reads
    temps = [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]
    if sig != signal.SIGKILL and temps:
        problems.append(f"temporary files left: {temps}")
    return proc.returncode, err, temps, problems


@pytest.mark.parametrize(
    "sig, code, line",
    [
        (signal.SIGINT, 130, "boltzgen: interrupted"),
        pytest.param(signal.SIGTERM, 143, "boltzgen: terminated (SIGTERM)", marks=pytest.mark.slow),
    ],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_during_save_keeps_the_previous_file(finished, tmp_path, sig, code, line):
    rc, err, _, problems = _interrupt_during_save(finished, tmp_path, sig)
    assert not problems, problems
    assert rc == code, err
    assert err.strip().splitlines()[-1] == line  # one line, no traceback


def test_sigkill_during_save_keeps_the_previous_file_and_the_next_run_cleans_up(finished, tmp_path):
    from boltzgen.results import remove_stale_temporaries

    rc, err, temps, problems = _interrupt_during_save(finished, tmp_path, signal.SIGKILL)
    assert rc == -signal.SIGKILL and not problems, (rc, problems, err)
    assert len(temps) == 1  # a SIGKILL cannot clean up ...
    removed = remove_stale_temporaries(tmp_path / "r.h5")  # ... the next run of the name does
    assert [os.path.basename(p) for p in removed] == temps


@pytest.mark.slow  # the power of the check above, shown once per signal kind
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_the_check_fails_for_a_non_atomic_writer(finished, tmp_path, sig):
    _, _, _, problems = _interrupt_during_save(finished, tmp_path, sig, mode="naive")
    assert problems == ["the previous results file was changed"] or problems == [
        "the previous results file is gone"
    ]
