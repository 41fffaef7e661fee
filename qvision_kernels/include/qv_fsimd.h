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
 * The fused activation (qv_fv_store_act's act, QV_ACT_*) is applied in registers before the store (the
 * micro-kernels of the 16-register builds store first and apply a sigmoid / SiLU to the rows they have
 * just written, qv_f_act_array, see _fconv.pyx.tp):
 *
 *   QV_ACT_CLAMP    a clamp to [lo, hi] (lo = -inf, hi = +inf when there is none), written as
 *                   min(hi, max(lo, v)) with v the SECOND operand of MAXPS/MINPS: those instructions
 *                   return their second operand when either is NaN, so a NaN result propagates to the
 *                   output as it does in NumPy;
 *   QV_ACT_SIGMOID  1 / (1 + exp(-v));
 *   QV_ACT_SILU     v / (1 + exp(-v)).
 *
 * Sigmoid and SiLU (qv_fv_sigmoid) share one formula in every variant.  With a = |v| and
 * e = exp(-a) in (0, 1] (never overflows):
 *     sigmoid(v) = 1 / (1 + e)  for v >= 0,   e / (1 + e)      for v < 0
 *     silu(v)    = v / (1 + e)  for v >= 0,   (v * e) / (1 + e) for v < 0
 * one division each (AVX-512: a 14-bit reciprocal refined by a Newton step, then a product: the
 * division's throughput would set the speed).  exp(-a): a clamped to QV_EXP_BOUND (exp(-87.33) is just above the
 * smallest normal float, so 2^n below stays a normal number), n = round(-a * log2(e)), r = -a - n * ln2
 * in [-ln2/2, ln2/2] (ln2 split in a 9-bit head, exact in the product with n, and a tail), exp(r) by a
 * degree-6 polynomial ((r + r^2 * (c2 + ... + c6 r^4)) + 1, fitted for relative error on that interval:
 * 4e-9 before float32 rounding), then times 2^n built in the exponent bits.  Where a > QV_EXP_BOUND, e
 * is taken as 0: sigmoid saturates to exactly 0 / 1 and silu to -0 / v, for any magnitude (1e30
 * included).  A NaN input fails every comparison and stays NaN.  Maximum relative error measured on
 * millions of inputs: 2.0e-7 (sigmoid) and 2.5e-7 (SiLU), about 2 ulp; the variants differ in the last
 * bit (the SIMD ones fuse multiply-adds, the generic one does not).
 *
 * Partial blocks (n < 16 valid lanes) use masked loads and stores, which never touch the memory of the
 * masked-off lanes (no fault past the end of an array).
 */
#ifndef QV_FSIMD_H
#define QV_FSIMD_H

#include <math.h>
#include <string.h>

#if defined(QV_ISA_AVX512VNNI) || defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)
#include <immintrin.h>
#endif

enum { QV_ACT_CLAMP = 0, QV_ACT_SIGMOID = 1, QV_ACT_SILU = 2 };

/* The store with its activation is inlined into every micro-kernel even where the compiler finds it
 * large: a call would make it spill every accumulator register (all vector registers are caller-saved). */
#if defined(__GNUC__)
#define QV_FINLINE static inline __attribute__((always_inline))
#elif defined(_MSC_VER)
#define QV_FINLINE static __forceinline
#else
#define QV_FINLINE static inline
#endif

#define QV_EXP_BOUND 87.33f
#define QV_LOG2E 1.44269504f
#define QV_LN2_HI 0.693359375f
#define QV_LN2_LO (-2.12194440e-4f)
#define QV_EXP_C2 0.49999988f
#define QV_EXP_C3 0.16666518f
#define QV_EXP_C4 0.041669533f
#define QV_EXP_C5 0.008368916f
#define QV_EXP_C6 0.0013751407f
#define QV_ROUND_MAGIC 12582912.0f      /* 1.5 * 2^23: (v + M) - M rounds |v| < 2^22 to nearest, even */

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

/* exp(u) of 16 lanes, u <= 0 (the exp at the top of this file): 0 below -QV_EXP_BOUND, NaN kept. */
QV_FINLINE __m512 qv__fexp512(__m512 u)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 t = _mm512_max_ps(_mm512_set1_ps(-QV_EXP_BOUND), u);          /* NaN stays NaN */
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(t, _mm512_set1_ps(QV_LOG2E)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(QV_LN2_HI), t);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(QV_LN2_LO), r);
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(QV_EXP_C6), r, _mm512_set1_ps(QV_EXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QV_EXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QV_EXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(QV_EXP_C2));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r), one);
    /* e = p * 2^n (n >= -126: exact); 0 where u < -QV_EXP_BOUND */
    return _mm512_maskz_scalef_ps(_mm512_cmp_ps_mask(u, _mm512_set1_ps(-QV_EXP_BOUND), _CMP_NLT_UQ), p, n);
}

/* sigmoid (silu = 0) or silu (silu = 1) of 16 lanes: the formula at the top of this file. */
QV_FINLINE __m512 qv__fsig512(__m512 x, int silu)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    const __m512 e = qv__fexp512(_mm512_or_ps(x, _mm512_set1_ps(-0.0f)));       /* exp(-|x|) */
    const __m512 d = _mm512_add_ps(one, e);
    const __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_NGE_UQ);   /* x < 0 or NaN */
    const __m512 num = silu ? _mm512_mask_mul_ps(x, neg, x, e) : _mm512_mask_mov_ps(one, neg, e);
    /* num / d as num * (1 / d): a 14-bit reciprocal and one Newton step, y + y (1 - d y) (relative error
     * about 2^-28 before rounding; d is in [1, 2]).  Cheaper than a division, whose throughput would set
     * the speed; infinities and signed zeros of num go through unchanged. */
    const __m512 y0 = _mm512_rcp14_ps(d);
    const __m512 y = _mm512_fmadd_ps(_mm512_fnmadd_ps(d, y0, one), y0, y0);
    return _mm512_mul_ps(num, y);
}

QV_FINLINE qv_fv qv_fv_sigmoid(qv_fv v, int silu) { return qv__fsig512(v, silu); }

QV_FINLINE void qv_fv_store_act(qv_fv v, int act, float lo, float hi, float *dst, int n)
{
    if (act == QV_ACT_CLAMP) v = _mm512_min_ps(_mm512_set1_ps(hi), _mm512_max_ps(_mm512_set1_ps(lo), v));
    else v = qv__fsig512(v, act == QV_ACT_SILU);
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

/* exp(-a) of 8 lanes, a >= 0 (the exp at the top of this file): 0 above QV_EXP_BOUND, NaN kept. */
QV_FINLINE __m256 qv__fexpneg256(__m256 a)
{
    const __m256 t = _mm256_min_ps(_mm256_set1_ps(QV_EXP_BOUND), a);    /* NaN stays NaN */
    const __m256 m = _mm256_set1_ps(QV_ROUND_MAGIC);
    __m256 n = _mm256_sub_ps(_mm256_fnmadd_ps(t, _mm256_set1_ps(QV_LOG2E), m), m);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(QV_LN2_HI), _mm256_sub_ps(_mm256_setzero_ps(), t));
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(QV_LN2_LO), r);
    __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(QV_EXP_C6), r, _mm256_set1_ps(QV_EXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(QV_EXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(QV_EXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(QV_EXP_C2));
    p = _mm256_add_ps(_mm256_fmadd_ps(p, _mm256_mul_ps(r, r), r), _mm256_set1_ps(1.0f));
    const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    const __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
    return _mm256_andnot_ps(_mm256_cmp_ps(a, _mm256_set1_ps(QV_EXP_BOUND), _CMP_GT_OQ), e);
}

/* sigmoid (silu = 0) or silu (silu = 1) of 8 lanes: the formula at the top of this file. */
QV_FINLINE __m256 qv__fsig256(__m256 x, int silu)
{
    const __m256 e = qv__fexpneg256(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), x));    /* exp(-|x|) */
    const __m256 d = _mm256_add_ps(_mm256_set1_ps(1.0f), e);
    const __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_NGE_UQ);        /* x < 0 or NaN */
    __m256 num = silu ? _mm256_blendv_ps(x, _mm256_mul_ps(x, e), neg)
                      : _mm256_blendv_ps(_mm256_set1_ps(1.0f), e, neg);
    return _mm256_div_ps(num, d);
}

QV_FINLINE qv_fv qv_fv_sigmoid(qv_fv v, int silu)
{
    v.lo = qv__fsig256(v.lo, silu);
    v.hi = qv__fsig256(v.hi, silu);
    return v;
}

QV_FINLINE void qv_fv_store_act(qv_fv v, int act, float lo, float hi, float *dst, int n)
{
    __m256 a, b;
    if (act == QV_ACT_CLAMP) {
        const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
        a = _mm256_min_ps(h, _mm256_max_ps(l, v.lo));
        b = _mm256_min_ps(h, _mm256_max_ps(l, v.hi));
    } else {
        a = qv__fsig256(v.lo, act == QV_ACT_SILU);
        b = qv__fsig256(v.hi, act == QV_ACT_SILU);
    }
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
/* exp(-a) of one float, a >= 0 (the exp at the top of this file): 0 above QV_EXP_BOUND, NaN kept;
 * written without branches so that the compiler vectorises loops over lanes. */
QV_FINLINE float qv__fexpneg1(float a)
{
    union { float f; unsigned u; } y, s;
    const float t = a > QV_EXP_BOUND ? QV_EXP_BOUND : a;                /* NaN stays NaN */
    y.f = QV_ROUND_MAGIC - t * QV_LOG2E;        /* bits: those of the magic number + n */
    const float n = y.f - QV_ROUND_MAGIC;
    float r = -t - n * QV_LN2_HI;
    r = r - n * QV_LN2_LO;
    float p = QV_EXP_C6 * r + QV_EXP_C5;
    p = p * r + QV_EXP_C4;
    p = p * r + QV_EXP_C3;
    p = p * r + QV_EXP_C2;
    p = (p * (r * r) + r) + 1.0f;
    s.u = (y.u - 0x4B400000u + 127u) << 23;     /* 2^n (unsigned: no undefined shift for a NaN) */
    const float e = p * s.f;
    return a > QV_EXP_BOUND ? 0.0f : e;
}

/* sigmoid (silu = 0) or silu (silu = 1) of one float: the formula at the top of this file. */
QV_FINLINE float qv__fsig1(float x, int silu)
{
    const float e = qv__fexpneg1(fabsf(x));
    /* every operand computed unconditionally, then selected: no branch the vectoriser must keep */
    const float xe = x * e, d = 1.0f + e;
    const float pos = silu ? x : 1.0f, neg = silu ? xe : e;
    return (x >= 0.0f ? pos : neg) / d;
}

QV_FINLINE qv_fv qv_fv_sigmoid(qv_fv v, int silu)
{
    for (int l = 0; l < 16; l++) v.v[l] = qv__fsig1(v.v[l], silu);
    return v;
}

QV_FINLINE void qv_fv_store_act(qv_fv v, int act, float lo, float hi, float *dst, int n)
{
    if (act != QV_ACT_CLAMP) v = qv_fv_sigmoid(v, act == QV_ACT_SILU);
    for (int l = 0; l < n && l < 16; l++) {
        float x = v.v[l];
        if (act == QV_ACT_CLAMP) {
            x = lo > x ? lo : x;    /* a NaN x fails both comparisons and is kept */
            x = hi < x ? hi : x;
        }
        dst[l] = x;
    }
}

#endif

#if defined(__GNUC__)
#define QV_FNOINLINE static __attribute__((noinline))
#else
#define QV_FNOINLINE static
#endif

/* dst[0, n) = act(src[0, n)), act QV_ACT_SIGMOID or QV_ACT_SILU, 16 lanes at a time and a masked tail;
 * dst may be src.  The standalone kernel, and the epilogue of the micro-kernels that apply their
 * activation after the store (on the rows they have just written, in L1): with 16 vector registers the
 * in-register epilogue would spill the accumulators. */
QV_FNOINLINE void qv_f_act_array(const float *src, float *dst, long n, int act)
{
    long k = 0;
    for (; k + 16 <= n; k += 16) qv_fv_store_act(qv_fv_load(src + k), act, 0.0f, 0.0f, dst + k, 16);
    if (k < n) qv_fv_store_act(qv_fv_load_n(src + k, (int)(n - k)), act, 0.0f, 0.0f, dst + k, (int)(n - k));
}

/* dst[0, n) = exp(src[0, n)) for src <= 0 (softmax's x - max): the exp of the sigmoid above, 0 below
 * -QV_EXP_BOUND, NaN kept; dst may be src. */
QV_FNOINLINE void qv_f_exp_array(const float *src, float *dst, long n)
{
    long k = 0;
#if defined(QV_ISA_AVX512VNNI)
    for (; k + 16 <= n; k += 16) _mm512_storeu_ps(dst + k, qv__fexp512(_mm512_loadu_ps(src + k)));
    if (k < n) {
        const __mmask16 m = qv__fmask((int)(n - k));
        _mm512_mask_storeu_ps(dst + k, m, qv__fexp512(_mm512_maskz_loadu_ps(m, src + k)));
    }
#elif defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)
    const __m256 zero = _mm256_setzero_ps();
    for (; k + 8 <= n; k += 8) _mm256_storeu_ps(dst + k, qv__fexpneg256(_mm256_sub_ps(zero, _mm256_loadu_ps(src + k))));
    if (k < n) {
        const __m256i m = qv__fmask8((int)(n - k));
        _mm256_maskstore_ps(dst + k, m, qv__fexpneg256(_mm256_sub_ps(zero, _mm256_maskload_ps(src + k, m))));
    }
#else
    for (; k < n; k++) dst[k] = qv__fexpneg1(0.0f - src[k]);
#endif
}

static inline const char *qv_f_isa_name(void) { return QV_F_ISA_NAME; }

#endif /* QV_FSIMD_H */
