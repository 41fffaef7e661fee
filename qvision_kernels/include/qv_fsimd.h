/*
 * qv_fsimd.h - the instruction-set shim under the float32 kernels of qvision_kernels (_fconv.pyx.tp).
 *
 * The Cython template holds the algorithm (tiling, loops, threads); this header maps a few operations on
 * "16 float32 lanes" (qv_fv, one block of 16 output channels or 16 depthwise channels) onto the
 * instruction set the build defines for each generated module:
 *
 *   QV_ISA_AVX512VNNI   one __m512 register per 16 lanes, VFMADD231PS, masked loads and stores
 *   QV_ISA_AVXVNNI      two __m256 registers per 16 lanes, FMA3 (float needs nothing from AVX-VNNI)
 *   QV_ISA_AVX2         the same as QV_ISA_AVXVNNI
 *   QV_ISA_GENERIC      plain C loops over 16 lanes (any architecture; the compiler vectorises them)
 *
 * qv_fb is one input float broadcast to all lanes (a plain float in the generic build).
 *
 * The fused activation is a clamp to [lo, hi] (lo = -inf, hi = +inf when there is none), written as
 * min(hi, max(lo, v)) with v the SECOND operand of MAXPS/MINPS: those instructions return their second
 * operand when either is NaN, so a NaN result propagates to the output as it does in NumPy.
 *
 * Partial blocks (n < 16 valid lanes) use masked loads and stores, which never touch the memory of the
 * masked-off lanes (no fault past the end of an array).
 */
#ifndef QV_FSIMD_H
#define QV_FSIMD_H

#include <string.h>

#if defined(QV_ISA_AVX512VNNI) || defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)
#include <immintrin.h>
#endif

/* ------------------------------------------------------------------------------------------------- */
#if defined(QV_ISA_AVX512VNNI)

#define QV_F_ISA_NAME "avx512vnni"
typedef __m512 qv_fv;
typedef __m512 qv_fb;

static inline __mmask16 qv__fmask(int n) { return (__mmask16)((1u << n) - 1u); }

static inline qv_fv qv_fv_load(const float *p) { return _mm512_loadu_ps(p); }
static inline qv_fv qv_fv_load_n(const float *p, int n)
{
    return n >= 16 ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(qv__fmask(n), p);
}
static inline qv_fb qv_fb_bcast(const float *p) { return _mm512_set1_ps(*p); }
static inline qv_fv qv_fv_fma(qv_fv acc, qv_fb a, qv_fv w) { return _mm512_fmadd_ps(a, w, acc); }
static inline qv_fv qv_fv_fmav(qv_fv acc, qv_fv a, qv_fv w) { return _mm512_fmadd_ps(a, w, acc); }

static inline void qv_fv_store_act(qv_fv v, float lo, float hi, float *dst, int n)
{
    v = _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), v));
    if (n >= 16) _mm512_storeu_ps(dst, v);
    else _mm512_mask_storeu_ps(dst, qv__fmask(n), v);
}

/* ------------------------------------------------------------------------------------------------- */
#elif defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)

#if defined(QV_ISA_AVXVNNI)
#define QV_F_ISA_NAME "avxvnni"
#else
#define QV_F_ISA_NAME "avx2"
#endif
typedef struct { __m256 lo, hi; } qv_fv;
typedef __m256 qv_fb;

/* Lanes [0, n) of 8 set (n may be <= 0 or >= 8). */
static inline __m256i qv__fmask8(int n)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static inline qv_fv qv_fv_load(const float *p)
{
    qv_fv r;
    r.lo = _mm256_loadu_ps(p);
    r.hi = _mm256_loadu_ps(p + 8);
    return r;
}
static inline qv_fv qv_fv_load_n(const float *p, int n)
{
    qv_fv r;
    if (n >= 16) return qv_fv_load(p);
    r.lo = _mm256_maskload_ps(p, qv__fmask8(n));
    r.hi = _mm256_maskload_ps(p + 8, qv__fmask8(n - 8));
    return r;
}
static inline qv_fb qv_fb_bcast(const float *p) { return _mm256_broadcast_ss(p); }
static inline qv_fv qv_fv_fma(qv_fv acc, qv_fb a, qv_fv w)
{
    acc.lo = _mm256_fmadd_ps(a, w.lo, acc.lo);
    acc.hi = _mm256_fmadd_ps(a, w.hi, acc.hi);
    return acc;
}
static inline qv_fv qv_fv_fmav(qv_fv acc, qv_fv a, qv_fv w)
{
    acc.lo = _mm256_fmadd_ps(a.lo, w.lo, acc.lo);
    acc.hi = _mm256_fmadd_ps(a.hi, w.hi, acc.hi);
    return acc;
}

static inline void qv_fv_store_act(qv_fv v, float lo, float hi, float *dst, int n)
{
    const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
    __m256 a = _mm256_min_ps(h, _mm256_max_ps(l, v.lo));
    __m256 b = _mm256_min_ps(h, _mm256_max_ps(l, v.hi));
    if (n >= 16) {
        _mm256_storeu_ps(dst, a);
        _mm256_storeu_ps(dst + 8, b);
    } else {
        _mm256_maskstore_ps(dst, qv__fmask8(n), a);
        _mm256_maskstore_ps(dst + 8, qv__fmask8(n - 8), b);
    }
}

/* ------------------------------------------------------------------------------------------------- */
#else  /* QV_ISA_GENERIC */

#define QV_F_ISA_NAME "generic"
typedef struct { float v[16]; } qv_fv;
typedef float qv_fb;

static inline qv_fv qv_fv_load(const float *p) { qv_fv r; memcpy(r.v, p, sizeof r.v); return r; }
static inline qv_fv qv_fv_load_n(const float *p, int n)
{
    qv_fv r;
    for (int l = 0; l < 16; l++) r.v[l] = l < n ? p[l] : 0.0f;
    return r;
}
static inline qv_fb qv_fb_bcast(const float *p) { return *p; }
static inline qv_fv qv_fv_fma(qv_fv acc, qv_fb a, qv_fv w)
{
    for (int l = 0; l < 16; l++) acc.v[l] += a * w.v[l];
    return acc;
}
static inline qv_fv qv_fv_fmav(qv_fv acc, qv_fv a, qv_fv w)
{
    for (int l = 0; l < 16; l++) acc.v[l] += a.v[l] * w.v[l];
    return acc;
}
static inline void qv_fv_store_act(qv_fv v, float lo, float hi, float *dst, int n)
{
    for (int l = 0; l < n && l < 16; l++) {
        float x = v.v[l];
        x = lo > x ? lo : x;    /* a NaN x fails both comparisons and is kept */
        x = hi < x ? hi : x;
        dst[l] = x;
    }
}

#endif

static inline const char *qv_f_isa_name(void) { return QV_F_ISA_NAME; }

#endif /* QV_FSIMD_H */
