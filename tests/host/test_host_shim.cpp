// test_host_shim.cpp: the host tier's shim checked on its own (tests only).
//   mma_*      mma.sync's emulation against plain matrix products, the fragments scattered and
//              gathered with the PTX ISA's tables ("Matrix Fragments for mma.m16n8k32" and
//              "... mma.m16n8k16 with floating point type"), written out here independently of
//              host_rt.cpp (which inverts them) and of the templates;
//   ldmatrix_* ldmatrix .x4 and .x4.trans against the ISA's description of what each lane gets;
//   ldsm_mma   the two together as a kernel uses them (A row-major and B^T row-major in shared
//              memory, fragments by ldmatrix, product by mma) against the product;
//   shfl, ballot, race_*, deadlock, trap, cp_async: the execution model cuda_host.h promises.
// One PASS/FAIL line per case.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
#define FMT_E4M3 0
#define FMT_E5M2 1
#include "cuda_host.h"
#include "cuda_host_ptx.h"

static int fails = 0;
static void report(const char *name, int ok, const char *why) {
    if (ok) printf("PASS %s\n", name);
    else printf("FAIL %s: %s\n", name, why), fails++;
}

static unsigned long long rng = 0x9e3779b97f4a7c15ULL;
static u32 rnd() {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return (u32)(rng >> 11);
}

static int launch(void (*thunk)(void **), unsigned threads, int order, char *err, size_t n, unsigned smem = 0) {
    Fp8cHostLaunch L = {{1, 1, 1}, {threads, 1, 1}, smem, nullptr, order, err, n};
    return fp8c_host_launch(&L, thunk, nullptr, nullptr);
}

// ---- mma.sync ---------------------------------------------------------------------------------------
// The warp's fragments, per lane: a[4], b[2], c/d[4].
static u32 g_a[32][4], g_b[32][2];
static float g_c[32][4];
static int g_kind;

static void mma_kernel(void **) {
    int l = threadIdx.x;
    float d[4];
    memcpy(d, g_c[l], sizeof d);
    u32 a[4];
    memcpy(a, g_a[l], sizeof a);
    switch (g_kind) {
    case 0: mma_m16n8k32_fp8<FMT_E4M3, FMT_E4M3>(d, a, g_b[l][0], g_b[l][1]); break;
    case 1: mma_m16n8k32_fp8<FMT_E4M3, FMT_E5M2>(d, a, g_b[l][0], g_b[l][1]); break;
    case 2: mma_m16n8k32_fp8<FMT_E5M2, FMT_E4M3>(d, a, g_b[l][0], g_b[l][1]); break;
    case 3: mma_m16n8k32_fp8<FMT_E5M2, FMT_E5M2>(d, a, g_b[l][0], g_b[l][1]); break;
    case 4: mma_m16n8k16_bf16(d, a, g_b[l][0], g_b[l][1]); break;
    default: mma_m16n8k16_f16(d, a, g_b[l][0], g_b[l][1]); break;
    }
    memcpy(g_c[l], d, sizeof d);
}

static double fp8v(int fmt, u8 c) { return fmt ? fp8c_e5m2_to_f32(c) : fp8c_e4m3_to_f32(c); }

static void test_mma(int kind) {
    const char *names[] = {"mma_m16n8k32_e4m3_e4m3", "mma_m16n8k32_e4m3_e5m2", "mma_m16n8k32_e5m2_e4m3", "mma_m16n8k32_e5m2_e5m2",
                           "mma_m16n8k16_bf16", "mma_m16n8k16_f16"};
    int K = kind < 4 ? 32 : 16;
    static u16 A[16][32], B[32][8]; // codes: FP8 in the low byte, or 16-bit values
    static float C[16][8];
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < K; k++) {
            u32 v = rnd();
            if (kind < 4) A[r][k] = (u8)(v & 0x77 ? v & 0xf7 : 1) & ((v & 0x7e) == 0x7e ? 0xfd : 0xff); // finite codes, either sign
            else A[r][k] = kind == 4 ? fp8c_f32_to_bf16((float)((int)(v % 2001) - 1000) / 256.0f) : fp8c_f32_to_f16((float)((int)(v % 2001) - 1000) / 256.0f);
        }
    for (int k = 0; k < K; k++)
        for (int n = 0; n < 8; n++) {
            u32 v = rnd();
            if (kind < 4) B[k][n] = (u8)(v & 0x77 ? v & 0xf7 : 1) & ((v & 0x7e) == 0x7e ? 0xfd : 0xff);
            else B[k][n] = kind == 4 ? fp8c_f32_to_bf16((float)((int)(v % 2001) - 1000) / 128.0f) : fp8c_f32_to_f16((float)((int)(v % 2001) - 1000) / 128.0f);
        }
    for (int r = 0; r < 16; r++)
        for (int n = 0; n < 8; n++) C[r][n] = (float)((int)(rnd() % 201) - 100) / 8.0f;
    memset(g_a, 0, sizeof g_a), memset(g_b, 0, sizeof g_b);
    // scatter, in the tables' direction: element i of lane (g, t) is at (row, col)
    for (int lane = 0; lane < 32; lane++) {
        int g = lane >> 2, t = lane % 4;
        if (kind < 4) {
            for (int i = 0; i < 16; i++) {
                int row = (i < 4 || (i >= 8 && i < 12)) ? g : g + 8;
                int col = t * 4 + (i & 3) + (i >= 8 ? 16 : 0);
                g_a[lane][i / 4] |= (u32)(A[row][col] & 0xff) << (8 * (i % 4));
            }
            for (int i = 0; i < 8; i++) {
                int row = t * 4 + (i & 3) + (i >= 4 ? 16 : 0), col = g;
                g_b[lane][i / 4] |= (u32)(B[row][col] & 0xff) << (8 * (i % 4));
            }
        } else {
            for (int i = 0; i < 8; i++) {
                int row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
                int col = t * 2 + (i & 1) + (i >= 4 ? 8 : 0);
                g_a[lane][i / 2] |= (u32)A[row][col] << (16 * (i % 2));
            }
            for (int i = 0; i < 4; i++) {
                int row = t * 2 + (i & 1) + (i >= 2 ? 8 : 0), col = g;
                g_b[lane][i / 2] |= (u32)B[row][col] << (16 * (i % 2));
            }
        }
        for (int i = 0; i < 4; i++) g_c[lane][i] = C[i < 2 ? g : g + 8][t * 2 + (i & 1)];
    }
    g_kind = kind;
    char err[512], why[1024] = "";
    int ok = launch(mma_kernel, 32, 0, err, sizeof err) == 0;
    if (!ok) snprintf(why, sizeof why, "launch failed: %s", err);
    for (int lane = 0; lane < 32 && ok; lane++)
        for (int i = 0; i < 4 && ok; i++) {
            int g = lane >> 2, t = lane % 4, row = i < 2 ? g : g + 8, col = t * 2 + (i & 1);
            double s = C[row][col], mag = fabs(s);
            for (int k = 0; k < K; k++) {
                double a = kind < 4 ? fp8v(kind >> 1, (u8)A[row][k]) : kind == 4 ? fp8c_bf16_to_f32(A[row][k]) : fp8c_f16_to_f32(A[row][k]);
                double b = kind < 4 ? fp8v(kind & 1, (u8)B[k][col]) : kind == 4 ? fp8c_bf16_to_f32(B[k][col]) : fp8c_f16_to_f32(B[k][col]);
                s += a * b, mag += fabs(a * b);
            }
            if (!(fabs(g_c[lane][i] - s) <= 1e-6 * mag + 1e-30)) {
                snprintf(why, sizeof why, "D[%d][%d] (lane %d, d%d) = %.9g, the product gives %.9g", row, col, lane, i, g_c[lane][i], s);
                ok = 0;
            }
        }
    report(names[kind], ok, why);
}

// ---- ldmatrix -------------------------------------------------------------------------------------
static __attribute__((aligned(16))) u8 g_sm[4][8][16]; // 4 matrices, 8 rows of 16 bytes (8 b16)
static u32 g_r[32][4];
static int g_trans;
static void ldsm_kernel(void **) {
    int l = threadIdx.x;
    u32 r[4];
    const void *p = g_sm[l / 8][l % 8]; // lane l: row l%8 of matrix l/8
    if (g_trans) ldsm_x4_trans(r, p);
    else ldsm_x4(r, p);
    memcpy(g_r[l], r, sizeof r);
}
static void test_ldmatrix(int trans) {
    for (size_t i = 0; i < sizeof g_sm; i++) (&g_sm[0][0][0])[i] = (u8)rnd();
    g_trans = trans;
    char err[512], why[1024] = "";
    int ok = launch(ldsm_kernel, 32, 1, err, sizeof err) == 0;
    if (!ok) snprintf(why, sizeof why, "launch failed: %s", err);
    for (int l = 0; l < 32 && ok; l++)
        for (int m = 0; m < 4 && ok; m++) {
            // ISA: each thread gets (row l/4, b16 columns 2*(l%4) and +1) of matrix m; .trans: of its transpose
            u16 e0, e1;
            if (!trans) memcpy(&e0, &g_sm[m][l / 4][2 * (2 * (l % 4))], 2), memcpy(&e1, &g_sm[m][l / 4][2 * (2 * (l % 4) + 1)], 2);
            else memcpy(&e0, &g_sm[m][2 * (l % 4)][2 * (l / 4)], 2), memcpy(&e1, &g_sm[m][2 * (l % 4) + 1][2 * (l / 4)], 2);
            u32 want = (u32)e0 | (u32)e1 << 16;
            if (g_r[l][m] != want) {
                snprintf(why, sizeof why, "lane %d register %d is 0x%08x, the ISA's layout gives 0x%08x", l, m, g_r[l][m], want);
                ok = 0;
            }
        }
    report(trans ? "ldmatrix_x4_trans" : "ldmatrix_x4", ok, why);
}

// A (16x32 E4M3, row-major) and B^T (8 x 32, row-major: the "col" operand) in shared memory,
// fragments with ldmatrix as an FP8 GEMM loads them, then mma: against the product.
static __attribute__((aligned(16))) u8 g_A[16][32], g_Bt[16][32];
static float g_D[16][8];
static void ldsm_mma_kernel(void **) {
    int l = threadIdx.x;
    u32 a[4], b[4];
    // A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
    ldsm_x4(a, &g_A[(l % 8) + 8 * ((l / 8) & 1)][16 * (l / 16)]);
    // B^T rows n 0-7: matrices (k 0-15) and (k 16-31); the second pair, rows 8-15, unused
    ldsm_x4(b, &g_Bt[(l % 8) + 8 * (l / 16)][16 * ((l / 8) & 1)]);
    float d[4] = {0, 0, 0, 0};
    mma_m16n8k32_fp8<FMT_E4M3, FMT_E4M3>(d, a, b[0], b[1]);
    int g = l >> 2, t = l % 4;
    g_D[g][2 * t] = d[0], g_D[g][2 * t + 1] = d[1], g_D[g + 8][2 * t] = d[2], g_D[g + 8][2 * t + 1] = d[3];
}
static void test_ldsm_mma() {
    for (int r = 0; r < 16; r++)
        for (int k = 0; k < 32; k++) g_A[r][k] = (u8)(rnd() & 0x3f) | (rnd() & 0x80), g_Bt[r][k] = (u8)(rnd() & 0x3f) | (rnd() & 0x80);
    char err[512], why[1024] = "";
    int ok = launch(ldsm_mma_kernel, 32, 0, err, sizeof err) == 0;
    if (!ok) snprintf(why, sizeof why, "launch failed: %s", err);
    for (int r = 0; r < 16 && ok; r++)
        for (int n = 0; n < 8 && ok; n++) {
            double s = 0, mag = 0;
            for (int k = 0; k < 32; k++) s += fp8v(0, g_A[r][k]) * fp8v(0, g_Bt[n][k]), mag += fabs(fp8v(0, g_A[r][k]) * fp8v(0, g_Bt[n][k]));
            if (!(fabs(g_D[r][n] - s) <= 1e-6 * mag + 1e-30)) {
                snprintf(why, sizeof why, "D[%d][%d] = %.9g, the product gives %.9g", r, n, g_D[r][n], s);
                ok = 0;
            }
        }
    report("ldsm_mma_e4m3", ok, why);
}

// ---- the execution model ----------------------------------------------------------------------------
static float g_out[256];
static int g_sync;
static void shfl_kernel(void **) {
    float v = (float)threadIdx.x;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    unsigned b = __ballot_sync(0xffffffffu, (threadIdx.x & 31) % 3 == 0);
    float first = __shfl_sync(0xffffffffu, (float)threadIdx.x * 2, 5);
    g_out[threadIdx.x] = v + (b == 0x49249249u ? 0.0f : 1e9f) + first * 1000;
}
static void race_kernel(void **) {
    static float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    if (g_sync) __syncthreads();
    g_out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
}
static void deadlock_kernel(void **) {
    if (threadIdx.x == 0) __syncwarp();
    else __syncthreads();
}
static void trap_kernel(void **) {
    __syncthreads();
    if (threadIdx.x == 7) __trap();
}
static __attribute__((aligned(16))) float g_src[64 * 4];
static void cp_kernel(void **) {
    float *sm = (float *)fp8c_host_dynamic_smem();
    cp_async16(sm + 4 * threadIdx.x, g_src + 4 * threadIdx.x);
    cp_async_commit();
    g_out[threadIdx.x] = sm[4 * threadIdx.x]; // before the wait: not there yet (poison)
    cp_async_wait<0>();
    g_out[64 + threadIdx.x] = sm[4 * threadIdx.x];
}

static void test_model() {
    char err[512], why[1024] = "";
    int ok = launch(shfl_kernel, 64, 1, err, sizeof err) == 0;
    for (int t = 0; t < 64 && ok; t++) {
        float want = (float)(32 * 31 / 2 + 32 * 32 * (t / 32)) + 1000.0f * 2 * (5 + 32 * (t / 32));
        if (g_out[t] != want) snprintf(why, sizeof why, "thread %d got %g, want %g", t, g_out[t], want), ok = 0;
    }
    report("shfl_xor_ballot_idx", ok, ok ? "" : why[0] ? why : err);

    float a[64], b[64];
    g_sync = 0;
    launch(race_kernel, 64, 0, err, sizeof err), memcpy(a, g_out, sizeof a);
    launch(race_kernel, 64, 1, err, sizeof err), memcpy(b, g_out, sizeof b);
    report("race_without_barrier_differs", memcmp(a, b, sizeof a) != 0, "a shared-memory read without __syncthreads gave the same result in both thread orders");
    g_sync = 1;
    launch(race_kernel, 64, 0, err, sizeof err), memcpy(a, g_out, sizeof a);
    launch(race_kernel, 64, 1, err, sizeof err), memcpy(b, g_out, sizeof b);
    ok = !memcmp(a, b, sizeof a) && a[63] == 0.0f && a[0] == 1.0f;
    report("race_with_barrier_same", ok, "with __syncthreads the two orders differ or the values are wrong");

    int rc = launch(deadlock_kernel, 64, 0, err, sizeof err);
    report("deadlock_detected", rc != 0 && strstr(err, "deadlock"), rc ? err : "the launch succeeded");
    rc = launch(trap_kernel, 64, 0, err, sizeof err);
    report("trap_fails_launch", rc != 0 && strstr(err, "__trap") && strstr(err, "thread (7,0,0)"), rc ? err : "the launch succeeded");

    for (int i = 0; i < 256; i++) g_src[i] = (float)i;
    rc = launch(cp_kernel, 64, 0, err, sizeof err, 64 * 16);
    ok = rc == 0;
    for (int t = 0; t < 64 && ok; t++)
        if (!isnan(g_out[t]) || g_out[64 + t] != (float)(4 * t)) snprintf(why, sizeof why, "thread %d: before the wait %g, after %g", t, g_out[t], g_out[64 + t]), ok = 0;
    report("cp_async_lands_at_wait", ok, rc ? err : why);
}

int main() {
    for (int k = 0; k < 6; k++) test_mma(k);
    test_ldmatrix(0);
    test_ldmatrix(1);
    test_ldsm_mma();
    test_model();
    return fails ? 1 : 0;
}
