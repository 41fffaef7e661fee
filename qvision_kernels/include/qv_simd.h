/*
 * qv_simd.h - the instruction-set shim under the int8 kernels of qvision_kernels.
 *
 * The Cython kernels (qvision_kernels/_qconv.pyx.tp) hold the algorithm: tiling, loops, threads, the order
 * of the arithmetic.  This header only maps a handful of vector operations onto one instruction set,
 * chosen by the macro the build defines for each generated module:
 *
 *   QV_ISA_AVX512VNNI   512-bit VPDPBUSD (one instruction: 16 lanes x 4 u8*s8 products)
 *   QV_ISA_AVXVNNI      256-bit VEX VPDPBUSD, two registers per 16 lanes
 *   QV_ISA_AVX2         exact emulation of VPDPBUSD with VPMADDUBSW on split even/odd bytes + VPMADDWD
 *   QV_ISA_DOTPROD      AArch64 SDOT (Armv8.2 dot product): four registers per 16 lanes.  SDOT multiplies
 *                       signed by signed bytes, so activations enter as x ^ 0x80 = x - 128 and the kernel
 *                       adds back 128 * sum(w) through the bias (QV_ACT_OFFSET, applied at packing)
 *   QV_ISA_GENERIC      plain C loops over 16 lanes (any architecture; the compiler vectorises them)
 *
 * The unit of work is "16 output channels x 4 reduction steps": a packed weight block of 64 signed bytes
 * laid out [lane 0: k0 k1 k2 k3][lane 1: k0..k3]...[lane 15: k0..k3], multiplied with 4 unsigned input
 * bytes broadcast to all lanes, accumulated into 16 int32 lanes (qv_acc).
 *
 * Requantisation (DESIGN.md section 3, written out once in qvision_kernels/requant.py):
 *   y = clamp(round_half_even(float32(acc) * mult[c]) + zp, lo, hi)
 * computed here as  clamp_f(float32(acc) * mult[c], lo - zp, hi - zp)  ->  round to nearest even  ->  + zp.
 * Both orders give the same integer: lo - zp and hi - zp are integers, and rounding is monotone and keeps
 * integers fixed.  Clamping first in float keeps the float->int conversion in range.  The rounding mode is
 * the default round-to-nearest-even of MXCSR / FPCR, which CPython never changes.
 */
#ifndef QV_SIMD_H
#define QV_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <stddef.h>

#if defined(QV_ISA_AVX512VNNI) || defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)
#include <immintrin.h>
#endif
#if defined(QV_ISA_DOTPROD)
#include <arm_neon.h>
#endif

/* Constant the packing adds times sum(w) to each bias (activations fed to the dot product as x - offset). */
#if defined(QV_ISA_DOTPROD)
#define QV_ACT_OFFSET 128
#else
#define QV_ACT_OFFSET 0
#endif

static inline int32_t qv_load_u32(const uint8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* ------------------------------------------------------------------------------------------------- */
#if defined(QV_ISA_AVX512VNNI)

#define QV_ISA_NAME "avx512vnni"
typedef __m512i qv_acc;     /* 16 x int32 */
typedef __m512i qv_wblk;    /* 64 x int8: one packed weight block */
typedef __m512i qv_abc;     /* 4 input bytes broadcast to 16 lanes */

static inline qv_acc qv_acc_load(const int32_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline qv_acc qv_acc_zero(void) { return _mm512_setzero_si512(); }
static inline qv_wblk qv_w_load(const int8_t *p) { return _mm512_loadu_si512((const void *)p); }
static inline qv_abc qv_a_bcast(const uint8_t *p) { return _mm512_set1_epi32(qv_load_u32(p)); }
static inline qv_acc qv_dot(qv_acc acc, qv_abc a, qv_wblk w) { return _mm512_dpbusd_epi32(acc, a, w); }

static inline void qv_requant_store(qv_acc acc, const float *mult, float lo_f, float hi_f, int32_t zp,
                                    uint8_t *dst, int n)
{
    __m512 v = _mm512_mul_ps(_mm512_cvtepi32_ps(acc), _mm512_loadu_ps(mult));
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(lo_f)), _mm512_set1_ps(hi_f));
    __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), _mm512_set1_epi32(zp));
    __m128i b = _mm512_cvtepi32_epi8(q);
    if (n >= 16) _mm_storeu_si128((__m128i *)dst, b);
    else _mm_mask_storeu_epi8(dst, (__mmask16)((1u << n) - 1u), b);
}

static inline void qv_store_i32(qv_acc acc, int32_t *dst) { _mm512_storeu_si512((void *)dst, acc); }

/* Depthwise: acc[l] += x[l] * w[l] for 16 channels.  w holds each int8 weight as the low 16 bits of an
 * int32 lane with a zero high half, so VPMADDWD on the zero-extended bytes gives x * w exactly. */
static inline qv_acc qv_dw_mac(qv_acc acc, const uint8_t *x, const int32_t *w)
{
    /* VPDPBUSD: bytes 1-3 of each zero-extended lane are zero, so only x * (int8)w enters the sum, exactly
     * what VPMADDWD + VPADDD gave, in one instruction. */
    __m512i xv = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)x));
    return _mm512_dpbusd_epi32(acc, xv, _mm512_loadu_si512((const void *)w));
}

/* Depthwise 3-wide kernel rows (kw == 3, dilation_w == 1) with AVX-512 VBMI, chosen at run time
 * (qv_lut_has_vbmi(): VBMI is not among this variant's build flags).
 *
 * For 16 channels one VPERMB gathers the three horizontal taps of a pixel into 4-byte groups
 * [x(kx=0)[c], x(kx=1)[c], x(kx=2)[c], any] from a register holding four input columns, and one VPDPBUSD
 * multiplies them with w3 = [w(kx=0)[c], w(kx=1)[c], w(kx=2)[c], 0]: one instruction per kernel row where
 * qv_dw_mac takes three.  The 4th byte meets a zero weight, so what it holds does not matter.
 *
 * qv_dw3_tile4 computes four neighbouring output pixels of one row: pixel k's kernel row ky reads the
 * input columns rows[ky] + (k * sw + kx) * C; the caller makes all (3 * sw + 3) columns readable (inside
 * the input, or a copy padded with zero points) for channels [0, nc), nc a multiple of 16, bias and requantisation
 * as qv_dw_mac's callers.  Input columns are shared between the pixels: stride 1 reads columns 0-5 in two
 * registers (0-3 and 4-5), stride 2 reads 0-8 in three (0-3, 4-7, 8); VPERMT2B crosses the registers.
 * sw must be 1 or 2 (other strides take qv_dw_mac).  w3 is [kh][Cp] int32 (4 bytes each). */
#if defined(__GNUC__)
#define QV_DW3_VBMI 1
__attribute__((target("avx512vbmi")))
static inline __m512i qv__cols4(const uint8_t *p, ptrdiff_t C)
{
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)p));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + C)), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 2 * C)), 2);
    return _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(p + 3 * C)), 3);
}

/* VPERMB/VPERMT2B indices: byte j of a gathered vector is channel j / 4, tap j % 4 (tap 3 repeats tap 0)
 * from column first + tap, where column k sits at bytes 16 * k (k >= 4: in the second register).
 * Row f: first = f. */
static const uint8_t qv__dw3_idx[4][64] = {
    { 0, 16, 32,  0,  1, 17, 33,  1,  2, 18, 34,  2,  3, 19, 35,  3,
      4, 20, 36,  4,  5, 21, 37,  5,  6, 22, 38,  6,  7, 23, 39,  7,
      8, 24, 40,  8,  9, 25, 41,  9, 10, 26, 42, 10, 11, 27, 43, 11,
     12, 28, 44, 12, 13, 29, 45, 13, 14, 30, 46, 14, 15, 31, 47, 15},
    {16, 32, 48, 16, 17, 33, 49, 17, 18, 34, 50, 18, 19, 35, 51, 19,
     20, 36, 52, 20, 21, 37, 53, 21, 22, 38, 54, 22, 23, 39, 55, 23,
     24, 40, 56, 24, 25, 41, 57, 25, 26, 42, 58, 26, 27, 43, 59, 27,
     28, 44, 60, 28, 29, 45, 61, 29, 30, 46, 62, 30, 31, 47, 63, 31},
    {32, 48, 64, 32, 33, 49, 65, 33, 34, 50, 66, 34, 35, 51, 67, 35,
     36, 52, 68, 36, 37, 53, 69, 37, 38, 54, 70, 38, 39, 55, 71, 39,
     40, 56, 72, 40, 41, 57, 73, 41, 42, 58, 74, 42, 43, 59, 75, 43,
     44, 60, 76, 44, 45, 61, 77, 45, 46, 62, 78, 46, 47, 63, 79, 47},
    {48, 64, 80, 48, 49, 65, 81, 49, 50, 66, 82, 50, 51, 67, 83, 51,
     52, 68, 84, 52, 53, 69, 85, 53, 54, 70, 86, 54, 55, 71, 87, 55,
     56, 72, 88, 56, 57, 73, 89, 57, 58, 74, 90, 58, 59, 75, 91, 59,
     60, 76, 92, 60, 61, 77, 93, 61, 62, 78, 94, 62, 63, 79, 95, 63}
};

__attribute__((target("avx512vbmi")))
static void qv_dw3_tile4(const uint8_t *const *rows, int kh, int sw, ptrdiff_t C, ptrdiff_t nc,
                         const int32_t *w3, ptrdiff_t Cp, const int32_t *bias, const float *mult,
                         float lo_f, float hi_f, int32_t zp, uint8_t *dst)
{
    const __m512i i0 = _mm512_loadu_si512((const void *)qv__dw3_idx[0]);
    const __m512i i1 = _mm512_loadu_si512((const void *)qv__dw3_idx[1]);
    const __m512i i2 = _mm512_loadu_si512((const void *)qv__dw3_idx[2]);
    const __m512i i3 = _mm512_loadu_si512((const void *)qv__dw3_idx[3]);
    /* after the two packs, dword 4 * l + k holds pixel k's channels 4l..4l+3: transpose to pixel-major */
    const __m512i tr = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    const __m512 hi = _mm512_set1_ps(hi_f);
    const __m512i z16 = _mm512_set1_epi16((short)zp);
    const __m512i lo8 = _mm512_set1_epi8((char)(uint8_t)((int32_t)lo_f + zp));
    const __m512i hi8 = _mm512_set1_epi8((char)(uint8_t)((int32_t)hi_f + zp));
    for (ptrdiff_t c = 0; c < nc; c += 16) {
        __m512i a0 = _mm512_loadu_si512((const void *)(bias + c)), a1 = a0, a2 = a0, a3 = a0;
        for (int ky = 0; ky < kh; ky++) {
            const uint8_t *r = rows[ky] + c;
            const __m512i w = _mm512_loadu_si512((const void *)(w3 + ky * Cp + c));
            if (sw == 1) {
                /* columns 0-3 and 4-5 */
                __m512i za = qv__cols4(r, C);
                __m512i zb = _mm512_castsi256_si512(_mm256_inserti128_si256(
                    _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(r + 4 * C))),
                    _mm_loadu_si128((const __m128i *)(r + 5 * C)), 1));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_permutexvar_epi8(i0, za), w);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_permutexvar_epi8(i1, za), w);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_permutex2var_epi8(za, i2, zb), w);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_permutex2var_epi8(za, i3, zb), w);
            } else {
                /* columns 0-3, 4-7 and 8 */
                __m512i za = qv__cols4(r, C), zb = qv__cols4(r + 4 * C, C);
                __m512i zc = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(r + 8 * C)));
                a0 = _mm512_dpbusd_epi32(a0, _mm512_permutexvar_epi8(i0, za), w);
                a1 = _mm512_dpbusd_epi32(a1, _mm512_permutex2var_epi8(za, i2, zb), w);
                a2 = _mm512_dpbusd_epi32(a2, _mm512_permutexvar_epi8(i0, zb), w);
                a3 = _mm512_dpbusd_epi32(a3, _mm512_permutex2var_epi8(zb, i2, zc), w);
            }
        }
        /* Requantise the four pixels together, the same integers as qv_requant_store: clamping commutes
         * with rounding (integer bounds), so only the upper bound is applied in float (it keeps the
         * conversion in range; a value below -2^31 converts to INT32_MIN, which still saturates low), the
         * zero point is added with int16 saturation and both bounds are applied again to the bytes. */
        const __m512 m = _mm512_loadu_ps(mult + c);
        __m512i q0 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a0), m), hi));
        __m512i q1 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a1), m), hi));
        __m512i q2 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a2), m), hi));
        __m512i q3 = _mm512_cvtps_epi32(_mm512_min_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a3), m), hi));
        __m512i p01 = _mm512_adds_epi16(_mm512_packs_epi32(q0, q1), z16);
        __m512i p23 = _mm512_adds_epi16(_mm512_packs_epi32(q2, q3), z16);
        __m512i b = _mm512_min_epu8(_mm512_max_epu8(_mm512_packus_epi16(p01, p23), lo8), hi8);
        b = _mm512_permutexvar_epi32(tr, b);
        if (C == 16) {
            _mm512_storeu_si512((void *)dst, b);
        } else {
            _mm_storeu_si128((__m128i *)(dst + c), _mm512_castsi512_si128(b));
            _mm_storeu_si128((__m128i *)(dst + C + c), _mm512_extracti32x4_epi32(b, 1));
            _mm_storeu_si128((__m128i *)(dst + 2 * C + c), _mm512_extracti32x4_epi32(b, 2));
            _mm_storeu_si128((__m128i *)(dst + 3 * C + c), _mm512_extracti32x4_epi32(b, 3));
        }
    }
}
#else
#define QV_DW3_VBMI 0
static void qv_dw3_tile4(const uint8_t *const *rows, int kh, int sw, ptrdiff_t C, ptrdiff_t nc,
                         const int32_t *w3, ptrdiff_t Cp, const int32_t *bias, const float *mult,
                         float lo_f, float hi_f, int32_t zp, uint8_t *dst) { }
#endif

/* ------------------------------------------------------------------------------------------------- */
#elif defined(QV_ISA_AVXVNNI) || defined(QV_ISA_AVX2)

#if defined(QV_ISA_AVXVNNI)
#define QV_ISA_NAME "avxvnni"
#else
#define QV_ISA_NAME "avx2"
#endif
typedef struct { __m256i lo, hi; } qv_acc;
typedef struct { __m256i lo, hi; } qv_wblk;
#if defined(QV_ISA_AVXVNNI)
typedef __m256i qv_abc;
#else
typedef struct { __m256i even, odd; } qv_abc;  /* bytes 0,2 and bytes 1,3 of the 4, the others zero */
#endif

static inline qv_acc qv_acc_load(const int32_t *p)
{
    qv_acc r;
    r.lo = _mm256_loadu_si256((const __m256i *)p);
    r.hi = _mm256_loadu_si256((const __m256i *)(p + 8));
    return r;
}
static inline qv_acc qv_acc_zero(void) { qv_acc r; r.lo = r.hi = _mm256_setzero_si256(); return r; }
static inline qv_wblk qv_w_load(const int8_t *p)
{
    qv_wblk r;
    r.lo = _mm256_loadu_si256((const __m256i *)p);
    r.hi = _mm256_loadu_si256((const __m256i *)(p + 32));
    return r;
}
#if defined(QV_ISA_AVXVNNI)
static inline qv_abc qv_a_bcast(const uint8_t *p) { return _mm256_set1_epi32(qv_load_u32(p)); }
static inline qv_acc qv_dot(qv_acc acc, qv_abc a, qv_wblk w)
{
    acc.lo = _mm256_dpbusd_avx_epi32(acc.lo, a, w.lo);
    acc.hi = _mm256_dpbusd_avx_epi32(acc.hi, a, w.hi);
    return acc;
}
#else
static inline qv_abc qv_a_bcast(const uint8_t *p)
{
    qv_abc r;
    __m256i v = _mm256_set1_epi32(qv_load_u32(p));
    r.even = _mm256_and_si256(v, _mm256_set1_epi16(0x00FF));
    r.odd = _mm256_andnot_si256(_mm256_set1_epi16(0x00FF), v);
    return r;
}
/* VPMADDUBSW on one non-zero byte per pair cannot saturate (255 * 127 < 32767); VPMADDWD with ones then
 * sums the two int16 products of a lane exactly.  Same result as VPDPBUSD, bit for bit. */
static inline __m256i qv__dot8(__m256i acc, __m256i ae, __m256i ao, __m256i w)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i pe = _mm256_madd_epi16(_mm256_maddubs_epi16(ae, w), ones);
    __m256i po = _mm256_madd_epi16(_mm256_maddubs_epi16(ao, w), ones);
    return _mm256_add_epi32(acc, _mm256_add_epi32(pe, po));
}
static inline qv_acc qv_dot(qv_acc acc, qv_abc a, qv_wblk w)
{
    acc.lo = qv__dot8(acc.lo, a.even, a.odd, w.lo);
    acc.hi = qv__dot8(acc.hi, a.even, a.odd, w.hi);
    return acc;
}
#endif

static inline __m256i qv__requant8(__m256i acc, const float *mult, __m256 lo, __m256 hi, __m256i zp)
{
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(acc), _mm256_loadu_ps(mult));
    v = _mm256_min_ps(_mm256_max_ps(v, lo), hi);
    return _mm256_add_epi32(_mm256_cvtps_epi32(v), zp);
}

static inline void qv_requant_store(qv_acc acc, const float *mult, float lo_f, float hi_f, int32_t zp,
                                    uint8_t *dst, int n)
{
    const __m256 lo = _mm256_set1_ps(lo_f), hi = _mm256_set1_ps(hi_f);
    const __m256i z = _mm256_set1_epi32(zp);
    __m256i a = qv__requant8(acc.lo, mult, lo, hi, z);
    __m256i b = qv__requant8(acc.hi, mult + 8, lo, hi, z);
    /* values are in [0, 255]: the saturating packs are exact; fix the lane interleave of the packs. */
    __m256i p16 = _mm256_packs_epi32(a, b);                 /* a0-3 b0-3 | a4-7 b4-7 */
    p16 = _mm256_permute4x64_epi64(p16, 0xD8);               /* a0-3 a4-7 | b0-3 b4-7 */
    __m128i p8 = _mm_packus_epi16(_mm256_castsi256_si128(p16), _mm256_extracti128_si256(p16, 1));
    if (n >= 16) _mm_storeu_si128((__m128i *)dst, p8);
    else { uint8_t tmp[16]; _mm_storeu_si128((__m128i *)tmp, p8); memcpy(dst, tmp, (size_t)n); }
}

static inline void qv_store_i32(qv_acc acc, int32_t *dst)
{
    _mm256_storeu_si256((__m256i *)dst, acc.lo);
    _mm256_storeu_si256((__m256i *)(dst + 8), acc.hi);
}

static inline qv_acc qv_dw_mac(qv_acc acc, const uint8_t *x, const int32_t *w)
{
    __m128i xb = _mm_loadu_si128((const __m128i *)x);
    __m256i lo = _mm256_cvtepu8_epi32(xb);
    __m256i hi = _mm256_cvtepu8_epi32(_mm_srli_si128(xb, 8));
#if defined(QV_ISA_AVXVNNI)
    /* one VPDPBUSD per 8 lanes: the zero bytes 1-3 of each lane leave x * (int8)w, as in the 512-bit case */
    acc.lo = _mm256_dpbusd_avx_epi32(acc.lo, lo, _mm256_loadu_si256((const __m256i *)w));
    acc.hi = _mm256_dpbusd_avx_epi32(acc.hi, hi, _mm256_loadu_si256((const __m256i *)(w + 8)));
#else
    acc.lo = _mm256_add_epi32(acc.lo, _mm256_madd_epi16(lo, _mm256_loadu_si256((const __m256i *)w)));
    acc.hi = _mm256_add_epi32(acc.hi, _mm256_madd_epi16(hi, _mm256_loadu_si256((const __m256i *)(w + 8))));
#endif
    return acc;
}

/* ------------------------------------------------------------------------------------------------- */
#elif defined(QV_ISA_DOTPROD)

#define QV_ISA_NAME "dotprod"
typedef struct { int32x4_t v0, v1, v2, v3; } qv_acc;
typedef struct { int8x16_t v0, v1, v2, v3; } qv_wblk;
typedef int8x16_t qv_abc;

static inline qv_acc qv_acc_load(const int32_t *p)
{
    qv_acc r;
    r.v0 = vld1q_s32(p); r.v1 = vld1q_s32(p + 4); r.v2 = vld1q_s32(p + 8); r.v3 = vld1q_s32(p + 12);
    return r;
}
static inline qv_acc qv_acc_zero(void) { qv_acc r; r.v0 = r.v1 = r.v2 = r.v3 = vdupq_n_s32(0); return r; }
static inline qv_wblk qv_w_load(const int8_t *p)
{
    qv_wblk r;
    r.v0 = vld1q_s8(p); r.v1 = vld1q_s8(p + 16); r.v2 = vld1q_s8(p + 32); r.v3 = vld1q_s8(p + 48);
    return r;
}
static inline qv_abc qv_a_bcast(const uint8_t *p)
{
    return vreinterpretq_s8_u32(vdupq_n_u32((uint32_t)qv_load_u32(p) ^ 0x80808080u));
}
static inline qv_acc qv_dot(qv_acc acc, qv_abc a, qv_wblk w)
{
    acc.v0 = vdotq_s32(acc.v0, a, w.v0);
    acc.v1 = vdotq_s32(acc.v1, a, w.v1);
    acc.v2 = vdotq_s32(acc.v2, a, w.v2);
    acc.v3 = vdotq_s32(acc.v3, a, w.v3);
    return acc;
}
static inline int32x4_t qv__requant4(int32x4_t acc, const float *mult, float32x4_t lo, float32x4_t hi,
                                     int32x4_t zp)
{
    float32x4_t v = vmulq_f32(vcvtq_f32_s32(acc), vld1q_f32(mult));
    v = vminq_f32(vmaxq_f32(v, lo), hi);
    return vaddq_s32(vcvtnq_s32_f32(v), zp);   /* FCVTNS: round to nearest, ties to even */
}
static inline void qv_requant_store(qv_acc acc, const float *mult, float lo_f, float hi_f, int32_t zp,
                                    uint8_t *dst, int n)
{
    const float32x4_t lo = vdupq_n_f32(lo_f), hi = vdupq_n_f32(hi_f);
    const int32x4_t z = vdupq_n_s32(zp);
    int16x8_t a = vcombine_s16(vmovn_s32(qv__requant4(acc.v0, mult, lo, hi, z)),
                               vmovn_s32(qv__requant4(acc.v1, mult + 4, lo, hi, z)));
    int16x8_t b = vcombine_s16(vmovn_s32(qv__requant4(acc.v2, mult + 8, lo, hi, z)),
                               vmovn_s32(qv__requant4(acc.v3, mult + 12, lo, hi, z)));
    uint8x16_t r = vcombine_u8(vqmovun_s16(a), vqmovun_s16(b));   /* values already in [0, 255] */
    if (n >= 16) vst1q_u8(dst, r);
    else { uint8_t tmp[16]; vst1q_u8(tmp, r); memcpy(dst, tmp, (size_t)n); }
}
static inline void qv_store_i32(qv_acc acc, int32_t *dst)
{
    vst1q_s32(dst, acc.v0); vst1q_s32(dst + 4, acc.v1); vst1q_s32(dst + 8, acc.v2); vst1q_s32(dst + 12, acc.v3);
}
static inline qv_acc qv_dw_mac(qv_acc acc, const uint8_t *x, const int32_t *w)
{
    /* exact: zero-extended bytes times the 16-bit weights, widened to int32 */
    uint8x16_t xb = vld1q_u8(x);
    int16x8_t xl = vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(xb)));
    int16x8_t xh = vreinterpretq_s16_u16(vmovl_u8(vget_high_u8(xb)));
    int16x4_t w0 = vmovn_s32(vld1q_s32(w)), w1 = vmovn_s32(vld1q_s32(w + 4));
    int16x4_t w2 = vmovn_s32(vld1q_s32(w + 8)), w3 = vmovn_s32(vld1q_s32(w + 12));
    acc.v0 = vmlal_s16(acc.v0, vget_low_s16(xl), w0);
    acc.v1 = vmlal_s16(acc.v1, vget_high_s16(xl), w1);
    acc.v2 = vmlal_s16(acc.v2, vget_low_s16(xh), w2);
    acc.v3 = vmlal_s16(acc.v3, vget_high_s16(xh), w3);
    return acc;
}

/* ------------------------------------------------------------------------------------------------- */
#else  /* QV_ISA_GENERIC */

#define QV_ISA_NAME "generic"
typedef struct { int32_t v[16]; } qv_acc;
typedef struct { int8_t v[64]; } qv_wblk;
typedef struct { int32_t b[4]; } qv_abc;

static inline qv_acc qv_acc_load(const int32_t *p) { qv_acc r; memcpy(r.v, p, sizeof r.v); return r; }
static inline qv_acc qv_acc_zero(void) { qv_acc r; memset(r.v, 0, sizeof r.v); return r; }
static inline qv_wblk qv_w_load(const int8_t *p) { qv_wblk r; memcpy(r.v, p, sizeof r.v); return r; }
static inline qv_abc qv_a_bcast(const uint8_t *p)
{
    qv_abc r; r.b[0] = p[0]; r.b[1] = p[1]; r.b[2] = p[2]; r.b[3] = p[3]; return r;
}
static inline qv_acc qv_dot(qv_acc acc, qv_abc a, qv_wblk w)
{
    for (int l = 0; l < 16; l++)
        acc.v[l] += a.b[0] * w.v[4 * l] + a.b[1] * w.v[4 * l + 1] + a.b[2] * w.v[4 * l + 2]
                    + a.b[3] * w.v[4 * l + 3];
    return acc;
}
static inline void qv_requant_store(qv_acc acc, const float *mult, float lo_f, float hi_f, int32_t zp,
                                    uint8_t *dst, int n)
{
    for (int l = 0; l < n && l < 16; l++) {
        float v = (float)acc.v[l] * mult[l];
        v = v < lo_f ? lo_f : (v > hi_f ? hi_f : v);
        dst[l] = (uint8_t)((int32_t)nearbyintf(v) + zp);
    }
}
static inline void qv_store_i32(qv_acc acc, int32_t *dst) { memcpy(dst, acc.v, sizeof acc.v); }

static inline qv_acc qv_dw_mac(qv_acc acc, const uint8_t *x, const int32_t *w)
{
    for (int l = 0; l < 16; l++) acc.v[l] += (int32_t)x[l] * (int32_t)(int16_t)(w[l] & 0xFFFF);
    return acc;
}

#endif

static inline const char *qv_isa_name(void) { return QV_ISA_NAME; }
static inline int qv_act_offset(void) { return QV_ACT_OFFSET; }

#endif /* QV_SIMD_H */
