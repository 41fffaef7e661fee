/*
 * Checks one build of qvision_kernels/include/qv_simd.h (the QV_ISA_* macro given on the command line)
 * against plain scalar C: the dot-product step, requantise-and-store (with partial stores) and the
 * depthwise multiply-accumulate.  Compiled and run by test/test_simd_shim.py, natively for the x86
 * variants and under qemu-aarch64 for the Arm ones.  Exit status 0 and "N passed, 0 failed" on success.
 */
#include <stdio.h>
#include <stdlib.h>
#include <math.h>
#include "qv_simd.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return (uint32_t)(rng_state >> 16);
}

static int failures = 0, checks = 0;

static void check(int ok, const char *what, int trial, int lane, long got, long want)
{
    checks++;
    if (!ok) {
        failures++;
        if (failures < 20)
            fprintf(stderr, "FAIL %s (%s) trial %d lane %d: got %ld want %ld\n", what, qv_isa_name(), trial,
                    lane, got, want);
    }
}

/* The scalar definition of requantisation (DESIGN.md section 3). */
static uint8_t ref_requant(int32_t acc, float mult, int32_t zp, int lo, int hi)
{
    float v = (float)acc * mult;
    long r = lrintf(v) + zp;
    return (uint8_t)(r < lo ? lo : (r > hi ? hi : r));
}

int main(void)
{
    int8_t w[64 * 64];
    uint8_t x[4 * 64];
    int32_t bias[16], got[16], want[16];
    float mult[16];
    uint8_t out[32];
    int32_t wdw[16];
    for (int trial = 0; trial < 2000; trial++) {
        int quads = 1 + (int)(rnd() % 64);
        int extreme = trial % 7 == 0;
        for (int i = 0; i < 64 * quads; i++) w[i] = extreme ? (rnd() & 1 ? 127 : -127) : (int8_t)((int)(rnd() % 255) - 127);
        for (int i = 0; i < 4 * quads; i++) x[i] = extreme ? 255 : (uint8_t)rnd();
        for (int l = 0; l < 16; l++) bias[l] = (int32_t)(rnd() % 200001) - 100000;
        /* dot products */
        qv_acc acc = qv_acc_load(bias);
        for (int q = 0; q < quads; q++) acc = qv_dot(acc, qv_a_bcast(x + 4 * q), qv_w_load(w + 64 * q));
        qv_store_i32(acc, got);
        for (int l = 0; l < 16; l++) {
            long s = bias[l];
            for (int q = 0; q < quads; q++)
                for (int j = 0; j < 4; j++)
                    s += (long)(x[4 * q + j] - QV_ACT_OFFSET) * w[64 * q + 4 * l + j];
            want[l] = (int32_t)s;
            check(got[l] == want[l], "qv_dot", trial, l, got[l], want[l]);
        }
        /* requantise and store n lanes; the bytes after them must stay untouched */
        int n = 1 + (int)(rnd() % 16);
        int zp = (int)(rnd() % 256);
        int lo = (int)(rnd() % 256), hi = (int)(rnd() % 256);
        if (lo > hi) { int t = lo; lo = hi; hi = t; }
        if (trial % 5 == 0) { lo = 0; hi = 255; }
        for (int l = 0; l < 16; l++) {
            mult[l] = (float)(rnd() % 100000) * (trial % 3 == 0 ? 1e-3f : 1e-7f);
            if (trial % 11 == 0) want[l] = (int32_t)(rnd() % 2001) - 1000;  /* ties and small values */
        }
        if (trial % 11 == 0) for (int l = 0; l < 16; l++) mult[l] = 0.5f;   /* exact .5 ties */
        memset(out, 0xAB, sizeof out);
        qv_requant_store(qv_acc_load(want), mult, (float)(lo - zp), (float)(hi - zp), zp, out, n);
        for (int l = 0; l < 16; l++) {
            if (l < n) {
                uint8_t r = ref_requant(want[l], mult[l], zp, lo, hi);
                check(out[l] == r, "qv_requant_store", trial, l, out[l], r);
            } else {
                check(out[l] == 0xAB, "qv_requant_store wrote past n", trial, l, out[l], 0xAB);
            }
        }
        /* depthwise multiply-accumulate: weights as the low 16 bits of int32 lanes */
        for (int l = 0; l < 16; l++) wdw[l] = ((int32_t)(int8_t)((int)(rnd() % 255) - 127)) & 0xFFFF;
        acc = qv_dw_mac(qv_acc_load(bias), x, wdw);
        qv_store_i32(acc, got);
        for (int l = 0; l < 16; l++) {
            int32_t e = bias[l] + (int32_t)x[l] * (int16_t)(wdw[l] & 0xFFFF);
            check(got[l] == e, "qv_dw_mac", trial, l, got[l], e);
        }
    }
    printf("%s: %d passed, %d failed\n", qv_isa_name(), checks - failures, failures);
    return failures != 0;
}
