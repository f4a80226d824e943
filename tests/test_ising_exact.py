"""Exact 2-D Ising references: Kaufman (float64 and mpmath), transfer matrix, enumeration."""

import math

import numpy as np
import pytest
from conftest import assert_allclose

from boltzgen.systems import (
    BETA_C,
    EdwardsAnderson,
    Ising,
    SherringtonKirkpatrick,
    all_states,
    enumerate_energies,
    enumerate_log_z,
    enumerate_thermo,
    ising_exact_log_z,
    ising_exact_method,
    ising_exact_thermo,
    kaufman_log_z,
    kaufman_log_z_mp,
    transfer_matrix_log_z,
)
from boltzgen.systems._ising_exact import _transfer_log_z

BETAS = (0.1, 0.3, BETA_C, 0.6, 1.0)


def _lse_log_z(energies, beta):
    a = -beta * energies
    top = a.max()
    return float(top + math.log(np.sum(np.exp(a - top))))


def _brute_log_z(n_rows, n_cols, k_h, k_v, b_h=0.0, periodic=True):
    """Independent enumeration of an n_rows × n_cols lattice (NumPy, reduced couplings)."""
    s = all_states(n_rows * n_cols).reshape(-1, n_rows, n_cols)
    if periodic:
        horiz = np.sum(s * np.roll(s, -1, axis=2), axis=(1, 2))
        vert = np.sum(s * np.roll(s, -1, axis=1), axis=(1, 2))
    else:
        horiz = np.sum(s[:, :, :-1] * s[:, :, 1:], axis=(1, 2))
        vert = np.sum(s[:, :-1, :] * s[:, 1:, :], axis=(1, 2))
    return _lse_log_z(-(k_h * horiz + k_v * vert + b_h * np.sum(s, axis=(1, 2))), 1.0)


@pytest.mark.parametrize("L", [2, 3, 4])
@pytest.mark.parametrize("jh, jv", [(1.0, 1.0), (0.5, 1.3)])
def test_kaufman_matches_enumeration(L, jh, jv):
    energies = enumerate_energies(Ising(L, Jh=jh, Jv=jv))
    for beta in BETAS:
        assert_allclose(
            kaufman_log_z(L, L, beta * jh, beta * jv),
            _lse_log_z(energies, beta),
            rtol=1e-12,
            err_msg=f"L={L} beta={beta}",
        )


@pytest.mark.parametrize("L, jh, jv", [(2, -1.0, 0.7), (4, -1.0, 0.7), (4, 1.2, -0.4)])
def test_kaufman_antiferromagnet_even_sizes(L, jh, jv):
    energies = enumerate_energies(Ising(L, Jh=jh, Jv=jv))
    for beta in (0.2, BETA_C, 0.8):
        assert_allclose(
            kaufman_log_z(L, L, beta * jh, beta * jv), _lse_log_z(energies, beta), rtol=1e-12
        )


def test_kaufman_non_square_and_decoupled():
    # n_rows × n_cols tori, odd sizes, anisotropic, one coupling zero (independent rings).
    cases = [(2, 3), (3, 2), (3, 4), (4, 3), (2, 5), (5, 3)]
    couplings = [(0.3, 0.7), (0.2, 0.1), (0.9, 0.45), (0.0, 0.5), (0.4, 0.0), (0.0, 0.0)]
    for m, n in cases:
        for k_h, k_v in couplings:
            assert_allclose(
                kaufman_log_z(m, n, k_h, k_v),
                _brute_log_z(m, n, k_h, k_v),
                rtol=1e-12,
                err_msg=f"{m}x{n} K=({k_h}, {k_v})",
            )
    # gauge on the even dimension only: K_h < 0 needs n_cols even
    assert_allclose(kaufman_log_z(3, 4, -0.5, 0.4), _brute_log_z(3, 4, -0.5, 0.4), rtol=1e-12)
    with pytest.raises(ValueError, match="frustrated"):
        kaufman_log_z(4, 3, -0.5, 0.4)
    with pytest.raises(ValueError, match="float64 range"):
        kaufman_log_z(4, 4, 200.0, 0.4)


def _naive_kaufman(L, K, drop_k0_sign):
    """Textbook products (no log space), γ_0 from arccosh (≥ 0) when drop_k0_sign."""
    a, b = -math.log(math.tanh(K)), 2 * K
    k = np.arange(2 * L)
    g = np.arccosh(np.cosh(a) * np.cosh(b) - np.sinh(a) * np.sinh(b) * np.cos(np.pi * k / L))
    if not drop_k0_sign:
        g[0] = b - a
    x = L * g / 2
    z = (
        np.prod(2 * np.cosh(x[1::2]))
        + np.prod(2 * np.sinh(x[1::2]))
        + np.prod(2 * np.cosh(x[0::2]))
        + np.prod(2 * np.sinh(x[0::2]))
    )
    return math.log(0.5) + L * L / 2 * math.log(2 * math.sinh(2 * K)) + math.log(z)


def test_kaufman_k0_sign_pitfall():
    # Above T_c, γ_0 = 2K + ln tanh K < 0 and Z_4 = Π_{k even} 2 sinh(Lγ_k/2) is negative.
    # Taking γ_0 = arccosh(...) ≥ 0 adds 2|Z_4|: at L = 4, β = 0.2 that makes ln Z too large by
    # 0.674 (ln 2 = 0.693 is the β → 0 limit), far outside the 1e-12 tolerance below.
    exact = enumerate_log_z(Ising(4), 0.2)
    wrong = _naive_kaufman(4, 0.2, drop_k0_sign=True)
    assert_allclose(wrong - exact, 0.674211, rtol=1e-5)
    assert_allclose(_naive_kaufman(4, 0.2, drop_k0_sign=False), exact, rtol=1e-12)
    assert_allclose(kaufman_log_z(4, 4, 0.2, 0.2), exact, rtol=1e-12)
    # below T_c γ_0 > 0 and both versions agree; the sign matters only above
    assert_allclose(_naive_kaufman(4, 0.6, True), _naive_kaufman(4, 0.6, False), rtol=1e-14)


@pytest.mark.parametrize("L", [3, 4])
def test_transfer_matrix_matches_enumeration(L):
    for boundary in ("periodic", "open"):
        system = Ising(L, Jh=0.7, Jv=1.2, h=0.3, boundary=boundary)
        energies = enumerate_energies(system)
        for beta in (0.2, BETA_C, 0.9):
            assert_allclose(
                transfer_matrix_log_z(system, beta),
                _lse_log_z(energies, beta),
                rtol=1e-12,
                err_msg=f"{boundary} beta={beta}",
            )


def test_transfer_matrix_non_square_negative_couplings():
    for m, n, k_h, k_v, b_h in [(3, 4, -0.5, 0.4, 0.2), (4, 3, 0.6, -0.3, -0.1), (2, 5, 1, 1, 0)]:
        for boundary in ("periodic", "open"):
            assert_allclose(
                _transfer_log_z(m, n, k_h, k_v, b_h, boundary),
                _brute_log_z(m, n, k_h, k_v, b_h, periodic=boundary == "periodic"),
                rtol=1e-12,
            )


@pytest.mark.parametrize("L", [6, 8, 10])
def test_transfer_matrix_matches_kaufman(L):
    for jh, jv in ((1.0, 1.0), (0.5, 1.3)):
        system = Ising(L, Jh=jh, Jv=jv)
        for beta in (0.3, BETA_C, 0.7):
            assert_allclose(
                transfer_matrix_log_z(system, beta),
                kaufman_log_z(L, L, beta * jh, beta * jv),
                rtol=1e-12,
            )


def test_transfer_matrix_refuses_wide_lattice():
    with pytest.raises(ValueError, match="L = 13"):
        transfer_matrix_log_z(Ising(13, h=0.1), 0.4)


@pytest.mark.parametrize("L", [16, 32, 64])
def test_kaufman_float64_matches_mpmath(L):
    import mpmath  # noqa: F401  (in the [test] extra: a missing mpmath fails, it is not skipped)

    # 0.41 / 0.47 put |Lγ_0/2| on either side of 1 (the two ways Z_4's k = 0 factor is formed)
    for k_h, k_v in [(b, b) for b in (0.1, 0.3, 0.41, BETA_C, 0.47, 1.0, 3.0)] + [(0.2, 0.9)]:
        assert_allclose(
            kaufman_log_z(L, L, k_h, k_v),
            float(kaufman_log_z_mp(L, L, k_h, k_v, dps=50)),
            rtol=1e-13,
            err_msg=f"L={L} K=({k_h}, {k_v})",
        )


def test_exact_thermo_matches_enumeration():
    systems = [
        Ising(4),  # Kaufman path
        Ising(4, Jh=0.5, Jv=1.3),  # Kaufman path, anisotropic
        Ising(4, Jh=0.7, Jv=1.1, h=0.3, boundary="open"),  # transfer-matrix path
    ]
    for system in systems:
        for beta in (0.2, BETA_C, 0.7):
            got = ising_exact_thermo(system, beta)
            want = enumerate_thermo(system, beta)
            for key in ("log_z", "energy", "entropy", "heat_capacity"):
                assert_allclose(got[key], want[key], rtol=1e-10, err_msg=f"{system} {key}")


def test_exact_thermo_finite_differences_l16():
    L = 16
    for beta in (0.3, BETA_C):
        f = lambda b: kaufman_log_z(L, L, b, b)
        step = 1e-4
        got = ising_exact_thermo(Ising(L), beta)
        energy_fd = -(f(beta + step) - f(beta - step)) / (2 * step)
        heat_fd = beta**2 * (f(beta + step) - 2 * f(beta) + f(beta - step)) / step**2
        assert_allclose(got["energy"], energy_fd, rtol=1e-6)
        assert_allclose(got["heat_capacity"], heat_fd, rtol=1e-5)
        assert_allclose(got["entropy"], got["log_z"] + beta * got["energy"], rtol=1e-14)


def test_exact_thermo_at_infinite_temperature():
    n = 16
    for system in (Ising(4), Ising(4, h=0.5, boundary="open")):
        got = ising_exact_thermo(system, 0.0)
        assert_allclose(got["log_z"], n * math.log(2), rtol=1e-14)
        assert_allclose(got["entropy"], n * math.log(2), rtol=1e-14)
        assert_allclose([got["energy"], got["heat_capacity"]], [0.0, 0.0], atol=1e-12)


def _ising_torus_cft_constants():
    """Continuum limit of the critical Ising model on a square torus (Ferdinand & Fisher 1969).

    ln Z_L = L² f_∞ + ln Z_CFT + O(L⁻²) with Z_CFT = (θ₂ + θ₃ + θ₄) / (2η) at τ = i, and
    u_L = E/N = −√2 + a/L + O(L⁻³). The 1/L term comes from Kaufman's fourth product
    Z₄ = ∏_r 2 sinh(Lγ_{2r}/2), whose r = 0 factor vanishes at K_c with dγ₀/dK = 4: in the
    scaling limit dZ₄/dK = 4L ∏_{r≥1} 2 sinh(Lγ_{2r}/2) ∝ 4L η² against Z₁ + Z₂ + Z₃ ∝ Σ θ_ν/η,
    so a = −4η³/Σθ_ν = −2θ₂θ₃θ₄/Σθ_ν (Jacobi: θ₂θ₃θ₄ = 2η³). At τ = i: θ₃ = π^{1/4}/Γ(3/4),
    θ₂ = θ₄ = 2^{−1/4} θ₃, η = Γ(1/4)/(2π^{3/4}), so θ₃/η = √2 and Z_CFT = 2^{−1/2} + 2^{1/4}.
    """
    theta3 = math.pi**0.25 / math.gamma(0.75)
    theta2 = theta4 = 2.0**-0.25 * theta3
    eta = math.gamma(0.25) / (2.0 * math.pi**0.75)
    log_z_cft = math.log((theta2 + theta3 + theta4) / (2.0 * eta))
    amplitude = -2.0 * theta2 * theta3 * theta4 / (theta2 + theta3 + theta4)
    return log_z_cft, amplitude


def test_thermodynamic_limit_at_beta_c():
    """Kaufman's ln Z and u at K_c against Onsager's limit with the exact finite-size terms.

    After the bulk term L² f_∞ (Onsager: f_∞ = ln √2 + 2G/π, G Catalan's constant) and the
    universal torus term ln Z_CFT, the residual of ln Z_L is d₁/L² (1 + (d₂/d₁)/L² + ...); after
    −√2 and the universal a/L, that of u_L is e₁/L³ (1 + O(L⁻²)). Doubling L divides them by
    4 and 8 up to a relative (3/4)(d₂/d₁)/L²: the ±15 % window allows |d₂/d₁| up to 0.2 L² ≈ 51
    at L = 16. A wrong bulk term, torus term or amplitude leaves a residual O(1) or O(1/L),
    whose ratio under doubling is 1 or 2.
    """
    catalan = 0.915965594177219015054603514932
    onsager = 0.5 * math.log(2.0) + 2.0 * catalan / math.pi
    assert_allclose(onsager, 0.929695398341610, rtol=1e-14)
    log_z_cft, amplitude = _ising_torus_cft_constants()
    assert_allclose(log_z_cft, math.log(2.0**-0.5 + 2.0**0.25), rtol=1e-14)
    sizes = (16, 32, 64)
    res_f, res_u = [], []
    for L in sizes:
        res_f.append(kaufman_log_z(L, L, BETA_C, BETA_C) - L * L * onsager - log_z_cft)
        u = ising_exact_thermo(Ising(L), BETA_C)["energy"] / (L * L)
        res_u.append(u + math.sqrt(2.0) - amplitude / L)
    for k in range(len(sizes) - 1):
        assert 4 * 0.85 < res_f[k] / res_f[k + 1] < 4 * 1.15, (sizes[k], res_f)
        assert 8 * 0.85 < res_u[k] / res_u[k + 1] < 8 * 1.15, (sizes[k], res_u)


def test_dispatcher_routes():
    assert ising_exact_method(Ising(8), 0.4) == "kaufman"
    assert ising_exact_method(Ising(8, h=0.1), 0.4) == "transfer_matrix"
    assert ising_exact_method(Ising(8, boundary="open"), 0.4) == "transfer_matrix"
    assert ising_exact_method(Ising(3, Jh=-1.0), 0.4) == "transfer_matrix"  # frustrated
    assert ising_exact_method(SherringtonKirkpatrick(10), 0.4) == "enumeration"
    assert ising_exact_method(Ising(20, h=0.1), 0.4) is None
    assert ising_exact_method(SherringtonKirkpatrick(24), 0.4) is None

    assert Ising(20, h=0.1).exact_log_z(0.4) is None
    assert ising_exact_thermo(Ising(20, h=0.1), 0.4) is None
    assert_allclose(Ising(20).exact_log_z(0.4), kaufman_log_z(20, 20, 0.4, 0.4), rtol=1e-15)
    frustrated = Ising(3, Jh=-1.0, Jv=0.5)
    assert_allclose(frustrated.exact_log_z(0.4), enumerate_log_z(frustrated, 0.4), rtol=1e-12)
    sk = SherringtonKirkpatrick(10)
    assert_allclose(ising_exact_log_z(sk, 0.7), enumerate_log_z(sk, 0.7), rtol=1e-14)
    assert_allclose(
        ising_exact_thermo(sk, 0.7)["energy"], enumerate_thermo(sk, 0.7)["energy"], rtol=1e-14
    )


def test_enumerate_thermo_spin_glasses():
    ea = EdwardsAnderson(3, seed=1)
    n = ea.n_spins
    # β = 0: uniform states, ⟨|m|⟩ = 2^−N Σ_k C(N, k) |2k − N| / N, χ = 0
    got = enumerate_thermo(ea, 0.0)
    abs_m = sum(math.comb(n, k) * abs(2 * k - n) for k in range(n + 1)) / n / 2**n
    assert_allclose(got["abs_magnetisation"], abs_m, rtol=1e-14)
    assert got["susceptibility"] == 0.0
    assert_allclose(got["log_z"], n * math.log(2), rtol=1e-14)
    # derivatives of ln Z by finite differences
    sk = SherringtonKirkpatrick(12, seed=3)
    beta, step = 1.3, 1e-4
    got = enumerate_thermo(sk, beta)
    energies = enumerate_energies(sk)
    f = lambda b: _lse_log_z(energies, b)
    assert_allclose(got["log_z"], f(beta), rtol=1e-14)
    assert_allclose(got["energy"], -(f(beta + step) - f(beta - step)) / (2 * step), rtol=1e-6)
    heat_fd = beta**2 * (f(beta + step) - 2 * f(beta) + f(beta - step)) / step**2
    assert_allclose(got["heat_capacity"], heat_fd, rtol=1e-5)
    assert 0.0 < got["abs_magnetisation"] <= 1.0 and got["susceptibility"] >= 0.0


def test_enumerate_thermo_magnetisation_low_temperature():
    # a ferromagnet deep in the ordered phase: ⟨|m|⟩ → 1, χ → 0, S → ln 2 (two ground states)
    got = enumerate_thermo(Ising(4), 3.0)
    assert_allclose(got["abs_magnetisation"], 1.0, atol=1e-9)
    assert_allclose(got["entropy"], math.log(2.0), rtol=1e-6)
    assert 0.0 <= got["susceptibility"] < 1e-8
