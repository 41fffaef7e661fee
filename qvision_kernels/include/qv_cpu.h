/* qv_cpu.h - which instruction-set extensions the running CPU and OS support (asked at run time). */
#ifndef QV_CPU_H
#define QV_CPU_H

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#define QV_ARCH "x86_64"
#include <cpuid.h>
/* __builtin_cpu_supports checks CPUID and, for AVX and AVX-512, that the OS saves the wider registers. */
static int qv_cpu_has(const char *name)
{
    __builtin_cpu_init();
    if (!__builtin_strcmp(name, "avx2")) return __builtin_cpu_supports("avx2") != 0;
    if (!__builtin_strcmp(name, "fma")) return __builtin_cpu_supports("fma") != 0;
    if (!__builtin_strcmp(name, "f16c")) return __builtin_cpu_supports("f16c") != 0;
    if (!__builtin_strcmp(name, "avx512f")) return __builtin_cpu_supports("avx512f") != 0;
    if (!__builtin_strcmp(name, "avx512bw")) return __builtin_cpu_supports("avx512bw") != 0;
    if (!__builtin_strcmp(name, "avx512vl")) return __builtin_cpu_supports("avx512vl") != 0;
    if (!__builtin_strcmp(name, "avx512dq")) return __builtin_cpu_supports("avx512dq") != 0;
    if (!__builtin_strcmp(name, "avx512vnni")) return __builtin_cpu_supports("avx512vnni") != 0;
    if (!__builtin_strcmp(name, "avxvnni")) {
        /* CPUID.(EAX=7, ECX=1):EAX bit 4, plus the OS saving AVX state (what avx2 already checks);
         * asked directly because __builtin_cpu_supports knows "avxvnni" only from GCC 11 on. */
        unsigned a = 0, b = 0, c = 0, d = 0;
        if (!__builtin_cpu_supports("avx2") || !__get_cpuid_count(7, 1, &a, &b, &c, &d)) return 0;
        return (a >> 4) & 1;
    }
    return 0;
}
#elif defined(__aarch64__)
#define QV_ARCH "aarch64"
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
static int qv_cpu_has(const char *name)
{
    unsigned long hw = getauxval(AT_HWCAP);
    if (!__builtin_strcmp(name, "asimd")) return 1;
    if (!__builtin_strcmp(name, "dotprod")) return (hw & HWCAP_ASIMDDP) != 0;
    return 0;
}
#else
#define QV_ARCH "other"
static int qv_cpu_has(const char *name) { (void)name; return 0; }
#endif

#endif
