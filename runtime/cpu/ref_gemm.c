/* ref_gemm.c: the three FP32 GEMMs of ref.h (fprop, dgrad, wgrad).
 *
 * Owns the one blocked GEMM the CPU backend has, C (m,n) (+)= A (m,k) B (k,n)
 * with A and B read through row and column strides, so that the transposed
 * operands of dgrad and wgrad are handled while packing rather than by
 * copying the matrix. The structure is the classic one (Goto / BLIS):
 *   - per block of at most MB x NB outputs and KB contraction depth, A is
 *     packed into MR-row panels and B into NR-column panels, cut into KC-deep
 *     slices and zero-padded at the edges, so that the micro-kernel reads
 *     both with unit stride;
 *   - the output is cut into MT x NT tiles that OpenMP threads take
 *     dynamically; each output element belongs to exactly one tile and its
 *     K order is fixed, so results do not depend on the thread count;
 *   - the micro-kernel keeps an MR x NR block of C in registers (12 vectors
 *     of 8 floats) and does one rank-1 update per k.
 * The micro-kernel uses GCC/Clang generic vectors, which the compiler lowers
 * to whatever the target has: the hot function is cloned for x86-64-v3
 * (AVX2 + FMA) and baseline x86-64 (SSE2), picked at load time, and on
 * x86-64-v4 CPUs an AVX-512 tile (12 x 32, same panels, same bits) runs
 * instead (ref_gemm_isa), so the build needs no -march flag. FMA contraction
 * is enabled for those functions only: -std=c11 turns it off globally.
 * With AVX-512 and at most 512 output columns (all of tiny's GEMMs), FP32 operands skip the
 * packing where they can be read in place (gemm_direct): A through its strides, B where its
 * rows are contiguous; each element's sum is the same FMA chain per KC slice, so the same bits.
 *
 * Must not: keep state between calls other than the packing buffers (per
 * thread, reused: pack_buffer), or fail: if the packing buffers cannot be
 * allocated it falls back to a plain loop.
 */
#include "ref.h"
#include "fp8.h"
#include "vmath.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#define OMP_PARALLEL _Pragma("omp parallel")
#define OMP_FOR_DYNAMIC _Pragma("omp for schedule(dynamic, 1)")
#define OMP_PARALLEL_FOR _Pragma("omp parallel for schedule(static)")
#else
#define OMP_PARALLEL
#define OMP_FOR_DYNAMIC
#define OMP_PARALLEL_FOR
#endif

#define MR 6    /* micro-tile rows: 6 x 2 accumulator vectors + 2 B + 1 A = 15 of 16 ymm */
#define NR 16   /* micro-tile columns: two 8-float vectors */
#define KC 256  /* contraction slice: a 16 KiB B micro-panel stays in L1 */
#define MT 96   /* tile rows (16 A panels, 96 KiB per slice: stays in L2) */
#define NT 256  /* tile columns (16 B panels) */
#define MB 2048 /* block rows: packed A is at most MB x KB (16 MiB) */
#define NB 2048 /* block columns: packed B is at most KB x NB (16 MiB) */
#define KB 2048 /* block contraction depth */

/* An operand read through strides: element (i,p) is base[i*rs + p*cs]. Or, with q set, an FP8
 * operand whose element (i,p) is the decoder's: contiguous in p (rs = row length, cs = 1, for
 * A; rs = 1, cs = row length, for B), decoded a panel at a time while packing. */
struct strided {
    const float *base;
    int64_t rs; /* stride between rows */
    int64_t cs; /* stride between columns */
    const QDecoder *q;
};

static int min_int(int a, int b) { return a < b ? a : b; }

static int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }

/* ---- micro-kernel -------------------------------------------------------------------- */

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=fast")
#endif

#if defined(__GNUC__)
typedef float v8 __attribute__((vector_size(32)));

/* c (mr,nr) (+)= a-panel (kc,MR) x b-panel (kc,NR); the panels are zero-padded
 * so the full MR x NR block is always computed and only the valid part is
 * stored. */
static inline __attribute__((always_inline)) void micro_kernel(
    float *restrict c,       // (mr, ldc) block of C
    const float *restrict a, // (kc, MR) packed
    const float *restrict b, // (kc, NR) packed
    int kc, int64_t ldc, int mr, int nr, int load_c)
{
    v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    v8 c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (int p = 0; p < kc; p++) {
        v8 b0, b1;
        memcpy(&b0, b, sizeof b0);
        memcpy(&b1, b + 8, sizeof b1);
        c00 += a[0] * b0;
        c01 += a[0] * b1;
        c10 += a[1] * b0;
        c11 += a[1] * b1;
        c20 += a[2] * b0;
        c21 += a[2] * b1;
        c30 += a[3] * b0;
        c31 += a[3] * b1;
        c40 += a[4] * b0;
        c41 += a[4] * b1;
        c50 += a[5] * b0;
        c51 += a[5] * b1;
        a += MR;
        b += NR;
    }
    v8 acc[MR][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51}};
    if (mr == MR && nr == NR) {
        for (int i = 0; i < MR; i++) {
            for (int h = 0; h < 2; h++) {
                float *dst = c + i * ldc + 8 * h;
                v8 t = acc[i][h];
                if (load_c) {
                    v8 old;
                    memcpy(&old, dst, sizeof old);
                    t += old;
                }
                memcpy(dst, &t, sizeof t);
            }
        }
        return;
    }
    float tmp[MR][NR];
    memcpy(tmp, acc, sizeof tmp);
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = (load_c ? c[i * ldc + j] : 0.0f) + tmp[i][j];
}
#else
/* Portable fallback for compilers without generic vectors: the same blocking,
 * an accumulator array the compiler may vectorize. */
static void micro_kernel(float *restrict c, const float *restrict a, const float *restrict b,
                         int kc, int64_t ldc, int mr, int nr, int load_c)
{
    float acc[MR][NR] = {{0}};
    for (int p = 0; p < kc; p++, a += MR, b += NR)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                acc[i][j] += a[i] * b[j];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < nr; j++)
            c[i * ldc + j] = (load_c ? c[i * ldc + j] : 0.0f) + acc[i][j];
}
#endif

/* One output tile: rows [i0,i1), columns [j0,j1) of the packed block, j
 * counted from the block's first column. i0 and j0 are multiples of MR and NR.
 * B micro-panel outer, A inner: the B panel stays in L1 while A streams from
 * L2. */
HOT_CLONES static void compute_tile(float *c,        // (m, ldc) C at the block's first column
                                    const float *ap, // packed A, (m/MR, kc, MR)
                                    const float *bp, // packed B, (nb/NR, kc, NR)
                                    int kc, int64_t ldc, int i0, int i1, int j0, int j1,
                                    int load_c)
{
    for (int j = j0; j < j1; j += NR) {
        const float *b = bp + (int64_t)(j / NR) * kc * NR;
        int nr = min_int(NR, j1 - j);
        for (int i = i0; i < i1; i += MR) {
            const float *a = ap + (int64_t)(i / MR) * kc * MR;
            micro_kernel(c + i * ldc + j, a, b, kc, ldc, min_int(MR, i1 - i), nr, load_c);
        }
    }
}

/* The AVX-512 tile (x86-64-v4, picked at run time where the CPU has it): the same packed
 * panels, two A panels (12 rows) by two B panels (32 columns) per micro-kernel call, in 24
 * accumulators of 16 floats; the A values are broadcast from memory into the FMAs. Every C
 * element still accumulates a[i][p] * b[p][j] by FMA from 0 in p order and is added to C
 * afterwards, as in micro_kernel, so the two tiles give the same bits (test_ops
 * gemm_isa_identical). Edges (fewer than 12 rows or 32 columns) use micro_kernel. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HAVE_TILE_V4 1
typedef float v16 __attribute__((vector_size(64)));

/* R rows of 32 accumulated floats to C (rows ldc apart), added to what C holds when load_c: the
 * AVX-512 tiles' common epilogue. */
static inline __attribute__((always_inline)) void store_rows32(float *c, int64_t ldc, v16 acc[][2], int R, int load_c)
{
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        for (int h = 0; h < 2; h++) {
            float *dst = c + i * ldc + 16 * h;
            v16 t = acc[i][h];
            if (load_c) {
                v16 old;
                memcpy(&old, dst, sizeof old);
                t += old;
            }
            memcpy(dst, &t, sizeof t);
        }
}

static inline __attribute__((always_inline)) void micro_kernel_12x32(float *restrict c, const float *restrict a0,
                                                                     const float *restrict a1, const float *restrict b,
                                                                     int kc, int64_t ldc, int load_c)
{
    v16 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
    v16 c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0}, c60 = {0}, c61 = {0}, c70 = {0}, c71 = {0};
    v16 c80 = {0}, c81 = {0}, c90 = {0}, c91 = {0}, ca0 = {0}, ca1 = {0}, cb0 = {0}, cb1 = {0};
    const float *b1p = b + (int64_t)kc * NR; /* the next B panel */
    for (int p = 0; p < kc; p++) {
        v16 b0, b1;
        memcpy(&b0, b, sizeof b0);
        memcpy(&b1, b1p, sizeof b1);
        c00 += a0[0] * b0, c01 += a0[0] * b1, c10 += a0[1] * b0, c11 += a0[1] * b1;
        c20 += a0[2] * b0, c21 += a0[2] * b1, c30 += a0[3] * b0, c31 += a0[3] * b1;
        c40 += a0[4] * b0, c41 += a0[4] * b1, c50 += a0[5] * b0, c51 += a0[5] * b1;
        c60 += a1[0] * b0, c61 += a1[0] * b1, c70 += a1[1] * b0, c71 += a1[1] * b1;
        c80 += a1[2] * b0, c81 += a1[2] * b1, c90 += a1[3] * b0, c91 += a1[3] * b1;
        ca0 += a1[4] * b0, ca1 += a1[4] * b1, cb0 += a1[5] * b0, cb1 += a1[5] * b1;
        a0 += MR, a1 += MR, b += NR, b1p += NR;
    }
    v16 acc[12][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31}, {c40, c41}, {c50, c51},
                      {c60, c61}, {c70, c71}, {c80, c81}, {c90, c91}, {ca0, ca1}, {cb0, cb1}};
    store_rows32(c, ldc, acc, 12, load_c);
}

__attribute__((target("arch=x86-64-v4"))) static void compute_tile_v4(float *c, const float *ap, const float *bp,
                                                                    int kc, int64_t ldc, int i0, int i1, int j0,
                                                                    int j1, int load_c)
{
    for (int j = j0; j < j1;) {
        const float *b = bp + (int64_t)(j / NR) * kc * NR;
        if (j + 2 * NR <= j1) {
            int i = i0;
            for (; i + 2 * MR <= i1; i += 2 * MR) {
                const float *a = ap + (int64_t)(i / MR) * kc * MR;
                micro_kernel_12x32(c + i * ldc + j, a, a + (int64_t)kc * MR, b, kc, ldc, load_c);
            }
            for (; i < i1; i += MR) {
                const float *a = ap + (int64_t)(i / MR) * kc * MR;
                micro_kernel(c + i * ldc + j, a, b, kc, ldc, min_int(MR, i1 - i), NR, load_c);
                micro_kernel(c + i * ldc + j + NR, a, b + (int64_t)kc * NR, kc, ldc, min_int(MR, i1 - i), NR, load_c);
            }
            j += 2 * NR;
        } else {
            int nr = min_int(NR, j1 - j);
            for (int i = i0; i < i1; i += MR) {
                const float *a = ap + (int64_t)(i / MR) * kc * MR;
                micro_kernel(c + i * ldc + j, a, b, kc, ldc, min_int(MR, i1 - i), nr, load_c);
            }
            j += NR;
        }
    }
}

/* The direct tile: the same 32 columns and up to 12 rows per call, with A read where it lies,
 * element (i, p) at a[i*ars + p*acs] (row-major A: ars = its row length, acs = 1; a weight
 * gradient's dout^T: ars = 1, acs = dout's row length), and B's rows at b + p*bs (a packed
 * panel pair: bs = NR, the second panel kc*NR on; B's own rows: bs = its row length, the second
 * half 16 floats on). R rows, a constant after inlining. Each C element accumulates by FMA from
 * 0 in p order and is added to C afterwards, as in the packed tiles: the same bits. */
static inline __attribute__((always_inline)) void kernel_direct(float *restrict c, const float *a, int64_t ars,
                                                                int64_t acs, const float *b0, const float *b1,
                                                                int64_t bs, int kc, int64_t ldc, int load_c, int R)
{
    v16 acc[12][2];
#pragma GCC unroll 12
    for (int i = 0; i < R; i++)
        acc[i][0] = acc[i][1] = (v16){0};
    for (int p = 0; p < kc; p++) {
        v16 x0, x1;
        memcpy(&x0, b0, sizeof x0);
        memcpy(&x1, b1, sizeof x1);
#pragma GCC unroll 12
        for (int i = 0; i < R; i++) {
            float ai = a[i * ars];
            acc[i][0] += ai * x0, acc[i][1] += ai * x1;
        }
        a += acs, b0 += bs, b1 += bs;
    }
    store_rows32(c, ldc, acc, R, load_c);
}

/* Rows [i0, i1) of C's 32 columns from j, one KC slice (kc deep) of A from its column p0: twelve
 * rows at a time, then four, then one. */
__attribute__((target("arch=x86-64-v4"))) static void direct_columns(float *c, int64_t ldc, const float *a,
                                                                     int64_t ars, int64_t acs, const float *b0,
                                                                     const float *b1, int64_t bs, int kc, int i0,
                                                                     int i1, int load_c)
{
    int i = i0;
    if (acs == 1) { /* row-major A */
        for (; i + 12 <= i1; i += 12)
            kernel_direct(c + i * ldc, a + i * ars, ars, 1, b0, b1, bs, kc, ldc, load_c, 12);
    } else {
        for (; i + 12 <= i1; i += 12)
            kernel_direct(c + i * ldc, a + i * ars, 1, acs, b0, b1, bs, kc, ldc, load_c, 12);
    }
    for (; i + 4 <= i1; i += 4)
        kernel_direct(c + i * ldc, a + i * ars, ars, acs, b0, b1, bs, kc, ldc, load_c, 4);
    for (; i < i1; i++)
        kernel_direct(c + i * ldc, a + i * ars, ars, acs, b0, b1, bs, kc, ldc, load_c, 1);
}
#endif

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

/* Which tile the GEMM runs: the AVX-512 one where the CPU has it, unless FP8C_CPU_ISA=avx2 or
 * ref_gemm_isa(0) says otherwise. Decided once per process, before any GEMM runs in parallel. */
static int tile_v4 = -1;

static int cpu_has_v4(void)
{
#ifdef HAVE_TILE_V4
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
#else
    return 0;
#endif
}

int ref_gemm_isa(int set)
{
    int v = __atomic_load_n(&tile_v4, __ATOMIC_RELAXED);
    if (set >= 0)
        v = set && cpu_has_v4();
    else if (v < 0) {
        const char *isa = getenv("FP8C_CPU_ISA");
        v = cpu_has_v4() && !(isa && strcmp(isa, "avx2") == 0);
    }
    __atomic_store_n(&tile_v4, v, __ATOMIC_RELAXED);
    return v;
}

#if defined(__GNUC__)
/* An 8 x 8 block: rows of in (ldi apart) in, columns out (ldo apart), through vtranspose8. */
static inline __attribute__((always_inline)) void transpose8(float *out, int64_t ldo, const float *in, int64_t ldi)
{
    vf8 r[8];
    for (int i = 0; i < 8; i++)
        r[i] = vld8(in + i * ldi);
    vtranspose8(r);
    for (int i = 0; i < 8; i++)
        vst8(out + i * ldo, r[i]);
}
#endif

/* ---- packing ------------------------------------------------------------------------------
 * A whole block (up to MB x KB of A, KB x NB of B) is packed before any of its
 * tiles runs, so a block costs two synchronisation points (after packing,
 * after the tiles) however many KC slices it has: on a busy machine every
 * barrier can cost a scheduler time slice. Slice s (contraction rows
 * [s*KC, s*KC+kc) of the block) of packed A starts at s*KC*mpad and holds
 * mpad/MR panels of (kc, MR); packed B likewise with npad and NR. */

#if defined(__GNUC__)
/* One transposed row r (8 floats, the first w <= 8 of which belong to it) to dst, where the next
 * panel row starts w floats on and is stored after it: a whole 8-float store whose extra lanes
 * the next row's store overwrites, one store instead of a copy through the stack; the last row
 * (last set) stores exactly w, as nothing after it is ours to overwrite. */
static inline __attribute__((always_inline)) void store_panel_row(float *dst, vf8 r, int w, int last)
{
    if (!last || w == 8) {
        vst8(dst, r);
    } else if (w == 6) {
        typedef float vf4 __attribute__((vector_size(16)));
        typedef float vf2 __attribute__((vector_size(8)));
        vf4 lo = __builtin_shufflevector(r, r, 0, 1, 2, 3);
        vf2 hi = __builtin_shufflevector(r, r, 4, 5);
        memcpy(dst, &lo, sizeof lo);
        memcpy(dst + 4, &hi, sizeof hi);
    } else {
        float t[8];
        vst8(t, r);
        memcpy(dst, t, (size_t)w * sizeof *t);
    }
}

/* Whether an FP8 operand's slice of kc columns from column p is decoded eight columns at a time
 * straight into registers (fp8_pack8): E4M3 or E5M2, tiles a multiple of 8 wide, p and kc
 * multiples of 8, so that no run of eight crosses a tile or the slice's end. */
static int fp8_pack8_ok(const QDecoder *d, int p, int kc)
{
    return (d->fmt == Q_E4M3 || d->fmt == Q_E5M2) && d->tc % 8 == 0 && p % 8 == 0 && kc % 8 == 0;
}

/* Rows r0 .. r0 + n - 1 (n <= 8) of an FP8 operand, columns [c, c + kc8) with kc8 a multiple of 8,
 * decoded (vdecode8) and transposed in registers: for each column c + p, the eight rows' values
 * (zero past n) go to out + p * ldo, w of them (w <= 8). The packed panels' layout, without a
 * decoded copy in between. Inlined with the format (e4) and, for whole panels, n as constants
 * (fp8_pack8 picks), so that the eight rows stay in registers and the decoder's shifts and
 * offsets are immediates. */
static inline __attribute__((always_inline)) void fp8_pack8_body(float *out, int64_t ldo, int w, const QDecoder *d,
                                                                 int r0, int n, int c, int kc8, int e4)
{
    const uint8_t *rowp[8];
    int64_t srow[8];
    for (int k = 0; k < n; k++) {
        rowp[k] = d->codes + (size_t)(r0 + k) * (size_t)d->C;
        srow[k] = (int64_t)((r0 + k) / d->tr) * d->s_row;
    }
    float sinv[8] = {0};
    int next = c; /* the first column of the next tile: where the scales change */
    for (int p = 0; p < kc8; p += 8) {
        if (c + p >= next) { /* a new tile column: its eight rows' scales */
            int64_t tile = (c + p) / d->tc;
            next = (int)((tile + 1) * d->tc);
            for (int k = 0; k < n; k++) {
                int64_t si = srow[k] + tile * d->s_col;
                sinv[k] = d->scale_e8m0 ? e8m0_value(d->scale_e8m0[si]) : d->scale_inv[si];
            }
        }
        vf8 v[8]; /* unrolled, so that v stays in registers through the transpose */
#pragma GCC unroll 8
        for (int k = 0; k < 8; k++) {
            v[k] = (vf8){0};
            if (k < n)
                vdecode8(&v[k], rowp[k] + c + p, sinv[k], e4, d->lut);
        }
        vtranspose8(v);
#pragma GCC unroll 8
        for (int q = 0; q < 8; q++) {
            if (ldo == w) /* rows back to back (an A panel): overlapping stores */
                store_panel_row(out + (int64_t)(p + q) * ldo, v[q], w, p + q == kc8 - 1);
            else
                memcpy(out + (int64_t)(p + q) * ldo, &v[q], (size_t)w * sizeof(float));
        }
    }
}

static inline __attribute__((always_inline)) void fp8_pack8(float *out, int64_t ldo, int w, const QDecoder *d, int r0,
                                                            int n, int c, int kc8)
{
    int e4 = d->fmt == Q_E4M3;
    if (n == 6 && w == 6) /* a whole A panel (MR rows) */
        e4 ? fp8_pack8_body(out, ldo, 6, d, r0, 6, c, kc8, 1) : fp8_pack8_body(out, ldo, 6, d, r0, 6, c, kc8, 0);
    else if (n == 8 && w == 8) /* half a whole B panel */
        e4 ? fp8_pack8_body(out, ldo, 8, d, r0, 8, c, kc8, 1) : fp8_pack8_body(out, ldo, 8, d, r0, 8, c, kc8, 0);
    else
        fp8_pack8_body(out, ldo, w, d, r0, n, c, kc8, e4);
}
#endif

/* Panel ip of the A block at rows [i0, i0+mb), columns [p0, p0+kb). */
HOT_CLONES_V4 static void pack_a_panel(float *ap, struct strided a, int i0, int mb, int64_t mpad, int p0, int kb,
                         int ip)
{
    int ii = i0 + ip * MR, mr = min_int(MR, i0 + mb - ii);
    float dec[8 * KC]; /* an FP8 panel's slice, decoded: 8 rows of kc, zero below the block */
    for (int pc = 0; pc < kb; pc += KC) {
        int kc = min_int(KC, kb - pc);
        float *dst = ap + (int64_t)pc * mpad + (int64_t)ip * kc * MR;
        const float *src0 = a.base ? a.base + (int64_t)ii * a.rs + (int64_t)(p0 + pc) * a.cs : NULL;
        int64_t rs = a.rs, cs = a.cs;
        int rows8 = ii + 8 <= i0 + mb; /* the two rows below the panel exist */
#if defined(__GNUC__)
        if (a.q && fp8_pack8_ok(a.q, p0 + pc, kc)) {
            fp8_pack8(dst, MR, MR, a.q, ii, mr, p0 + pc, kc);
            continue;
        }
#endif
        if (a.q) {
            int nr = min_int(8, i0 + mb - ii);
            q_decode_rect(a.q, dec, KC, ii, nr, p0 + pc, kc);
            memset(dec + nr * KC, 0, (size_t)(8 - nr) * KC * sizeof *dec);
            src0 = dec, rs = KC, cs = 1, rows8 = 1;
        }
        int p = 0;
#if defined(__GNUC__)
        /* A's rows contiguous in p (forward and data-gradient GEMMs): 8 rows transposed 8 x 8 at
         * a time, the panel's 6 kept */
        if (cs == 1 && (mr == MR || a.q) && rows8) {
            for (; p + 8 <= kc; p += 8) {
                vf8 r[8];
#pragma GCC unroll 8
                for (int i = 0; i < 8; i++)
                    r[i] = vld8(src0 + i * rs + p);
                vtranspose8(r);
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++)
                    store_panel_row(dst + (p + q) * MR, r[q], MR, p + q == kc - 1);
            }
        }
#endif
        for (; p < kc; p++) {
            const float *src = src0 + (int64_t)p * cs;
            for (int i = 0; i < mr; i++)
                dst[p * MR + i] = src[i * rs];
            for (int i = mr; i < MR; i++)
                dst[p * MR + i] = 0.0f;
        }
    }
}

/* Panel jp of the B block at rows [p0, p0+kb), columns [j0, j0+nb). */
HOT_CLONES_V4 static void pack_b_panel(float *bp, struct strided b, int j0, int nb, int64_t npad, int p0, int kb,
                         int jp)
{
    int jj = j0 + jp * NR, nr = min_int(NR, j0 + nb - jj);
    float dec[NR * KC]; /* an FP8 panel's slice, decoded: NR columns of kc, zero past the block */
    for (int pc = 0; pc < kb; pc += KC) {
        int kc = min_int(KC, kb - pc);
        float *dst = bp + (int64_t)pc * npad + (int64_t)jp * kc * NR;
        const float *src0 = b.base ? b.base + (int64_t)(p0 + pc) * b.rs + (int64_t)jj * b.cs : NULL;
        int64_t rs = b.rs, cs = b.cs;
        int full = nr == NR;
#if defined(__GNUC__)
        if (b.q && fp8_pack8_ok(b.q, p0 + pc, kc)) {
            for (int g = 0; g < NR; g += 8)
                fp8_pack8(dst + g, NR, 8, b.q, jj + g, nr - g < 0 ? 0 : min_int(8, nr - g), p0 + pc, kc);
            continue;
        }
#endif
        if (b.q) {
            q_decode_rect(b.q, dec, KC, jj, nr, p0 + pc, kc);
            memset(dec + nr * KC, 0, (size_t)(NR - nr) * KC * sizeof *dec);
            src0 = dec, rs = 1, cs = KC, full = 1;
        }
        int p = 0;
#if defined(__GNUC__)
        /* B's columns contiguous in p (a forward GEMM's w): whole panels 8 x 8 at a time */
        if (rs == 1 && full)
            for (; p + 8 <= kc; p += 8)
                for (int j = 0; j < NR; j += 8)
                    transpose8(dst + p * NR + j, NR, src0 + (int64_t)j * cs + p, cs);
#endif
        /* B's rows contiguous in j (data- and weight-gradient GEMMs): NR floats per p in one
         * copy (the strided element loop below does not vectorize, and it was 9% of a gpt2 step) */
        if (cs == 1 && nr == NR)
            for (; p < kc; p++)
                memcpy(dst + p * NR, src0 + (int64_t)p * rs, NR * sizeof *dst);
        for (; p < kc; p++) {
            const float *src = src0 + (int64_t)p * rs;
            for (int j = 0; j < nr; j++)
                dst[p * NR + j] = src[j * cs];
            for (int j = nr; j < NR; j++)
                dst[p * NR + j] = 0.0f;
        }
    }
}

/* Whole panels first, first + 1, ... (count of them, w = MR or NR wide) of a packed block (pad
 * rows or columns per slice, the layout above), from an operand whose contraction row p is
 * contiguous at src + p * ld: row p of all the panels is read as one run. Inlined with a
 * constant w, so each copy is a fixed-size move. */
static inline __attribute__((always_inline)) void pack_runs(float *packed, int64_t pad, int first, const float *src,
                                                            int64_t ld, int kb, int count, int w)
{
    for (int pc = 0; pc < kb; pc += KC) {
        int kc = min_int(KC, kb - pc);
        float *dst = packed + (int64_t)pc * pad + (int64_t)first * kc * w;
        const float *row = src + (int64_t)pc * ld;
        for (int p = 0; p < kc; p++)
            for (int g = 0; g < count; g++)
                memcpy(dst + (int64_t)g * kc * w + p * w, row + (int64_t)p * ld + g * w, (size_t)w * sizeof *dst);
    }
}

/* A panels [ip0, ip0 + count) of the block. Where A's columns are contiguous in i (rs == 1: a
 * weight gradient's dout^T) and the panels are whole, contraction row p of all of them is one
 * run of count x MR floats (the lm head's dout has 50257-float rows: one panel at a time read
 * 24 bytes per 200 KB row, a page apart). Otherwise panel by panel. */
#define A_GROUP 8
HOT_CLONES_V4 static void pack_a_group(float *ap, struct strided a, int i0, int mb, int64_t mpad, int p0, int kb,
                                    int ip0, int count)
{
    if (a.q || a.rs != 1 || (ip0 + count) * MR > mb) {
        for (int ip = ip0; ip < ip0 + count; ip++)
            pack_a_panel(ap, a, i0, mb, mpad, p0, kb, ip);
        return;
    }
    pack_runs(ap, mpad, ip0, a.base + (int64_t)p0 * a.cs + (int64_t)(i0 + ip0 * MR), a.cs, kb, count, MR);
}

/* B panels [jp0, jp0 + count) of the block. Where B's rows are contiguous in j (cs == 1) and
 * the panels are whole, row p of all of them is one run of count x NR floats, copied panel by
 * panel before moving to row p + 1: one sequential read per row instead of one short read per
 * row and panel (the lm head's data gradient reads 50257 rows this way). Otherwise panel by
 * panel. */
#define B_GROUP 4
HOT_CLONES_V4 static void pack_b_group(float *bp, struct strided b, int j0, int nb, int64_t npad, int p0, int kb,
                                    int jp0, int count)
{
    if (b.q || b.cs != 1 || (jp0 + count) * NR > nb) {
        for (int jp = jp0; jp < jp0 + count; jp++)
            pack_b_panel(bp, b, j0, nb, npad, p0, kb, jp);
        return;
    }
    pack_runs(bp, npad, jp0, b.base + (int64_t)p0 * b.rs + (int64_t)(j0 + jp0 * NR), b.rs, kb, count, NR);
}

/* ---- driver ----------------------------------------------------------------------------- */

/* Element (r, p) of an operand, r its non-contracted index (A's row, B's column). */
static float operand_at(const struct strided *x, int r, int p, int is_a)
{
    if (x->q) {
        float v;
        q_decode_rect(x->q, &v, 1, r, 1, p, 1);
        return v;
    }
    return is_a ? x->base[r * x->rs + p * x->cs] : x->base[p * x->rs + r * x->cs];
}

/* The fallback when packing buffers cannot be allocated. */
static void gemm_plain(float *c, int64_t ldc, struct strided a, struct strided b, int m, int n,
                       int k, int accumulate)
{
    OMP_PARALLEL_FOR
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            float s = accumulate ? c[i * ldc + j] : 0.0f;
            for (int p = 0; p < k; p++)
                s += operand_at(&a, i, p, 1) * operand_at(&b, j, p, 0);
            c[i * ldc + j] = s;
        }
    }
}

static float *alloc_aligned(int64_t nfloats)
{
    return aligned_alloc(64, (size_t)round_up(nfloats * (int64_t)sizeof(float), 64));
}

/* Packing buffer `which` (0: A, 1: B) of at least nfloats, kept per calling thread and grown on
 * demand. Allocated afresh per call, a buffer of a megabyte or more is a new mmap each time
 * (glibc's threshold only rises past a size once a larger block is freed), and its page faults
 * and the kernel's zeroing cost more than packing a small GEMM: tiny's 2048 x 128 x 128 forward
 * ran at 36-43% of the peak while its buffer was new every call, 72% once reused. The buffers
 * hold no result between calls. */
static float *pack_buffer(int which, int64_t nfloats)
{
    static _Thread_local struct {
        float *p;
        int64_t n;
    } buf[2];
    if (buf[which].n < nfloats) {
        free(buf[which].p);
        buf[which].p = alloc_aligned(nfloats);
        buf[which].n = buf[which].p ? nfloats : 0;
    }
    return buf[which].p;
}

#ifdef HAVE_TILE_V4
/* Whether gemm takes the direct path: the AVX-512 tile, FP32 operands, A with a unit stride one
 * way or the other, n a whole number of 32-column tiles and at most DIRECT_N of them, and B either
 * read in place (rows contiguous in j) or small enough to pack whole (k <= KB). With few output
 * columns, each element of A feeds only 2n FLOPs, and packing it (read, transpose, write, read
 * again) cost up to a quarter of tiny's GEMMs; B in place saves its copy too. */
#define DIRECT_N 512
#define KD 512 /* a multiple of KC */
static int use_direct(struct strided a, struct strided b, int n, int k)
{
    return ref_gemm_isa(-1) && !a.q && !b.q && (a.cs == 1 || a.rs == 1) && n % 32 == 0 && n <= DIRECT_N &&
           (b.cs == 1 || k <= KB);
}

/* gemm by the direct tile: tiles of MT rows by 32 x (a few) columns taken dynamically, each
 * running its KC slices in order; B packed first (all of it, one block) unless read in place. */
static void gemm_direct(float *c, int64_t ldc, struct strided a, struct strided b, int m, int n, int k, int accumulate)
{
    int packb = b.cs != 1;
    int64_t npad = n; /* a multiple of NR */
    float *bp = packb ? pack_buffer(1, npad * k) : NULL;
    if (packb && !bp) {
        gemm_plain(c, ldc, a, b, m, n, k, accumulate);
        return;
    }
    int bpanels = n / NR, bgroups = (bpanels + B_GROUP - 1) / B_GROUP;
    /* 64 columns per tile where n has whole 64s and that still makes 16 tiles or more, else 32 */
    int nt = n % 64 == 0 && (int64_t)((m + MT - 1) / MT) * (n / 64) >= 16 ? 64 : 32;
    int mtiles = (m + MT - 1) / MT, ntiles = n / nt;
    /* A contraction longer than a block (a weight gradient over more than KB tokens) in chunks of
     * KD, all tiles through one chunk before the next, so that the chunk's rows of A and B are
     * still in L2 when the next tile reads them (B = 64 x 128 tokens: the weight gradients'
     * operands are 4-12 MiB, read once per tile). Each tile still takes its KC slices in order:
     * the same bits. */
    int kchunk = k > KB ? KD : k;
    OMP_PARALLEL
    {
        if (packb) {
            OMP_FOR_DYNAMIC
            for (int t = 0; t < bgroups; t++)
                pack_b_group(bp, b, 0, n, npad, 0, k, t * B_GROUP, min_int(B_GROUP, bpanels - t * B_GROUP));
        }
        for (int kd = 0; kd < k; kd += kchunk) {
            int kd1 = min_int(k, kd + kchunk);
            OMP_FOR_DYNAMIC
            for (int t = 0; t < mtiles * ntiles; t++) {
                int i0 = t / ntiles * MT, i1 = min_int(i0 + MT, m), j0 = t % ntiles * nt;
                for (int pc = kd; pc < kd1; pc += KC) {
                    int kc = min_int(KC, kd1 - pc);
                    const float *ak = a.base + (int64_t)pc * a.cs;
                    for (int j = j0; j < j0 + nt; j += 32) {
                        const float *b0, *b1;
                        int64_t bs;
                        if (packb) {
                            b0 = bp + (int64_t)pc * npad + (int64_t)(j / NR) * kc * NR, b1 = b0 + (int64_t)kc * NR;
                            bs = NR;
                        } else {
                            b0 = b.base + (int64_t)pc * b.rs + j, b1 = b0 + 16;
                            bs = b.rs;
                        }
                        direct_columns(c + j, ldc, ak, a.rs, a.cs, b0, b1, bs, kc, i0, i1, accumulate || pc > 0);
                    }
                }
            }
            /* the loop's barrier: every tile has the chunk's slices before any takes the next */
        }
    }
}

/* An FP8 A with at most DIRECT_N output columns (all of tiny's qgemms): B packed whole first, as
 * gemm_direct does; then each thread decodes A twelve rows and one KC slice at a time into its
 * own buffer (two panels, 12 KiB: L1) right before the AVX-512 tile runs them against every
 * column, instead of decoding all of A into a block buffer (megabytes, out to L3 and back) behind
 * a barrier. The same panels, kernel and slice order as the packed path: the same bits. */
#define FUSED_ROWS 24 /* rows per task: a 128-row weight gradient still makes six */
static int use_fused_a(struct strided a, int n, int k)
{
    return ref_gemm_isa(-1) && a.q && n <= DIRECT_N && k <= KB;
}

static void gemm_fused_a(float *c, int64_t ldc, struct strided a, struct strided b, int m, int n, int k,
                         int accumulate)
{
    int64_t npad = round_up(n, NR);
    float *bp = pack_buffer(1, npad * k);
    if (!bp) {
        gemm_plain(c, ldc, a, b, m, n, k, accumulate);
        return;
    }
    int bpanels = (int)(npad / NR), bgroups = (bpanels + B_GROUP - 1) / B_GROUP;
    int tasks = (m + FUSED_ROWS - 1) / FUSED_ROWS, failed = 0;
    OMP_PARALLEL
    {
        float *ap = pack_buffer(0, 2 * KC * MR); /* this thread's two panels */
        if (!ap)
            __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
        OMP_FOR_DYNAMIC
        for (int t = 0; t < bgroups; t++)
            pack_b_group(bp, b, 0, n, npad, 0, k, t * B_GROUP, min_int(B_GROUP, bpanels - t * B_GROUP));
        /* after the loop's barrier every thread has said whether it has a buffer */
        if (!__atomic_load_n(&failed, __ATOMIC_RELAXED)) {
            OMP_FOR_DYNAMIC
            for (int t = 0; t < tasks; t++) {
                int i1 = min_int(m, (t + 1) * FUSED_ROWS);
                for (int pc = 0; pc < k; pc += KC) {
                    int kc = min_int(KC, k - pc);
                    for (int i = t * FUSED_ROWS; i < i1; i += 2 * MR) {
                        int rows = min_int(2 * MR, i1 - i);
                        for (int ip = 0; ip * MR < rows; ip++)
                            pack_a_panel(ap, a, i, rows, 2 * MR, pc, kc, ip);
                        compute_tile_v4(c + (int64_t)i * ldc, ap, bp + (int64_t)pc * npad, kc, ldc, 0, rows, 0, n,
                                        accumulate || pc > 0);
                    }
                }
            }
        }
    }
    if (failed) /* a thread had no buffer: nothing was computed */
        gemm_plain(c, ldc, a, b, m, n, k, accumulate);
}
#endif

/* c (m,n) = [c +] a (m,k) b (k,n); c has row stride ldc and unit column stride.
 * Blocks of MB x NB outputs and KB contraction depth bound the packing
 * buffers; the GEMMs of a small model are one block. */
static void gemm(float *c, int64_t ldc, struct strided a, struct strided b, int m, int n, int k,
                 int accumulate)
{
    if (m <= 0 || n <= 0)
        return;
    if (k <= 0) {
        if (!accumulate)
            for (int i = 0; i < m; i++)
                memset(c + i * ldc, 0, (size_t)n * sizeof *c);
        return;
    }
#ifdef HAVE_TILE_V4
    if (use_direct(a, b, n, k)) {
        gemm_direct(c, ldc, a, b, m, n, k, accumulate);
        return;
    }
    if (use_fused_a(a, n, k)) {
        gemm_fused_a(c, ldc, a, b, m, n, k, accumulate);
        return;
    }
#endif
    int kbmax = min_int(k, KB);
    float *ap = pack_buffer(0, round_up(min_int(m, MB), MR) * kbmax); // (kb/KC, mpad/MR, kc, MR)
    float *bp = pack_buffer(1, round_up(min_int(n, NB), NR) * kbmax); // (kb/KC, npad/NR, kc, NR)
    if (!ap || !bp) {
        gemm_plain(c, ldc, a, b, m, n, k, accumulate);
        return;
    }
    int v4 = ref_gemm_isa(-1);
    (void)v4;
    OMP_PARALLEL
    {
        for (int jb = 0; jb < n; jb += NB) {
            int nb = min_int(NB, n - jb);
            int64_t npad = round_up(nb, NR);
            /* tile width: NT, halved (down to 64) while a block would have fewer than 16 tiles,
             * so that a small-M GEMM (256 rows: 3 tile rows) still spreads over the threads */
            int mrows = min_int(m, MB), nt = NT;
            while (nt > 64 && (int64_t)((mrows + MT - 1) / MT) * ((nb + nt - 1) / nt) < 16)
                nt /= 2;
            int bpanels = (int)(npad / NR), ntiles = (nb + nt - 1) / nt;
            for (int pb = 0; pb < k; pb += KB) {
                int kb = min_int(KB, k - pb);
                for (int ib = 0; ib < m; ib += MB) {
                    int mb = min_int(MB, m - ib);
                    int64_t mpad = round_up(mb, MR);
                    int apanels = (int)(mpad / MR), mtiles = (mb + MT - 1) / MT;
                    /* B is packed with the first row block and reused by the others */
                    int bgroups = (bpanels + B_GROUP - 1) / B_GROUP, agroups = (apanels + A_GROUP - 1) / A_GROUP;
                    int npack = agroups + (ib == 0 ? bgroups : 0);
                    OMP_FOR_DYNAMIC
                    for (int t = 0; t < npack; t++) {
                        if (t < agroups) {
                            int g0 = t * A_GROUP;
                            pack_a_group(ap, a, ib, mb, mpad, pb, kb, g0, min_int(A_GROUP, apanels - g0));
                        } else {
                            int g0 = (t - agroups) * B_GROUP;
                            pack_b_group(bp, b, jb, nb, npad, pb, kb, g0, min_int(B_GROUP, bpanels - g0));
                        }
                    }
                    OMP_FOR_DYNAMIC
                    for (int t = 0; t < mtiles * ntiles; t++) {
                        int i0 = t / ntiles * MT, j0 = t % ntiles * nt;
                        for (int pc = 0; pc < kb; pc += KC)
#ifdef HAVE_TILE_V4
                            if (v4)
                                compute_tile_v4(c + ib * ldc + jb, ap + pc * mpad, bp + pc * npad,
                                                min_int(KC, kb - pc), ldc, i0, min_int(i0 + MT, mb),
                                                j0, min_int(j0 + nt, nb), accumulate || pb + pc > 0);
                            else
#endif
                            compute_tile(c + ib * ldc + jb, ap + pc * mpad, bp + pc * npad,
                                         min_int(KC, kb - pc), ldc, i0, min_int(i0 + MT, mb),
                                         j0, min_int(j0 + nt, nb), accumulate || pb + pc > 0);
                    }
                    /* the implicit barrier above keeps the buffers until every tile is done */
                }
            }
        }
    }
}

/* ---- the ops of ref.h ------------------------------------------------------------------ */

void ref_matmul_fwd(float *out, const float *inp, const float *w, const float *bias, int M, int K,
                    int N)
{
    struct strided a = {inp, K, 1, NULL}; /* inp (M,K) */
    struct strided b = {w, 1, K, NULL};   /* w^T: (k,n) element is w[n*K + k] */
    if (bias) {
        OMP_PARALLEL_FOR
        for (int i = 0; i < M; i++)
            memcpy(out + (int64_t)i * N, bias, (size_t)N * sizeof *out);
    }
    gemm(out, N, a, b, M, N, K, bias != NULL);
}

void ref_qmatmul_fwd(float *out, const QDecoder *inp, const QDecoder *w, const float *bias, int M, int K, int N)
{
    struct strided a = {NULL, K, 1, inp}; /* inp (M,K) */
    struct strided b = {NULL, 1, K, w};   /* w^T */
    if (bias) {
        OMP_PARALLEL_FOR
        for (int i = 0; i < M; i++)
            memcpy(out + (int64_t)i * N, bias, (size_t)N * sizeof *out);
    }
    gemm(out, N, a, b, M, N, K, bias != NULL);
}

void ref_qmatmul_add(float *out, float *scratch, const QDecoder *inp, const QDecoder *w, int M, int K, int N)
{
    struct strided a = {NULL, K, 1, inp}; /* inp (M,K) */
    struct strided b = {NULL, 1, K, w};   /* w^T */
    if (K <= KC) { /* one slice: each element is out + (its rounded sum), as below */
        gemm(out, N, a, b, M, N, K, 1);
        return;
    }
    gemm(scratch, N, a, b, M, N, K, 0);
    ref_accumulate(out, scratch, (int64_t)M * N);
}

void ref_matmul_bwd_data(float *dinp, const float *dout, const float *w, int M, int K, int N)
{
    struct strided a = {dout, N, 1, NULL}; /* dout (M,N) */
    struct strided b = {w, K, 1, NULL};    /* w (N,K) */
    gemm(dinp, K, a, b, M, K, N, 1);
}

void ref_matmul_bwd_weight(float *dw, float *dbias, const float *dout, const float *inp, int M,
                           int K, int N)
{
    struct strided a = {dout, 1, N, NULL}; /* dout^T: (n,m) element is dout[m*N + n] */
    struct strided b = {inp, K, 1, NULL};  /* inp (M,K) */
    gemm(dw, K, a, b, N, K, M, 1);
    if (!dbias)
        return;
    /* column sums, 64-column chunks per thread so that rows are read in runs */
    int nchunk = (N + 63) / 64;
    OMP_PARALLEL_FOR
    for (int ch = 0; ch < nchunk; ch++) {
        int j0 = ch * 64, j1 = min_int(N, j0 + 64);
        for (int i = 0; i < M; i++) {
            const float *row = dout + (int64_t)i * N;
            for (int j = j0; j < j1; j++)
                dbias[j] += row[j];
        }
    }
}

/* ---- transpose ---- */


/* One cache block of ref_transpose: rows [i0, i1), columns [j0, j1). */
HOT_CLONES static void transpose_tile(float *out, const float *in, int64_t R, int64_t C, int64_t i0, int64_t i1, int64_t j0,
                                      int64_t j1)
{
    {
        int64_t i8 = i0, j8 = j0;
#if defined(__GNUC__)
        i8 = i0 + (i1 - i0) / 8 * 8, j8 = j0 + (j1 - j0) / 8 * 8;
        for (int64_t i = i0; i < i8; i += 8)
            for (int64_t j = j0; j < j8; j += 8)
                transpose8(out + j * R + i, R, in + i * C + j, C);
#endif
        /* the ragged edges: columns past j8 of every row, then rows past i8 */
        for (int64_t i = i0; i < i8; i++)
            for (int64_t j = j8; j < j1; j++)
                out[j * R + i] = in[i * C + j];
        for (int64_t i = i8; i < i1; i++)
            for (int64_t j = j0; j < j1; j++)
                out[j * R + i] = in[i * C + j];
    }
}

void ref_transpose(float *out, const float *in, int64_t R, int64_t C)
{
    enum { TB = 32 }; /* cache blocks */
    int64_t nbr = (R + TB - 1) / TB, nbc = (C + TB - 1) / TB;
#pragma omp parallel for schedule(static) if (R * C > 65536)
    for (int64_t t = 0; t < nbr * nbc; t++) {
        int64_t i0 = t / nbc * TB, j0 = t % nbc * TB;
        transpose_tile(out, in, R, C, i0, i0 + TB < R ? i0 + TB : R, j0, j0 + TB < C ? j0 + TB : C);
    }
}
