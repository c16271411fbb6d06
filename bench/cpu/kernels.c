/* kernels.c: the CPU backend's kernels timed alone, against this CPU's measured FP32 peak.
 *
 * Built and run by bench/cpu/run.sh (cc -O2 -fopenmp, linked with the runtime's sources):
 *   1. FP32 FMA peak: every thread runs independent chains of FMAs as wide as the GEMM's tile
 *      (16-wide AVX-512 where ref_gemm_isa picks it, else 8-wide AVX2) for a fixed time;
 *      FP8C_CPU_ISA=avx2 measures both against the AVX2 peak;
 *   2. the three GEMMs (fprop, dgrad, wgrad) at the shapes of the benchmark models;
 *   3. attention forward and backward (causal: half the T x T scores) at the same shapes;
 *   4. quantize (E4M3, 1x128 tiles, both orientations; the column-wise one also as transpose +
 *      quantize) and dequantize, in GB/s of FP32 read.
 * Prints a markdown table: GFLOP/s and the fraction of the measured peak. Each figure is the
 * best of a few repeats (the machine may be shared: the best is the least disturbed). The
 * peak (the % column's reference) is measured before the kernels and again after them: when
 * the two differ by over 25% the machine was busy and only the GFLOP/s column means much.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "quant.h"
#include "ref.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef float v8 __attribute__((vector_size(32)));

/* 10 independent accumulators: enough to hide a 4-cycle FMA latency on 2 FMA pipes. */
__attribute__((target("avx2,fma"), noinline)) static float fma_chains(long iters, float seed)
{
    v8 a0 = {seed}, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    v8 x = {1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f, 1.0000001f};
    v8 y = {1e-9f, 1e-9f, 1e-9f, 1e-9f, 1e-9f, 1e-9f, 1e-9f, 1e-9f};
    for (long i = 0; i < iters; i++) {
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a0) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a1) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a2) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a3) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a4) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a5) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a6) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a7) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a8) : "x"(x), "x"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+x"(a9) : "x"(x), "x"(y));
    }
    v8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
    return s[0];
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
typedef float v16 __attribute__((vector_size(64)));

/* The same with 16-wide FMAs (AVX-512): twice the 8-wide peak where the CPU has two 512-bit FMA
 * pipes (Xeon since Skylake-SP), the same where it splits them (Zen 4). */
__attribute__((target("avx512f"), noinline)) static float fma_chains16(long iters, float seed)
{
    v16 a0 = {seed}, a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0, a9 = a0;
    v16 x = (v16){0} + 1.0000001f, y = (v16){0} + 1e-9f;
    for (long i = 0; i < iters; i++) {
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a0) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a1) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a2) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a3) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a4) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a5) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a6) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a7) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a8) : "v"(x), "v"(y));
        __asm__("vfmadd132ps %1, %2, %0" : "+v"(a9) : "v"(x), "v"(y));
    }
    v16 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + a8 + a9;
    return s[0];
}
#endif

/* GFLOP/s of all threads together: 10 FMAs x 8 (wide16: 16) lanes x 2 flops per iteration
 * each. */
static double fma_peak_w(int wide16)
{
    long iters = 20 * 1000 * 1000;
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = now_s(), sink = 0;
        int nth = 1;
#pragma omp parallel reduction(+ : sink)
        {
#ifdef _OPENMP
#pragma omp single
            nth = omp_get_num_threads();
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
            sink += wide16 ? fma_chains16(iters, 1.0f) : fma_chains(iters, 1.0f);
#else
            sink += fma_chains(iters, 1.0f);
#endif
        }
        double dt = now_s() - t0, g = (wide16 ? 320.0 : 160.0) * iters * nth / dt / 1e9;
        if (g > best && sink != 0)
            best = g;
    }
    return best;
}

/* The peak of the FMA width the GEMM runs at (ref_gemm_isa: 16 lanes on AVX-512 CPUs). */
static double fma_peak(void)
{
    return fma_peak_w(ref_gemm_isa(-1));
}

static float *rnd(int64_t n, float scale)
{
    float *x = malloc((size_t)n * sizeof *x);
    uint32_t s = 12345u + (uint32_t)n;
    for (int64_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = scale * ((float)(s >> 8) / 16777216.0f - 0.5f);
    }
    return x;
}

/* Best seconds of `reps` calls of `body` after one warm-up call. */
#define TIME_BEST(reps, body)                                                                      \
    ({                                                                                             \
        body;                                                                                      \
        double best_ = 1e30;                                                                       \
        for (int r_ = 0; r_ < (reps); r_++) {                                                      \
            double t0_ = now_s();                                                                  \
            body;                                                                                  \
            double dt_ = now_s() - t0_;                                                            \
            best_ = dt_ < best_ ? dt_ : best_;                                                     \
        }                                                                                          \
        best_;                                                                                     \
    })

static double peak;

static void row(const char *what, const char *shape, double flops, double s)
{
    double g = flops / s / 1e9;
    printf("| %s | %s | %.2f | %.1f | %.0f%% |\n", what, shape, 1000 * s, g, 100 * g / peak);
}

static void gemms(const char *name, int M, int K, int N)
{
    float *x = rnd((int64_t)M * K, 1), *w = rnd((int64_t)N * K, 1), *y = rnd((int64_t)M * N, 1);
    float *dx = rnd((int64_t)M * K, 1), *dw = rnd((int64_t)N * K, 1);
    char shape[96];
    snprintf(shape, sizeof shape, "%s M=%d K=%d N=%d", name, M, K, N);
    double f = 2.0 * M * K * N;
    row("matmul_fwd", shape, f, TIME_BEST(4, ref_matmul_fwd(y, x, w, NULL, M, K, N)));
    row("matmul_bwd_data", shape, f, TIME_BEST(4, ref_matmul_bwd_data(dx, y, w, M, K, N)));
    row("matmul_bwd_weight", shape, f, TIME_BEST(4, ref_matmul_bwd_weight(dw, NULL, y, x, M, K, N)));
    free(x), free(w), free(y), free(dx), free(dw);
}

static void attention(const char *name, int B, int T, int H, int hd)
{
    int64_t n = (int64_t)B * T * H * hd;
    float *q = rnd(n, 2), *k = rnd(n, 2), *v = rnd(n, 1), *o = rnd(n, 1), *g = rnd(n, 1);
    float *dq = rnd(n, 1), *dk = rnd(n, 1), *dv = rnd(n, 1), *lse = rnd((int64_t)B * H * T, 1);
    char shape[96];
    snprintf(shape, sizeof shape, "%s B=%d T=%d H=%d hd=%d", name, B, T, H, hd);
    /* causal: T(T+1)/2 scores; forward 2 GEMM-like products, backward 5 (S, dP, dV, dQ, dK) */
    double pairs = (double)B * H * T * (T + 1) / 2, f = 2.0 * 2 * pairs * hd;
    row("attention_fwd", shape, f, TIME_BEST(3, ref_attention_fwd(o, lse, q, k, v, B, T, H, H, hd)));
    row("attention_bwd", shape, 2.5 * f,
        TIME_BEST(3, ref_attention_bwd(dq, dk, dv, g, q, k, v, o, lse, B, T, H, H, hd)));
    free(q), free(k), free(v), free(o), free(g), free(dq), free(dk), free(dv), free(lse);
}

static void quant(const char *name, int R, int C)
{
    float *x = rnd((int64_t)R * C, 3), *y = rnd((int64_t)R * C, 1);
    uint8_t *codes = malloc((size_t)R * C);
    float *sinv = malloc(q_scale_count(R, C, 1, 128) * sizeof *sinv);
    float *sinv2 = malloc(q_scale_count(C, R, 1, 128) * sizeof *sinv2);
    double gb = 4.0 * R * C / 1e9;
    double s = TIME_BEST(4, q_quantize(codes, sinv, NULL, x, R, C, 1, 128, Q_E4M3, 0, 0.0f));
    printf("| quantize 1x128 | %s %dx%d | %.2f | %.1f GB/s | |\n", name, R, C, 1000 * s, gb / s);
    s = TIME_BEST(4, q_dequantize(y, codes, sinv, NULL, R, C, 1, 128, Q_E4M3, 0));
    printf("| dequantize 1x128 | %s %dx%d | %.2f | %.1f GB/s | |\n", name, R, C, 1000 * s, gb / s);
    /* the column-wise copy (1 x 128 tiles of the transpose): fused, and as the transpose in
     * FP32 followed by the row-wise quantize (what the CPU backend did before) */
    s = TIME_BEST(4, q_quantize_transposed(codes, sinv2, NULL, x, R, C, 1, 128, Q_E4M3, 0, 0.0f));
    printf("| quantize 1x128 column-wise | %s %dx%d | %.2f | %.1f GB/s | |\n", name, R, C, 1000 * s, gb / s);
    s = TIME_BEST(4, (ref_transpose(y, x, R, C), q_quantize(codes, sinv2, NULL, y, C, R, 1, 128, Q_E4M3, 0, 0.0f)));
    printf("| transpose + quantize 1x128 | %s %dx%d | %.2f | %.1f GB/s | |\n", name, R, C, 1000 * s, gb / s);
    free(x), free(y), free(codes), free(sinv), free(sinv2);
}

int main(void)
{
    peak = fma_peak();
    printf("Measured FP32 FMA peak (all threads, %s FMAs, the GEMM's tile): %.1f GFLOP/s (before the kernels)\n\n",
           ref_gemm_isa(-1) ? "16-wide AVX-512" : "8-wide AVX2", peak);
    printf("| kernel | shape | ms (best) | GFLOP/s | of peak |\n|---|---|---|---|---|\n");
    gemms("tiny qkvo", 2048, 128, 128);
    gemms("tiny ffn up", 2048, 128, 384);
    gemms("tiny ffn down", 2048, 384, 128);
    gemms("tiny lm head", 2048, 128, 256);
    gemms("gpt2 T=64 qkv", 256, 768, 768);
    gemms("gpt2 T=64 fc", 256, 768, 3072);
    gemms("gpt2 T=64 proj", 256, 3072, 768);
    gemms("gpt2 T=64 lm head", 256, 768, 50257);
    gemms("gpt2 T=1024 fc", 4096, 768, 3072);
    attention("tiny", 16, 128, 4, 32);
    attention("tiny T=1024", 2, 1024, 4, 32);
    attention("gpt2 T=64", 4, 64, 12, 64);
    attention("gpt2 T=1024", 4, 1024, 12, 64);
    quant("tiny ffn", 2048, 384);
    quant("gpt2 fc", 4096, 3072);
    double again = fma_peak();
    printf("\nMeasured FP32 FMA peak after the kernels: %.1f GFLOP/s%s\n", again,
           again > 1.25 * peak || peak > 1.25 * again ? " (differs by over 25%: the machine is busy, "
                                                         "read GFLOP/s, not % of peak)" : "");
    return 0;
}
