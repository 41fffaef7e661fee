/*
 * qv_lut.h - 256-entry byte table lookup, y[i] = t[x[i]], for the lookup-table activations.
 *
 * The scalar loop moves about one byte per cycle.  With AVX-512 VBMI, 64 bytes take two VPERMI2B (each
 * looks up 128 entries held in two registers, selected by index bits 0-6) and a blend on index bit 7.
 * VBMI is not implied by any build variant's flags (Cascade Lake has VNNI but not VBMI), so that path is
 * compiled for its own target and chosen at run time by the caller (qv_lut_has_vbmi()).
 */
#ifndef QV_LUT_H
#define QV_LUT_H

#include <stddef.h>
#include <stdint.h>

static inline void qv_lut_scalar(const uint8_t *x, const uint8_t *t, uint8_t *y, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = t[x[i]];
}

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <immintrin.h>
#define QV_LUT_HAVE_VBMI 1

static int qv_lut_has_vbmi(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
           && __builtin_cpu_supports("avx512vbmi");
}

__attribute__((target("avx512f,avx512bw,avx512vbmi")))
static void qv_lut_vbmi(const uint8_t *x, const uint8_t *t, uint8_t *y, size_t n)
{
    const __m512i t0 = _mm512_loadu_si512((const void *)t), t1 = _mm512_loadu_si512((const void *)(t + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(t + 128));
    const __m512i t3 = _mm512_loadu_si512((const void *)(t + 192));
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512i idx = _mm512_loadu_si512((const void *)(x + i));
        __m512i lo = _mm512_permutex2var_epi8(t0, idx, t1);
        __m512i hi = _mm512_permutex2var_epi8(t2, idx, t3);
        _mm512_storeu_si512((void *)(y + i), _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
    }
    if (i < n) {
        __mmask64 m = (__mmask64)(~0ULL >> (64 - (n - i)));
        __m512i idx = _mm512_maskz_loadu_epi8(m, x + i);
        __m512i lo = _mm512_permutex2var_epi8(t0, idx, t1);
        __m512i hi = _mm512_permutex2var_epi8(t2, idx, t3);
        _mm512_mask_storeu_epi8(y + i, m, _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi));
    }
}
#else
#define QV_LUT_HAVE_VBMI 0
static int qv_lut_has_vbmi(void) { return 0; }
static void qv_lut_vbmi(const uint8_t *x, const uint8_t *t, uint8_t *y, size_t n) { qv_lut_scalar(x, t, y, n); }
#endif

/* y = t[x] over n bytes, with VBMI when vbmi is non-zero (the caller checked qv_lut_has_vbmi()). */
static inline void qv_lut(const uint8_t *x, const uint8_t *t, uint8_t *y, size_t n, int vbmi)
{
    if (vbmi) qv_lut_vbmi(x, t, y, n);
    else qv_lut_scalar(x, t, y, n);
}

#endif
