/* The float sigmoid / SiLU of qvision_kernels/include/qv_fsimd.h (qv_f_act_array: 16-lane blocks and a
 * masked tail) against double-precision exp, for the variant the build defines (QV_ISA_*).  Prints
 * "<variant>: <n> checked, <k> failed, max rel <e>" and returns non-zero on any failure.  Run by
 * test/test_kernels_fconv.py for the x86 variants natively and the Arm ones under qemu. */
#include <math.h>
#include <stdio.h>
#include "qv_fsimd.h"

#define N 4099                  /* odd: the last block is a masked tail */
#define RTOL 3e-7
#define TINY 1e-35

static unsigned lcg(unsigned *s) { *s = *s * 1664525u + 1013904223u; return *s >> 8; }

int main(void)
{
    static float x[N], y[N];
    const float special[] = {0.0f, -0.0f, 100.0f, -100.0f, 1e30f, -1e30f, 87.33f, -87.33f, -87.34f, 88.8f,
                             -88.8f, 3.4e38f, -3.4e38f, 1e-30f, -1e-30f, 0.5f, -0.5f};
    const int nspecial = (int)(sizeof special / sizeof special[0]);
    unsigned seed = 12345u;
    long checked = 0, failed = 0;
    double worst = 0.0;
    for (int round = 0; round < 40; round++) {
        const double span = round % 4 == 0 ? 110.0 : round % 4 == 1 ? 20.0 : round % 4 == 2 ? 3.0 : 1e-3;
        for (int i = 0; i < N; i++)
            x[i] = i < nspecial && round == 0 ? special[i] : (float)(((double)lcg(&seed) / 16777216.0 * 2 - 1) * span);
        for (int act = QV_ACT_SIGMOID; act <= QV_ACT_SILU; act++) {
            qv_f_act_array(x, y, N, act);
            for (int i = 0; i < N; i++) {
                double ref = 1.0 / (1.0 + exp(-(double)x[i]));
                if (act == QV_ACT_SILU) ref *= x[i];
                const double err = fabs(y[i] - ref);
                int ok = err <= TINY || err <= RTOL * fabs(ref);
                if (x[i] == 0.0f && act == QV_ACT_SILU) ok = ok && signbit(y[i]) == signbit(x[i]);
                if (!ok && failed++ < 5) printf("x=%.9g act=%d got %.9g want %.9g\n", x[i], act, y[i], ref);
                if (fabs(ref) > TINY && err / fabs(ref) > worst) worst = err / fabs(ref);
                checked++;
            }
        }
    }
    x[0] = NAN;
    qv_f_act_array(x, y, 1, QV_ACT_SIGMOID);
    if (!isnan(y[0])) { failed++; printf("sigmoid(NaN) = %g\n", y[0]); }
    printf("%s: %ld checked, %ld failed, max rel %.3g\n", qv_f_isa_name(), checked, failed, worst);
    return failed != 0;
}
