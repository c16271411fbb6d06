/* test_fp8.c: pins the conversions of runtime/fp8.c, bit for bit.
 *
 * Three kinds of case:
 *   - spot values worked out by hand (most from shared/notes/cuda-apis.md
 *     section 4, which were checked against CUDA's own host code);
 *   - every code of every format decoded and compared with the textbook
 *     formula, and encoded back (round trip);
 *   - exhaustive sweeps: every float bit pattern through each encoder,
 *     compared with a second implementation written here by a different
 *     method, so that a shared misreading of the bit layout cannot hide.
 *
 * The second implementations work on values in double, not on bits:
 *   - FP8 and E2M1: the format's finite magnitudes in a table built from the
 *     decoding formula, a binary search for the two codes that bracket |x|,
 *     and the nearer by subtracting in double (exact here), ties to the code
 *     with an even last bit. Overflow is "nearer to the next code the format
 *     would have if its range went on" (480 for E4M3, 65536 for E5M2, 8 for
 *     E2M1), which reproduces the thresholds 464 and 61440 without naming them.
 *   - F16: the spacing of |x|'s binade from frexp, floor to bracket, distances.
 *   - BF16: truncate to bracket (BF16 values are floats), distances in double.
 *   - E8M0: frexp.
 *
 * Usage: test_fp8 [--stride N]. The sweeps visit every Nth bit pattern
 * (default 1, all 2^32); sanitizer builds pass a large prime. Built with
 * -fopenmp the sweeps run in parallel; without it they are serial.
 */
#include "check.h"
#include "fp8.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static uint64_t sweep_stride = 1; /* --stride: test every Nth float bit pattern */

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* ---- textbook decoding formula, in double ---------------------------------------- */

/* Magnitude of exponent field e, mantissa m of a binary format with man_bits
 * mantissa bits and the given bias, ignoring any special codes. */
static double formula_magnitude(int e, int m, int man_bits, int bias)
{
    if (e == 0)
        return ldexp((double)m, 1 - bias - man_bits);
    return ldexp((double)((1 << man_bits) + m), e - bias - man_bits);
}

/* v with the sign applied when `negative` is non-zero. */
static double with_sign(int negative, double v)
{
    return negative ? -v : v;
}

/* A decoder's float result equals the formula's double, sign of zero included. */
static int same_value(float got, double want)
{
    if (isnan(want))
        return isnan(got);
    return (double)got == want && !signbit(got) == !signbit(want);
}

/* ---- reference encoder 1: nearest code by table search (FP8, E2M1) --------------- */

struct ref_table {
    double val[256]; /* val[c]: magnitude of code c for c <= top; val[top+1]: the
                      * next value the format would have; then +inf padding */
    int top;         /* code of the largest finite magnitude */
    int ovf;         /* magnitude code of a non-saturated overflow */
    int sign_bit;    /* sign bit of a code */
    int nan;         /* code for NaN input */
};

static struct ref_table ref_e4m3, ref_e5m2, ref_e2m1;

static void ref_table_init(struct ref_table *t, int man_bits, int bias, int top, int ovf, int sign_bit,
                           int nan)
{
    int mask = (1 << man_bits) - 1;
    for (int c = 0; c < 256; c++) {
        if (c <= top + 1)
            t->val[c] = formula_magnitude(c >> man_bits, c & mask, man_bits, bias);
        else
            t->val[c] = INFINITY;
    }
    t->top = top;
    t->ovf = ovf;
    t->sign_bit = sign_bit;
    t->nan = nan;
}

/* Index of the nearest entry to a >= 0 (ties to the even index); top + 1 means
 * a is nearer to the virtual next value than to the largest finite one. */
static int ref_nearest(const struct ref_table *t, double a)
{
    if (a >= t->val[t->top + 1])
        return t->top + 1;
    int lo = 0; /* largest index with val[lo] <= a; val[0] = 0 <= a */
    for (int step = 128; step > 0; step /= 2)
        if (t->val[lo + step] <= a)
            lo += step;
    int hi = lo + 1;
    double dlo = a - t->val[lo], dhi = t->val[hi] - a; /* both exact in double */
    if (dlo < dhi)
        return lo;
    if (dhi < dlo)
        return hi;
    return (lo & 1) ? hi : lo;
}

/* Nearest index for x, before the overflow policy: -1 for NaN. */
static int ref_index(const struct ref_table *t, float x)
{
    if (isnan(x))
        return -1;
    if (isinf(x))
        return t->top + 1;
    return ref_nearest(t, fabs((double)x));
}

static int ref_code(const struct ref_table *t, float x, int idx, int saturate)
{
    if (idx < 0)
        return t->nan;
    if (idx > t->top)
        idx = saturate ? t->top : t->ovf;
    return (signbit(x) ? t->sign_bit : 0) | idx;
}

static int ref_encode(const struct ref_table *t, float x, int saturate)
{
    return ref_code(t, x, ref_index(t, x), saturate);
}

/* ---- reference encoder 2: F16 by binade spacing ---------------------------------- */

static uint16_t ref_f16(float x)
{
    if (isnan(x))
        return 0x7FFF;
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    if (isinf(x))
        return sign | 0x7C00;
    double a = fabs((double)x);
    if (a == 0)
        return sign;
    int e2;
    (void)frexp(a, &e2); /* a in [2^(e2-1), 2^e2) */
    int binade = e2 - 1 < -14 ? -14 : e2 - 1;
    double ulp = ldexp(1.0, binade - 10);
    double k = floor(a / ulp); /* a / ulp is exact: ulp is a power of two */
    double lo = k * ulp, hi = lo + ulp;
    double r;
    if (a - lo < hi - a)
        r = lo;
    else if (hi - a < a - lo)
        r = hi;
    else
        r = fmod(k, 2.0) == 0.0 ? lo : hi;
    if (r > 65504.0)
        return sign | 0x7C00;
    if (r < 0x1p-14) /* subnormal: the code is the count of 2^-24 steps */
        return sign | (uint16_t)(r * 0x1p24);
    /* normal: read the exponent and top mantissa bits off r as a float */
    uint32_t rb = bits_of((float)r);
    int fexp = (int)(rb >> 23) - 127;
    return sign | (uint16_t)((fexp + 15) << 10) | (uint16_t)((rb & 0x7FFFFF) >> 13);
}

/* ---- reference encoder 3: BF16 by truncation and distances ----------------------- */

static uint16_t ref_bf16(float x)
{
    if (isnan(x))
        return 0x7FFF;
    uint32_t u = bits_of(x);
    uint32_t sign = u & 0x80000000u, ab = u & 0x7FFFFFFFu;
    if (isinf(x))
        return (uint16_t)((sign | ab) >> 16);
    uint32_t lo_b = ab & 0xFFFF0000u; /* BF16 value at or below |x| */
    uint32_t hi_b = lo_b + 0x10000u;  /* the next BF16 value up */
    double a = fabs((double)x), lo = (double)float_of(lo_b);
    /* above the largest finite BF16 the next value would be 2^128 */
    double hi = hi_b == 0x7F800000u ? 0x1p128 : (double)float_of(hi_b);
    uint32_t r;
    if (a - lo < hi - a)
        r = lo_b;
    else if (hi - a < a - lo)
        r = hi_b;
    else
        r = (lo_b & 0x10000u) ? hi_b : lo_b;
    return (uint16_t)((sign | r) >> 16);
}

/* ---- reference encoder 4: E8M0 by frexp ------------------------------------------ */

static int ref_e8m0(float x, int round_up)
{
    if (isnan(x))
        return 0xFF;
    if (isinf(x))
        return 0xFE;
    double a = fabs((double)x);
    if (a == 0)
        return 0;
    int e2;
    double f = frexp(a, &e2); /* a = f * 2^e2, f in [0.5, 1) */
    int lg = e2 - 1;          /* floor(log2 a) */
    if (round_up && f != 0.5)
        lg++;
    if (lg < -127)
        lg = -127;
    if (lg > 127)
        lg = 127;
    return lg + 127;
}

/* ---- sweep bookkeeping ------------------------------------------------------------ */

/* The first (lowest) mismatching input of a sweep, kept for the FAIL message. */
struct mismatch {
    int seen;
    uint32_t in;
    const char *what;
    unsigned got, want;
};

static void note_mismatch(struct mismatch *m, uint32_t in, const char *what, unsigned got,
                          unsigned want)
{
#ifdef _OPENMP
#pragma omp critical(fp8_mismatch)
#endif
    {
        if (!m->seen || in < m->in) {
            m->seen = 1;
            m->in = in;
            m->what = what;
            m->got = got;
            m->want = want;
        }
    }
}

static int64_t sweep_count(void)
{
    return (int64_t)(((UINT64_C(1) << 32) + sweep_stride - 1) / sweep_stride);
}

static double now_s(void)
{
    struct timespec ts;
    timespec_get(&ts, TIME_UTC);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void sweep_report(const char *name, uint64_t bad, const struct mismatch *m, double t0)
{
    fprintf(stderr, "  %s: %lld inputs (stride %llu), %llu mismatches, %.1f s\n", name,
            (long long)sweep_count(), (unsigned long long)sweep_stride, (unsigned long long)bad,
            now_s() - t0);
    CHECKF(bad == 0, "%llu mismatches; first: %s(bits 0x%08X = %a) = 0x%X, reference 0x%X",
           (unsigned long long)bad, m->what, (unsigned)m->in, (double)float_of(m->in), m->got,
           m->want);
}

/* ---- 1. decoding: every code against the formula --------------------------------- */

static void decode_e4m3_all_codes(void)
{
    for (int c = 0; c < 256; c++) {
        int e = (c >> 3) & 0xF, m = c & 7;
        double want = (c & 0x7F) == 0x7F ? NAN : with_sign(c & 0x80, formula_magnitude(e, m, 3, 7));
        float got = fp8c_e4m3_to_f32((uint8_t)c);
        CHECKF(same_value(got, want), "e4m3 0x%02X -> %a, want %a", c, (double)got, want);
    }
}

static void decode_e5m2_all_codes(void)
{
    for (int c = 0; c < 256; c++) {
        int e = (c >> 2) & 0x1F, m = c & 3;
        double want;
        if (e == 31)
            want = m ? NAN : with_sign(c & 0x80, INFINITY);
        else
            want = with_sign(c & 0x80, formula_magnitude(e, m, 2, 15));
        float got = fp8c_e5m2_to_f32((uint8_t)c);
        CHECKF(same_value(got, want), "e5m2 0x%02X -> %a, want %a", c, (double)got, want);
    }
}

static void decode_bf16_all_codes(void)
{
    for (int c = 0; c < 65536; c++) {
        int e = (c >> 7) & 0xFF, m = c & 0x7F;
        double want;
        if (e == 255)
            want = m ? NAN : with_sign(c & 0x8000, INFINITY);
        else
            want = with_sign(c & 0x8000, formula_magnitude(e, m, 7, 127));
        float got = fp8c_bf16_to_f32((uint16_t)c);
        CHECKF(same_value(got, want), "bf16 0x%04X -> %a, want %a", c, (double)got, want);
    }
}

static void decode_f16_all_codes(void)
{
    for (int c = 0; c < 65536; c++) {
        int e = (c >> 10) & 0x1F, m = c & 0x3FF;
        double want;
        if (e == 31)
            want = m ? NAN : with_sign(c & 0x8000, INFINITY);
        else
            want = with_sign(c & 0x8000, formula_magnitude(e, m, 10, 15));
        float got = fp8c_f16_to_f32((uint16_t)c);
        CHECKF(same_value(got, want), "f16 0x%04X -> %a, want %a", c, (double)got, want);
    }
}

static void decode_e2m1_all_codes(void)
{
    /* OCP MX v1.0 table for FP4 E2M1, written out rather than computed. */
    static const double mag[8] = {0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0};
    for (int c = 0; c < 16; c++) {
        double want = with_sign(c & 8, mag[c & 7]);
        float got = fp8c_e2m1_to_f32((uint8_t)c);
        CHECKF(same_value(got, want), "e2m1 0x%X -> %a, want %a", c, (double)got, want);
        /* bits above the low 4 are ignored */
        CHECK(bits_of(fp8c_e2m1_to_f32((uint8_t)(c | 0xF0))) == bits_of(got));
        /* every value encodes to its own code */
        CHECKF(fp8c_f32_to_e2m1(got, 1) == c, "e2m1 encode(%a) = 0x%X, want 0x%X", (double)got,
               fp8c_f32_to_e2m1(got, 1), c);
    }
}

static void decode_e8m0_all_codes(void)
{
    for (int c = 0; c < 256; c++) {
        double want = c == 255 ? NAN : ldexp(1.0, c - 127);
        float got = fp8c_e8m0_to_f32((uint8_t)c);
        CHECKF(same_value(got, want), "e8m0 0x%02X -> %a, want %a", c, (double)got, want);
    }
}

/* The max constants are the largest finite codes' values. */
static void format_max_constants(void)
{
    CHECK(FP8C_E4M3_MAX == fp8c_e4m3_to_f32(0x7E));
    CHECK(FP8C_E5M2_MAX == fp8c_e5m2_to_f32(0x7B));
    CHECK(FP8C_E2M1_MAX == fp8c_e2m1_to_f32(0x7));
    CHECK(FP8C_F16_MAX == fp8c_f16_to_f32(0x7BFF));
    CHECK(FP8C_BF16_MAX == fp8c_bf16_to_f32(0x7F7F));
    CHECK(ldexpf(1.0f, FP8C_E4M3_EMAX) <= FP8C_E4M3_MAX && FP8C_E4M3_MAX < ldexpf(1.0f, FP8C_E4M3_EMAX + 1));
    CHECK(ldexpf(1.0f, FP8C_E5M2_EMAX) <= FP8C_E5M2_MAX && FP8C_E5M2_MAX < ldexpf(1.0f, FP8C_E5M2_EMAX + 1));
    CHECK(ldexpf(1.0f, FP8C_E2M1_EMAX) <= FP8C_E2M1_MAX && FP8C_E2M1_MAX < ldexpf(1.0f, FP8C_E2M1_EMAX + 1));
}

/* ---- 2. spot values by hand -------------------------------------------------------- */

struct fp8_spot {
    float x;
    uint8_t sat, nosat; /* expected codes with and without saturation */
};

static void spot_e4m3(void)
{
    const struct fp8_spot s[] = {
        {448.0f, 0x7E, 0x7E},       /* max finite, S.1111.110 */
        {-448.0f, 0xFE, 0xFE},      {464.0f, 0x7E, 0x7E}, /* 448 + ulp/2: tie to even 448 */
        {464.0001f, 0x7E, 0x7F},    /* just past the tie: overflow */
        {480.0f, 0x7E, 0x7F},       {-480.0f, 0xFE, 0xFF}, {1e6f, 0x7E, 0x7F},
        {INFINITY, 0x7E, 0x7F},     {-INFINITY, 0xFE, 0xFF},
        {NAN, 0x7F, 0x7F},          {-NAN, 0x7F, 0x7F}, /* canonical, unsigned */
        {0.0f, 0x00, 0x00},         {-0.0f, 0x80, 0x80},
        {1.0f, 0x38, 0x38},         {-1.0f, 0xB8, 0xB8},
        {240.0f, 0x77, 0x77},       /* 1.875 * 2^7 */
        {1.0625f, 0x38, 0x38},      /* tie 1 | 1.125: even mantissa 000 */
        {1.1875f, 0x3A, 0x3A},      /* tie 1.125 | 1.25: even mantissa 010 */
        {0x1p-6f, 0x08, 0x08},      /* min normal */
        {0x1.fffffep-7f, 0x08, 0x08}, /* rounds up out of the subnormals */
        {0x1p-9f, 0x01, 0x01},      /* min subnormal */
        {0x1.8p-7f, 0x06, 0x06},    /* 6 * 2^-9 */
        {0x1p-10f, 0x00, 0x00},     /* half the min subnormal: tie to zero */
        {-0x1p-10f, 0x80, 0x80},    {0x1.000002p-10f, 0x01, 0x01}, /* 2^-10 (1 + 2^-23) */
        {0x1.8p-9f, 0x02, 0x02},    /* 3 * 2^-10: tie 1 | 2, even 2 */
        {0x1p-149f, 0x00, 0x00},    /* smallest float subnormal */
        {-0x1p-149f, 0x80, 0x80},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint8_t a = fp8c_f32_to_e4m3(s[i].x, 1), b = fp8c_f32_to_e4m3(s[i].x, 0);
        CHECKF(a == s[i].sat, "e4m3 sat(%a) = 0x%02X, want 0x%02X", (double)s[i].x, a, s[i].sat);
        CHECKF(b == s[i].nosat, "e4m3 nosat(%a) = 0x%02X, want 0x%02X", (double)s[i].x, b, s[i].nosat);
    }
}

static void spot_e5m2(void)
{
    const struct fp8_spot s[] = {
        {57344.0f, 0x7B, 0x7B},         /* max finite */
        {0x1.dffffep+15f, 0x7B, 0x7B},  /* 61440 - 1 float ulp */
        {61440.0f, 0x7B, 0x7C},         /* 57344 + ulp/2: tie goes to even = overflow */
        {-61440.0f, 0xFB, 0xFC},        {1e9f, 0x7B, 0x7C},
        {INFINITY, 0x7B, 0x7C},         {-INFINITY, 0xFB, 0xFC},
        {NAN, 0x7F, 0x7F},              {-NAN, 0x7F, 0x7F},
        {0.0f, 0x00, 0x00},             {-0.0f, 0x80, 0x80},
        {1.0f, 0x3C, 0x3C},             {448.0f, 0x5F, 0x5F},
        {480.0f, 0x60, 0x60},           /* tie 448 | 512, even 512 */
        {1.125f, 0x3C, 0x3C},           /* tie 1 | 1.25: even 00 */
        {1.375f, 0x3E, 0x3E},           /* tie 1.25 | 1.5: even 10 */
        {0x1p-14f, 0x04, 0x04},         /* min normal */
        {0x1p-16f, 0x01, 0x01},         /* min subnormal */
        {0x1p-17f, 0x00, 0x00},         /* tie to zero */
        {-0x1p-17f, 0x80, 0x80},        {0x1.000002p-17f, 0x01, 0x01},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint8_t a = fp8c_f32_to_e5m2(s[i].x, 1), b = fp8c_f32_to_e5m2(s[i].x, 0);
        CHECKF(a == s[i].sat, "e5m2 sat(%a) = 0x%02X, want 0x%02X", (double)s[i].x, a, s[i].sat);
        CHECKF(b == s[i].nosat, "e5m2 nosat(%a) = 0x%02X, want 0x%02X", (double)s[i].x, b, s[i].nosat);
    }
}

struct wide_spot {
    float x;
    uint16_t want;
};

static void spot_bf16(void)
{
    const struct wide_spot s[] = {
        {1.0f, 0x3F80},           {-2.0f, 0xC000},
        {0x1.01p+0f, 0x3F80},     /* 1 + 2^-8: tie, even 0x3F80 */
        {0x1.03p+0f, 0x3F82},     /* 1 + 3*2^-8: tie 0x3F81 | 0x3F82, even */
        {0x1.0102p+0f, 0x3F81},   /* just above the tie */
        {float_of(0x7F7F7FFFu), 0x7F7F}, {float_of(0x7F7F8000u), 0x7F80}, /* tie into Inf */
        {float_of(0x7F7FFFFFu), 0x7F80}, {-float_of(0x7F7FFFFFu), 0xFF80},
        {INFINITY, 0x7F80},       {-INFINITY, 0xFF80},
        {NAN, 0x7FFF},            {-NAN, 0x7FFF}, {float_of(0x7F800001u), 0x7FFF},
        {0.0f, 0x0000},           {-0.0f, 0x8000},
        {0x1p-133f, 0x0001},      /* smallest BF16 subnormal */
        {0x1p-134f, 0x0000},      /* tie to zero */
        {0x1.8p-133f, 0x0002},    /* tie 1 | 2, even */
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint16_t got = fp8c_f32_to_bf16(s[i].x);
        CHECKF(got == s[i].want, "bf16(%a) = 0x%04X, want 0x%04X", (double)s[i].x, got, s[i].want);
    }
}

static void spot_f16(void)
{
    const struct wide_spot s[] = {
        {1.0f, 0x3C00},         {-2.0f, 0xC000},        {65504.0f, 0x7BFF},
        {65519.99f, 0x7BFF},    {65520.0f, 0x7C00},     /* tie 65504 | 65536, odd max: Inf */
        {-65520.0f, 0xFC00},    {INFINITY, 0x7C00},     {-INFINITY, 0xFC00},
        {NAN, 0x7FFF},          {-NAN, 0x7FFF},
        {0.0f, 0x0000},         {-0.0f, 0x8000},
        {0x1p-14f, 0x0400},     /* min normal */
        {0x1p-24f, 0x0001},     /* min subnormal */
        {0x1p-25f, 0x0000},     /* tie to zero */
        {0x1.000002p-25f, 0x0001},
        {0x1.8p-24f, 0x0002},   /* tie 1 | 2 */
        {0x1.002p+0f, 0x3C00},  /* 1 + 2^-11: tie, even */
        {0x1.006p+0f, 0x3C02},  /* 1 + 3*2^-11: tie 0x3C01 | 0x3C02, even */
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint16_t got = fp8c_f32_to_f16(s[i].x);
        CHECKF(got == s[i].want, "f16(%a) = 0x%04X, want 0x%04X", (double)s[i].x, got, s[i].want);
    }
}

static void spot_e2m1(void)
{
    const struct fp8_spot s[] = {
        /* .sat and .nosat are the same: E2M1 always saturates */
        {0.25f, 0x0, 0x0},  /* tie 0 | 0.5: even 0 */
        {0.26f, 0x1, 0x1},  {0.75f, 0x2, 0x2}, /* tie 0.5 | 1: even 1.0 */
        {1.25f, 0x2, 0x2},  /* tie 1 | 1.5 */
        {1.75f, 0x4, 0x4},  /* tie 1.5 | 2 */
        {2.5f, 0x4, 0x4},   /* tie 2 | 3 */
        {3.5f, 0x6, 0x6},   /* tie 3 | 4 */
        {5.0f, 0x6, 0x6},   /* tie 4 | 6 */
        {5.01f, 0x7, 0x7},  {7.0f, 0x7, 0x7}, {100.0f, 0x7, 0x7},
        {-100.0f, 0xF, 0xF}, {-0.75f, 0xA, 0xA},
        {INFINITY, 0x7, 0x7}, {-INFINITY, 0xF, 0xF},
        {NAN, 0x7, 0x7},    {-NAN, 0x7, 0x7}, /* no NaN in E2M1: +max */
        {0.0f, 0x0, 0x0},   {-0.0f, 0x8, 0x8}, {-0x1p-3f, 0x8, 0x8},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint8_t a = fp8c_f32_to_e2m1(s[i].x, 1), b = fp8c_f32_to_e2m1(s[i].x, 0);
        CHECKF(a == s[i].sat && b == s[i].nosat, "e2m1(%a) = 0x%X / 0x%X, want 0x%X", (double)s[i].x,
               a, b, s[i].sat);
    }
}

static void spot_e8m0(void)
{
    const struct {
        float x;
        uint8_t floor_code, ceil_code;
    } s[] = {
        {1.0f, 0x7F, 0x7F},          {0.75f, 0x7E, 0x7F},        {1.5f, 0x7F, 0x80},
        {-4.0f, 0x81, 0x81},         /* sign ignored */
        {448.0f / 256.0f, 0x7F, 0x80}, /* amax 448, E4M3 emax 8: scale 2^0 (OCP floor) */
        {0x1p127f, 0xFE, 0xFE},      {0x1.8p127f, 0xFE, 0xFE}, /* ceil saturates */
        {0x1p-126f, 0x01, 0x01},     {0x1p-127f, 0x00, 0x00},  /* float subnormal */
        {0x1.8p-127f, 0x00, 0x01},   {0x1p-140f, 0x00, 0x00},  {0.0f, 0x00, 0x00},
        {INFINITY, 0xFE, 0xFE},      {-INFINITY, 0xFE, 0xFE},
        {NAN, 0xFF, 0xFF},           {-NAN, 0xFF, 0xFF},
    };
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++) {
        uint8_t f = fp8c_f32_to_e8m0_floor(s[i].x), c = fp8c_f32_to_e8m0_ceil(s[i].x);
        CHECKF(f == s[i].floor_code, "e8m0_floor(%a) = 0x%02X, want 0x%02X", (double)s[i].x, f,
               s[i].floor_code);
        CHECKF(c == s[i].ceil_code, "e8m0_ceil(%a) = 0x%02X, want 0x%02X", (double)s[i].x, c,
               s[i].ceil_code);
        CHECK(fp8c_f32_to_e8m0(s[i].x) == f); /* the default is floor */
    }
}

/* ---- 3. round trip: every non-NaN code survives decode then encode ---------------- */

static void round_trip_all_codes(void)
{
    for (int c = 0; c < 256; c++) {
        float v = fp8c_e4m3_to_f32((uint8_t)c);
        int want = isnan(v) ? 0x7F : c;
        CHECKF(fp8c_f32_to_e4m3(v, 0) == want && fp8c_f32_to_e4m3(v, 1) == want, "e4m3 0x%02X", c);

        v = fp8c_e5m2_to_f32((uint8_t)c);
        want = isnan(v) ? 0x7F : c;
        int want_sat = isinf(v) ? (c & 0x80) | 0x7B : want; /* Inf saturates to max */
        CHECKF(fp8c_f32_to_e5m2(v, 0) == want && fp8c_f32_to_e5m2(v, 1) == want_sat, "e5m2 0x%02X", c);

        v = fp8c_e8m0_to_f32((uint8_t)c);
        CHECKF(fp8c_f32_to_e8m0_floor(v) == c && fp8c_f32_to_e8m0_ceil(v) == c, "e8m0 0x%02X", c);
    }
    for (int c = 0; c < 16; c++)
        CHECKF(fp8c_f32_to_e2m1(fp8c_e2m1_to_f32((uint8_t)c), 0) == c, "e2m1 0x%X", c);
    for (int c = 0; c < 65536; c++) {
        float v = fp8c_bf16_to_f32((uint16_t)c);
        CHECKF(fp8c_f32_to_bf16(v) == (isnan(v) ? 0x7FFF : c), "bf16 0x%04X", c);
        v = fp8c_f16_to_f32((uint16_t)c);
        CHECKF(fp8c_f32_to_f16(v) == (isnan(v) ? 0x7FFF : c), "f16 0x%04X", c);
    }
}

/* ---- 4. exhaustive sweeps against the reference encoders -------------------------- */

/* One sweep per format. The FP8 and E2M1 sweeps compute the reference's
 * nearest code once per input and derive both overflow policies from it. */

static void sweep_fp8(const char *name, const struct ref_table *t, uint8_t (*enc)(float, int))
{
    struct mismatch m = {0};
    uint64_t bad = 0;
    int64_t n = sweep_count();
    double t0 = now_s();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 65536) reduction(+ : bad)
#endif
    for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)((uint64_t)k * sweep_stride);
        float x = float_of(u);
        int idx = ref_index(t, x);
        unsigned want_sat = (unsigned)ref_code(t, x, idx, 1);
        unsigned want_nosat = (unsigned)ref_code(t, x, idx, 0);
        unsigned got_sat = enc(x, 1), got_nosat = enc(x, 0);
        if (got_sat != want_sat) {
            bad++;
            note_mismatch(&m, u, "sat", got_sat, want_sat);
        }
        if (got_nosat != want_nosat) {
            bad++;
            note_mismatch(&m, u, "nosat", got_nosat, want_nosat);
        }
    }
    sweep_report(name, bad, &m, t0);
}

static void exhaustive_e4m3(void)
{
    sweep_fp8("exhaustive_e4m3", &ref_e4m3, fp8c_f32_to_e4m3);
}

static void exhaustive_e5m2(void)
{
    sweep_fp8("exhaustive_e5m2", &ref_e5m2, fp8c_f32_to_e5m2);
}

static void exhaustive_e2m1(void)
{
    sweep_fp8("exhaustive_e2m1", &ref_e2m1, fp8c_f32_to_e2m1);
}

static void exhaustive_bf16(void)
{
    struct mismatch m = {0};
    uint64_t bad = 0;
    int64_t n = sweep_count();
    double t0 = now_s();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 65536) reduction(+ : bad)
#endif
    for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)((uint64_t)k * sweep_stride);
        float x = float_of(u);
        unsigned got = fp8c_f32_to_bf16(x), want = ref_bf16(x);
        if (got != want) {
            bad++;
            note_mismatch(&m, u, "bf16", got, want);
        }
    }
    sweep_report("exhaustive_bf16", bad, &m, t0);
}

static void exhaustive_f16(void)
{
    struct mismatch m = {0};
    uint64_t bad = 0;
    int64_t n = sweep_count();
    double t0 = now_s();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 65536) reduction(+ : bad)
#endif
    for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)((uint64_t)k * sweep_stride);
        float x = float_of(u);
        unsigned got = fp8c_f32_to_f16(x), want = ref_f16(x);
        if (got != want) {
            bad++;
            note_mismatch(&m, u, "f16", got, want);
        }
    }
    sweep_report("exhaustive_f16", bad, &m, t0);
}

static void exhaustive_e8m0(void)
{
    struct mismatch m = {0};
    uint64_t bad = 0;
    int64_t n = sweep_count();
    double t0 = now_s();
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 65536) reduction(+ : bad)
#endif
    for (int64_t k = 0; k < n; k++) {
        uint32_t u = (uint32_t)((uint64_t)k * sweep_stride);
        float x = float_of(u);
        unsigned got_f = fp8c_f32_to_e8m0_floor(x), want_f = (unsigned)ref_e8m0(x, 0);
        unsigned got_c = fp8c_f32_to_e8m0_ceil(x), want_c = (unsigned)ref_e8m0(x, 1);
        if (got_f != want_f) {
            bad++;
            note_mismatch(&m, u, "floor", got_f, want_f);
        }
        if (got_c != want_c) {
            bad++;
            note_mismatch(&m, u, "ceil", got_c, want_c);
        }
    }
    sweep_report("exhaustive_e8m0", bad, &m, t0);
}

/* The reference encoders are themselves checked on the hand-worked values
 * before they judge anything, so a sweep failure points at fp8.c. */
static void reference_agrees_with_spots(void)
{
    CHECK(ref_encode(&ref_e4m3, 464.0f, 0) == 0x7E && ref_encode(&ref_e4m3, 464.0001f, 0) == 0x7F);
    CHECK(ref_encode(&ref_e4m3, 464.0001f, 1) == 0x7E && ref_encode(&ref_e4m3, -INFINITY, 0) == 0xFF);
    CHECK(ref_encode(&ref_e4m3, 0x1p-10f, 0) == 0x00 && ref_encode(&ref_e4m3, 0x1.000002p-10f, 0) == 0x01);
    CHECK(ref_encode(&ref_e5m2, 61440.0f, 1) == 0x7B && ref_encode(&ref_e5m2, 61440.0f, 0) == 0x7C);
    CHECK(ref_encode(&ref_e5m2, 0x1.dffffep+15f, 0) == 0x7B && ref_encode(&ref_e5m2, 480.0f, 0) == 0x60);
    CHECK(ref_encode(&ref_e5m2, 0x1p-17f, 0) == 0x00 && ref_encode(&ref_e5m2, -NAN, 0) == 0x7F);
    CHECK(ref_encode(&ref_e2m1, 7.0f, 0) == 0x7 && ref_encode(&ref_e2m1, 0.75f, 0) == 0x2);
    CHECK(ref_bf16(float_of(0x7F7F8000u)) == 0x7F80 && ref_bf16(0x1.03p+0f) == 0x3F82);
    CHECK(ref_f16(65520.0f) == 0x7C00 && ref_f16(0x1p-25f) == 0x0000 && ref_f16(0x1.8p-24f) == 0x0002);
    CHECK(ref_e8m0(0.75f, 0) == 0x7E && ref_e8m0(0.75f, 1) == 0x7F && ref_e8m0(0x1.8p-127f, 1) == 1);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--stride") == 0 && i + 1 < argc) {
            char *end;
            unsigned long long v = strtoull(argv[++i], &end, 10);
            if (*end || v == 0 || v > UINT32_MAX) {
                fprintf(stderr, "test_fp8: --stride wants a number in 1..2^32-1, got '%s'\n", argv[i]);
                return 2;
            }
            sweep_stride = v;
        } else {
            fprintf(stderr, "usage: %s [--stride N]\n", argv[0]);
            return 2;
        }
    }

    /* E4M3: bias 7, max 0x7E, overflow NaN 0x7F; E5M2: bias 15, max 0x7B,
     * overflow Inf 0x7C; E2M1: bias 1, max 0x7, overflow saturates, NaN +max. */
    ref_table_init(&ref_e4m3, 3, 7, 0x7E, 0x7F, 0x80, 0x7F);
    ref_table_init(&ref_e5m2, 2, 15, 0x7B, 0x7C, 0x80, 0x7F);
    ref_table_init(&ref_e2m1, 1, 1, 0x7, 0x7, 0x8, 0x7);

    RUN_CASE(decode_e4m3_all_codes);
    RUN_CASE(decode_e5m2_all_codes);
    RUN_CASE(decode_bf16_all_codes);
    RUN_CASE(decode_f16_all_codes);
    RUN_CASE(decode_e2m1_all_codes);
    RUN_CASE(decode_e8m0_all_codes);
    RUN_CASE(format_max_constants);
    RUN_CASE(spot_e4m3);
    RUN_CASE(spot_e5m2);
    RUN_CASE(spot_bf16);
    RUN_CASE(spot_f16);
    RUN_CASE(spot_e2m1);
    RUN_CASE(spot_e8m0);
    RUN_CASE(round_trip_all_codes);
    RUN_CASE(reference_agrees_with_spots);
#ifdef _OPENMP
    fprintf(stderr, "test_fp8: sweeps on %d threads\n", omp_get_max_threads());
#endif
    RUN_CASE(exhaustive_e4m3);
    RUN_CASE(exhaustive_e5m2);
    RUN_CASE(exhaustive_bf16);
    RUN_CASE(exhaustive_f16);
    RUN_CASE(exhaustive_e2m1);
    RUN_CASE(exhaustive_e8m0);
    CHECK_EXIT();
}
