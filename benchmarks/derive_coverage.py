"""Derivation of the O(1/n) coverage term in tests/stat_theory.py (symbolic, needs sympy).

The delta-method interval of importance sampling is ln X̄ ± σ̂/(√n X̄), σ̂² = (1/n)Σ(X − X̄)².
With Y = (X − μ)/σ, c = σ/μ, A = mean(Y), B = mean(Y²) − 1 (both O(n^{-1/2})), the studentised
statistic is z = √n (1 + cA) ln(1 + cA) / (c √(1 + B − A²)). Its first four cumulants follow
from the joint cumulants of (√n A, √n B) (order r: n^{1−r/2} times the population cumulant of
(Y, Y² − 1)); the two-sided Edgeworth expansion then gives

    P(|z| ≤ 1) = 2Φ(1) − 1 − (2φ(1)/n) p₂(1),  p₂(1) = 1 + κ/6 + cγ/3 − 13c²/24.

    python3 benchmarks/derive_coverage.py      (about a minute; prints k11, k22, k31, k41, p2)
"""

import itertools

import sympy as sp


def main():
    a, b, h, c, s, t = sp.symbols("a b h c s t")
    y = sp.symbols("Y")
    m3, m4, m5, m6, m7, m8 = sp.symbols("m3 m4 m5 m6 m7 m8")
    mom = {0: 1, 1: 0, 2: 1, 3: m3, 4: m4, 5: m5, 6: m6, 7: m7, 8: m8}

    z = sp.log(1 + c * h * a) * (1 + c * h * a) / (c * sp.sqrt(1 + h * b - (h * a) ** 2)) / h
    z = sp.expand(sp.series(z, h, 0, 3).removeO())

    def expect(expr):
        p = sp.Poly(sp.expand(expr), y)
        return sum(coef * mom[k[0]] for k, coef in zip(p.monoms(), p.coeffs(), strict=True))

    u = [y, y**2 - 1]

    def k2(i, j):
        return expect(u[i] * u[j])

    def k3(i, j, k):
        return expect(u[i] * u[j] * u[k])

    def k4(i, j, k, m):
        pairs = k2(i, j) * k2(k, m) + k2(i, k) * k2(j, m) + k2(i, m) * k2(j, k)
        return expect(u[i] * u[j] * u[k] * u[m]) - pairs

    v = [s, t]
    cgf = sum(k2(i, j) * v[i] * v[j] / 2 for i, j in itertools.product(range(2), repeat=2))
    cgf += sum(
        h * k3(*ix) * sp.Mul(*[v[q] for q in ix]) / 6
        for ix in itertools.product(range(2), repeat=3)
    )
    cgf += sum(
        h**2 * k4(*ix) * sp.Mul(*[v[q] for q in ix]) / 24
        for ix in itertools.product(range(2), repeat=4)
    )
    cgf = sp.expand(cgf)

    def trunc(e):
        e = sp.expand(e)
        return sum(e.coeff(h, k) * h**k for k in range(3))

    mgf, term = 1, 1
    for n in range(1, 9):
        term = trunc(term * cgf / n)
        mgf += term
    mgf = sp.Poly(sp.expand(mgf), s, t)
    cache = {}

    def e_ab(expr):
        p = sp.Poly(sp.expand(expr), a, b)
        out = 0
        for (i, j), coef in zip(p.monoms(), p.coeffs(), strict=True):
            if (i, j) not in cache:
                cache[(i, j)] = mgf.coeff_monomial(s**i * t**j) * sp.factorial(i) * sp.factorial(j)
            out += coef * cache[(i, j)]
        return trunc(out)

    mz = {k: e_ab(trunc(z**k)) for k in range(1, 5)}
    c1 = mz[1]
    c2 = trunc(mz[2] - c1**2)
    c3 = trunc(mz[3] - 3 * mz[2] * c1 + 2 * c1**3)
    c4 = trunc(mz[4] - 4 * mz[3] * c1 - 3 * mz[2] ** 2 + 12 * mz[2] * c1**2 - 6 * c1**4)
    k11, k22 = sp.simplify(c1.coeff(h, 1)), sp.simplify(c2.coeff(h, 2))
    k31, k41 = sp.simplify(c3.coeff(h, 1)), sp.simplify(c4.coeff(h, 2))
    gamma, kappa = sp.symbols("gamma kappa")
    sub = {m3: gamma, m4: kappa + 3}
    for name, val in (("k11", k11), ("k22", k22), ("k31", k31), ("k41", k41)):
        print(name, "=", sp.factor(val.subs(sub)))
    p2 = (k22 + k11**2) / 2 + (k41 + 4 * k11 * k31) * (-2) / 24 + k31**2 * 6 / 72
    print("p2(1) =", sp.expand(p2.subs(sub)))


if __name__ == "__main__":
    main()
