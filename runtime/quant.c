/* quant.c: the scaling rules, tilings and scale layouts declared in quant.h.
 *
 * One driver, quant_tiles, walks the tiles of a (possibly transposed) view of
 * the input, chooses each tile's scale with tile_scale, and writes codes and
 * scale inverses (q_quantize) or the dequantized values directly (q_fake_quant).
 * Both entry points go through the same two functions, which is what makes
 * fake quantization bit-identical to dequantize(quantize(x)).
 *
 * Must not: allocate, keep state, or round differently from fp8.c (every
 * element goes through its saturating encoders). OpenMP is optional: with
 * -fopenmp the tile rows (or, for one per-tensor tile, the rows) run in
 * parallel; every reduction here is a max, so the result does not depend on
 * the thread count.
 */
#include "quant.h"

#include "fp8.h"
#include "fp8_encode.h"
#include "cpu/vmath.h" /* HOT_CLONES, vf8 and the register transpose */

#include <float.h>
#include <math.h>

enum layout {
    LAYOUT_TENSOR, /* one scale: scale_inv[0] */
    LAYOUT_VEC,    /* 1 x T: scale_inv[i + b*R] */
    LAYOUT_BLK,    /* T x T: scale_inv[b + (i/T)*L4], padding 0 */
    LAYOUT_ROWS,   /* anything else: row-major [ceil(R/tr)][ceil(C/tc)] */
};

/* How an R x C matrix is cut into tiles and where each tile's scale lives. */
struct tiling {
    int R, C;           /* matrix extents */
    int tr, tc;         /* tile extents, <= 0 already replaced by R or C (at least 1) */
    int nbr, nbc;       /* tile rows, tile columns */
    int ld;             /* BLK: L4, entries per tile row in scale_inv; else nbc */
    enum layout layout;
};

static int ceil_div(int a, int b)
{
    return a <= 0 ? 0 : (a + b - 1) / b;
}

static struct tiling make_tiling(int R, int C, int tr, int tc)
{
    struct tiling t;
    t.R = R > 0 ? R : 0;
    t.C = C > 0 ? C : 0;
    t.tr = tr > 0 ? tr : (t.R > 0 ? t.R : 1);
    t.tc = tc > 0 ? tc : (t.C > 0 ? t.C : 1);
    t.nbr = ceil_div(t.R, t.tr);
    t.nbc = ceil_div(t.C, t.tc);
    t.ld = t.nbc;
    if (tr <= 0 && tc <= 0) {
        t.layout = LAYOUT_TENSOR;
    } else if (tr == 1) {
        t.layout = LAYOUT_VEC;
    } else if (tr > 1 && tr == tc) {
        t.layout = LAYOUT_BLK;
        t.ld = (t.nbc + 3) / 4 * 4;
    } else {
        t.layout = LAYOUT_ROWS;
    }
    return t;
}

/* Index of tile (bi, bj)'s entry in the float scale_inv array. */
static size_t scale_index(const struct tiling *t, int bi, int bj)
{
    switch (t->layout) {
    case LAYOUT_TENSOR:
        return 0;
    case LAYOUT_VEC:
        return (size_t)bi + (size_t)bj * (size_t)t->nbr; /* bi == i: tiles are one row tall */
    case LAYOUT_BLK:
    case LAYOUT_ROWS:
        break;
    }
    return (size_t)bj + (size_t)bi * (size_t)t->ld;
}

/* Index of tile (bi, bj)'s E8M0 code: always row-major. */
static size_t mx_index(const struct tiling *t, int bi, int bj)
{
    return (size_t)bi * (size_t)t->nbc + (size_t)bj;
}

size_t q_scale_count(int R, int C, int tr, int tc)
{
    struct tiling t = make_tiling(R, C, tr, tc);
    if (t.layout == LAYOUT_TENSOR)
        return 1;
    return (size_t)t.nbr * (size_t)t.ld;
}

size_t q_mx_scale_count(int R, int C, int tr, int tc)
{
    struct tiling t = make_tiling(R, C, tr, tc);
    return (size_t)t.nbr * (size_t)t.nbc;
}

/* ---- formats ---------------------------------------------------------------------- */

float q_format_max(QFormat f)
{
    switch (f) {
    case Q_E5M2:
        return FP8C_E5M2_MAX;
    case Q_E2M1:
        return FP8C_E2M1_MAX;
    case Q_E4M3:
        break;
    }
    return FP8C_E4M3_MAX;
}

/* floor(log2(fmax)), the OCP MX emax_elem. */
static int format_emax(QFormat f)
{
    switch (f) {
    case Q_E5M2:
        return FP8C_E5M2_EMAX;
    case Q_E2M1:
        return FP8C_E2M1_EMAX;
    case Q_E4M3:
        break;
    }
    return FP8C_E4M3_EMAX;
}

/* Saturating encoders, inlined from fp8_encode.h: the same code the exported conversions run
 * (and the 2^32-input test checks), specialised here by constant format parameters. */
static inline uint8_t encode(QFormat f, float v)
{
    switch (f) {
    case Q_E5M2:
        return (uint8_t)fp8c_encode_bits(v, 2, 15, 0x7B, 0x80, 0x7C, FP8C_E5M2_NAN, 1);
    case Q_E2M1:
        return fp8c_f32_to_e2m1(v, 1);
    case Q_E4M3:
        break;
    }
    return (uint8_t)fp8c_encode_bits(v, 3, 7, 0x7E, 0x80, 0x7F, FP8C_E4M3_NAN, 1);
}

static float decode(QFormat f, uint8_t q)
{
    switch (f) {
    case Q_E5M2:
        return fp8c_e5m2_to_f32(q);
    case Q_E2M1:
        return fp8c_e2m1_to_f32(q);
    case Q_E4M3:
        break;
    }
    return fp8c_e4m3_to_f32(q);
}

/* ---- amax and scale rules --------------------------------------------------------- */


float q_compute_scale(float amax, float fmax, int margin, int pow2, float prev_scale, int *bad)
{
    if (!(amax > 0.0f) || isinf(amax)) { /* 0, negative, NaN or Inf */
        *bad = 1;
        return prev_scale;
    }
    float s = fmax / amax;
    if (margin) /* a power-of-two factor: exact unless it over/underflows */
        s = ldexpf(s, -margin);
    if (isinf(s))
        s = FLT_MAX;
    if (pow2 && s > 0.0f) {
        int e;
        frexpf(s, &e); /* s = f * 2^e, f in [0.5, 1) */
        s = ldexpf(1.0f, e - 1);
    }
    return s;
}

/* The scale pair of one tile: x is multiplied by s before encoding, the decoded
 * code by sinv. e8 is the E8M0 code of sinv in MX mode. */
struct tile_scale {
    float s, sinv;
    uint8_t e8;
};

static inline struct tile_scale tile_scale(float amax, QFormat fmt, int e8m0, float given_scale)
{
    struct tile_scale ts = {1.0f, 1.0f, 127}; /* the safe scale; 127 is E8M0 for 2^0 */
    if (e8m0) {
        if (amax > 0.0f && !isinf(amax) && !isnan(amax)) {
            /* X = 2^(floor(log2 amax) - emax): dividing by 2^emax is exact (fp8.h). Where
             * amax 2^-emax is a normal float (every tile but the tiniest), floor(log2) of it is its
             * exponent field, which is then the E8M0 code, and 2^(code - 127) has those bits. */
            uint32_t ab;
            memcpy(&ab, &amax, sizeof ab);
            int e = (int)(ab >> 23) - format_emax(fmt);
            if (e >= 1) {
                uint32_t sb = (uint32_t)e << 23, rb = (uint32_t)(254 - e) << 23;
                ts.e8 = (uint8_t)e;
                memcpy(&ts.sinv, &sb, sizeof sb);
                if (e <= 253) { /* 1 / 2^(e-127) = 2^(127-e), a normal float: its bits, no division */
                    memcpy(&ts.s, &rb, sizeof rb);
                    return ts;
                }
            } else {
                ts.e8 = fp8c_f32_to_e8m0_floor(ldexpf(amax, -format_emax(fmt)));
                ts.sinv = fp8c_e8m0_to_f32(ts.e8);
            }
            ts.s = 1.0f / ts.sinv; /* exact: sinv is 2^k, |k| <= 127 */
        }
        return ts;
    }
    if (given_scale > 0.0f) {
        ts.s = given_scale;
    } else {
        int bad = 0; /* a bad tile keeps the safe scale 1; the caller sees the tensor amax */
        ts.s = q_compute_scale(amax, q_format_max(fmt), 0, 0, 1.0f, &bad);
    }
    ts.sinv = 1.0f / ts.s;
    return ts;
}

/* ---- the tile driver -------------------------------------------------------------- */

/* A read-only view of the input: element (i, j) is x[i*sr + j*sc]. */
struct view {
    const float *x;
    int64_t sr, sc;
};

/* Where quant_tiles writes; NULL members are skipped. Element (i, j) of codes
 * and out is at i*C + j of the view's extents. */
struct sink {
    uint8_t *codes;
    float *scale_inv;
    uint8_t *e8m0;
    float *out; /* dequantized values (fake quantization) */
};

static float view_at(const struct view *v, int i, int j)
{
    return v->x[(int64_t)i * v->sr + (int64_t)j * v->sc];
}


#if defined(__GNUC__)
typedef uint32_t u32x8 __attribute__((vector_size(32)));
typedef float f32x8 __attribute__((vector_size(32)));
typedef uint8_t u8x8 __attribute__((vector_size(8)));
typedef int32_t i32x8 __attribute__((vector_size(32)));
typedef uint32_t u32x16 __attribute__((vector_size(64)));
typedef float f32x16 __attribute__((vector_size(64)));
typedef int32_t i32x16 __attribute__((vector_size(64)));
#define SEL(m, a, b) (((m) & (a)) | (~(m) & (b))) /* m: all-ones or zero lanes */

/* The low byte of each of 8 32-bit lanes (values 0..255) stored as 8 bytes at q. A byte shuffle
 * (vpshufb, vpermq, vpor on AVX2) where GCC has __builtin_shufflevector: its conversion
 * (__builtin_convertvector to 8 bytes) extracts and shifts lane by lane, which was most of the
 * encoder's time. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define HAVE_SHUFFLEVECTOR 1
#endif
#endif
#ifdef HAVE_SHUFFLEVECTOR
typedef uint8_t u8x32 __attribute__((vector_size(32)));
#define STORE_LOW_BYTES8(q, r)                                                                               \
    do {                                                                                                     \
        u8x32 b_ = (u8x32)(r);                                                                               \
        u8x8 c8_ = __builtin_shufflevector(b_, b_, 0, 4, 8, 12, 16, 20, 24, 28);                             \
        memcpy((q), &c8_, sizeof c8_);                                                                       \
    } while (0)
#else
#define STORE_LOW_BYTES8(q, r)                                                                               \
    do {                                                                                                     \
        u8x8 c8_ = __builtin_convertvector((r), u8x8);                                                       \
        memcpy((q), &c8_, sizeof c8_);                                                                       \
    } while (0)
#endif

/* fp8c_encode_bits (fp8_encode.h) on 8 lanes at once, saturating, for a format with man_bits
 * mantissa bits and bias `bias`, written with generic vectors so that it becomes AVX2 code in
 * the x86-64-v3 clone. Two roundings, both round-to-nearest-even, and a select between them:
 *   - |v| at or above the format's smallest normal 2^(1-bias): the float's own bits rounded to
 *     man_bits mantissa bits (add half an ulp minus one, plus the kept lsb, then shift: a carry
 *     out of the mantissa bumps the exponent, as it must), rebiased from 127 to `bias`;
 *   - below it, the subnormal code is |v| / 2^(1-bias-man_bits) rounded to an integer (0 ..
 *     2^man_bits, the last being the smallest normal's code): the multiplication by a power of
 *     two is exact, and adding 2^23 leaves the rounded integer in the low mantissa bits;
 *   - then saturation to max_mag (overflow and infinity: satfinite), NaN to `nan`, the sign.
 * test_quant checks it against the exported (exhaustively tested) conversions over a sweep of
 * float bit patterns, every lane position included. */
#define ENCODE8(q, x, s, man_bits, bias, max_mag, nan)                                                     \
    do {                                                                                                     \
        f32x8 xv8_;                                                                                          \
        memcpy(&xv8_, (x), sizeof xv8_);                                                                     \
        ENCODE8V(q, xv8_, s, man_bits, bias, max_mag, nan);                                                  \
    } while (0)
/* The same on a vector of eight floats already loaded. */
#define ENCODE8V(q, xv, s, man_bits, bias, max_mag, nan)                                                   \
    ENCODE_LANES(q, xv, s, man_bits, bias, max_mag, nan, u32x8, i32x8, f32x8, STORE_LOW_BYTES8)
#define ENCODE_LANES(q, xv, s, man_bits, bias, max_mag, nan, U32, I32, F32, STORE)                         \
    do {                                                                                                     \
        U32 bits_ = (U32)((xv) * (s)); /* a bit cast */                                                      \
        U32 abits_ = bits_ & 0x7FFFFFFFu;                                                                    \
        U32 r_ = abits_ + ((1u << (22 - (man_bits))) - 1u) + ((abits_ >> (23 - (man_bits))) & 1u);           \
        U32 nrm_ = (r_ >> (23 - (man_bits))) - ((127u - (bias)) << (man_bits));                              \
        F32 t_ = (F32)abits_ * (float)(1u << ((bias) - 1 + (man_bits))) + 8388608.0f;                        \
        U32 sub_ = (U32)t_ & 0x7FFFFFu;                                                                      \
        /* the compares signed (one vpcmpgtd each): abits_ and mag_ are below 2^31 */                     \
        I32 ia_ = (I32)abits_;                                                                               \
        U32 mag_ = SEL((U32)(ia_ < (int32_t)((128u - (bias)) << 23)), sub_, nrm_);                           \
        mag_ = SEL((U32)((I32)mag_ > (int32_t)(max_mag)), (U32){0} + (max_mag), mag_);                       \
        U32 r8_ = SEL((U32)(ia_ > 0x7F800000), (U32){0} + (nan), ((bits_ >> 24) & 0x80u) | mag_);            \
        STORE((q), r8_);                                                                                     \
    } while (0)
#endif

/* Max |x| over a block as the max of the magnitude bit patterns: for non-negative floats the
 * bit order is the value order, and every NaN pattern lies above +Inf, so a NaN still wins
 * (as amax_join would have it) without a branch per element. Returns the bits. Unit-stride
 * rows (q_quantize's views) go eight lanes at a time. */
static inline __attribute__((always_inline)) uint32_t block_amax_bits(const struct view *v, int i0, int i1, int j0,
                                                                      int j1)
{
    uint32_t m = 0;
    for (int i = i0; i < i1; i++) {
        const float *row = v->x + (int64_t)i * v->sr;
        int j = j0;
#if defined(__GNUC__)
        if (v->sc == 1 && j1 - j0 >= 8) {
            i32x8 mv = {0}, mw = {0}; /* signed lanes: the magnitude bits are below 2^31 (vpmaxsd);
                                          * two chains, as the max does not depend on the order */
            for (; j + 16 <= j1; j += 16) {
                i32x8 b, c;
                memcpy(&b, row + j, sizeof b);
                memcpy(&c, row + j + 8, sizeof c);
                b &= 0x7FFFFFFF, c &= 0x7FFFFFFF;
                mv = (i32x8)SEL((u32x8)(b > mv), (u32x8)b, (u32x8)mv);
                mw = (i32x8)SEL((u32x8)(c > mw), (u32x8)c, (u32x8)mw);
            }
            for (; j + 8 <= j1; j += 8) {
                i32x8 b;
                memcpy(&b, row + j, sizeof b);
                b &= 0x7FFFFFFF;
                mv = (i32x8)SEL((u32x8)(b > mv), (u32x8)b, (u32x8)mv);
            }
            mv = (i32x8)SEL((u32x8)(mw > mv), (u32x8)mw, (u32x8)mv);
            for (int l = 0; l < 8; l++)
                m = (uint32_t)mv[l] > m ? (uint32_t)mv[l] : m;
        }
#endif
        for (; j < j1; j++) {
            uint32_t b;
            float x = row[(int64_t)j * v->sc];
            memcpy(&b, &x, sizeof b);
            b &= 0x7FFFFFFFu;
            m = b > m ? b : m;
        }
    }
    return m;
}

static float bits_float(uint32_t m)
{
    float r;
    memcpy(&r, &m, sizeof r);
    return r;
}

/* Codes of one contiguous run of n inputs, the hot case of q_quantize (its views are
 * unit-stride rows): E4M3 and E5M2 eight at a time, the format switch out of the loop. */
static inline __attribute__((always_inline)) void encode_run(uint8_t *restrict q, const float *restrict x, int n,
                                                            float s, QFormat fmt)
{
    int j = 0;
#if defined(__GNUC__)
    if (fmt == Q_E4M3)
        for (; j + 8 <= n; j += 8)
            ENCODE8(q + j, x + j, s, 3, 7, 0x7Eu, (uint32_t)FP8C_E4M3_NAN);
    else if (fmt == Q_E5M2)
        for (; j + 8 <= n; j += 8)
            ENCODE8(q + j, x + j, s, 2, 15, 0x7Bu, (uint32_t)FP8C_E5M2_NAN);
#endif
    for (; j < n; j++)
        q[j] = encode(fmt, x[j] * s);
}

static inline __attribute__((always_inline)) void encode_block(const struct view *v, const struct tiling *t, int i0,
                                                              int i1, int j0, int j1,
                         struct tile_scale ts, QFormat fmt, const struct sink *k)
{
    if (v->sc == 1 && k->codes && !k->out) {
        for (int i = i0; i < i1; i++)
            encode_run(k->codes + (size_t)i * (size_t)t->C + (size_t)j0, v->x + (int64_t)i * v->sr + j0, j1 - j0,
                       ts.s, fmt);
        return;
    }
    for (int i = i0; i < i1; i++) {
        for (int j = j0; j < j1; j++) {
            size_t o = (size_t)i * (size_t)t->C + (size_t)j;
            uint8_t q = encode(fmt, view_at(v, i, j) * ts.s);
            if (k->codes)
                k->codes[o] = q;
            if (k->out)
                k->out[o] = decode(fmt, q) * ts.sinv;
        }
    }
}

static inline __attribute__((always_inline)) void store_scale(const struct tiling *t, int bi, int bj,
                                                              struct tile_scale ts, int e8m0, const struct sink *k)
{
    if (k->scale_inv)
        k->scale_inv[scale_index(t, bi, bj)] = ts.sinv;
    if (e8m0 && k->e8m0)
        k->e8m0[mx_index(t, bi, bj)] = ts.e8;
}

/* Rows [i0, i1) of a per-tensor (single-tile) view, whole rows with one scale */
HOT_CLONES_V4 static void encode_rows(const struct view *v, const struct tiling *t, int i0, int i1,
                                      struct tile_scale ts, QFormat fmt, const struct sink *k)
{
    encode_block(v, t, i0, i1, 0, t->C, ts, fmt, k);
}

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(FP8C_NO_V4_CLONES)
/* Row tiles in AVX-512 proper (not a clone of the generic source): the tile's amax sixteen lanes
 * at a time and reduced in registers, its scale inline, the codes narrowed by vpmovdb, which the
 * generic vector code cannot reach (GCC makes three shuffles of it). Against quant_tile_row's v4
 * clone: 1 x 32 MX tiles 15-25% faster (the per-tile work is a quarter of their cost), 1 x 128
 * the same. Used where the CPU has x86-64-v4; builds with FP8C_NO_V4_CLONES leave it out, so that
 * test_quant_v3 keeps checking the generic path on an AVX-512 machine. */
#define HAVE_ROWS_V4 1
#include <immintrin.h>
#define STORE_PMOVDB8(q, r) _mm_storel_epi64((__m128i *)(void *)(q), _mm256_cvtepi32_epi8((__m256i)(r)))
#define KEEP_LANES(q, r) memcpy((q), &(r), sizeof(r)) /* the codes left in their 32-bit lanes */
#define V4_INLINE __attribute__((target("arch=x86-64-v4"), always_inline)) static inline

/* encode_run's codes: n inputs times s, eight at a time narrowed by vpmovdb, the rest as
 * encode_run does */
V4_INLINE void encode_run_v4(uint8_t *restrict q, const float *restrict x, int n, float s, QFormat fmt)
{
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        f32x8 xv;
        memcpy(&xv, x + j, sizeof xv);
        if (fmt == Q_E4M3)
            ENCODE_LANES(q + j, xv, s, 3, 7, 0x7Eu, (uint32_t)FP8C_E4M3_NAN, u32x8, i32x8, f32x8, STORE_PMOVDB8);
        else
            ENCODE_LANES(q + j, xv, s, 2, 15, 0x7Bu, (uint32_t)FP8C_E5M2_NAN, u32x8, i32x8, f32x8, STORE_PMOVDB8);
    }
    encode_run(q + j, x + j, n - j, s, fmt);
}

/* Row bi of 1 x tc tiles (tc a multiple of 16 dividing C: the row-wise copy of the 1 x 128 and
 * MX recipes): quant_tile_row's steps (the tile's amax bits, tile_scale, store_scale, the codes),
 * the format a constant. Same codes and scales: the max does not depend
 * on the order, and each lane is encoded alone by the same operations. */
V4_INLINE uint32_t quant_row_tiles_body(const struct view *v, const struct tiling *t, int bi, QFormat fmt, int e8m0,
                                        float given_scale, const struct sink *k)
{
    const float *row = v->x + (int64_t)bi * v->sr;
    uint8_t *q = k->codes + (size_t)bi * (size_t)t->C;
    uint32_t row_max = 0;
    for (int bj = 0; bj < t->nbc; bj++) {
        const float *x = row + (int64_t)bj * t->tc;
        i32x16 m = {0};
        for (int j = 0; j < t->tc; j += 16) {
            i32x16 b;
            memcpy(&b, x + j, sizeof b);
            b &= 0x7FFFFFFF;
            m = (i32x16)SEL((u32x16)(b > m), (u32x16)b, (u32x16)m);
        }
        uint32_t amax = (uint32_t)_mm512_reduce_max_epi32((__m512i)m); /* signed: the bits are < 2^31 */
        row_max = amax > row_max ? amax : row_max;
        struct tile_scale ts = tile_scale(bits_float(amax), fmt, e8m0, given_scale);
        store_scale(t, bi, bj, ts, e8m0, k);
        encode_run_v4(q + (size_t)bj * (size_t)t->tc, x, t->tc, ts.s, fmt);
    }
    return row_max;
}

__attribute__((target("arch=x86-64-v4"))) static uint32_t quant_row_tiles_v4(const struct view *v,
                                                                              const struct tiling *t, int bi,
                                                                              QFormat fmt, int e8m0,
                                                                              float given_scale,
                                                                              const struct sink *k)
{
    return fmt == Q_E4M3 ? quant_row_tiles_body(v, t, bi, Q_E4M3, e8m0, given_scale, k)
                         : quant_row_tiles_body(v, t, bi, Q_E5M2, e8m0, given_scale, k);
}

/* Whether the CPU has x86-64-v4's AVX-512 subsets; asked once, and atomically, as quantizes may
 * run from several threads */
static int cpu_v4(void)
{
    static int cpu = -1;
    int v = __atomic_load_n(&cpu, __ATOMIC_RELAXED);
    if (v < 0) {
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512cd");
        __atomic_store_n(&cpu, v, __ATOMIC_RELAXED);
    }
    return v;
}

/* Whether the rows above apply: unit-stride rows, codes only (no fake quantization), E4M3 or
 * E5M2, on a CPU with AVX-512 (F, BW, DQ, VL, CD: x86-64-v4) */
static int rows_v4_ok(const struct view *v, QFormat fmt, const struct sink *k)
{
    return v->sc == 1 && k->codes && !k->out && (fmt == Q_E4M3 || fmt == Q_E5M2) && cpu_v4();
}
#endif

/* All tiles of tile row bi: amax, scale, codes; then the BLK padding. Returns the max of the
 * tiles' amax bits (their amax is needed for the returned tensor amax even under a given scale). */
HOT_CLONES_V4 static uint32_t quant_tile_row(const struct view *v, const struct tiling *t, int bi, QFormat fmt,
                                             int e8m0, float given_scale, const struct sink *k)
{
    int i0 = bi * t->tr;
    int i1 = i0 + t->tr < t->R ? i0 + t->tr : t->R;
    uint32_t row_max = 0;
    for (int bj = 0; bj < t->nbc; bj++) {
        int j0 = bj * t->tc;
        int j1 = j0 + t->tc < t->C ? j0 + t->tc : t->C;
        uint32_t amax = block_amax_bits(v, i0, i1, j0, j1);
        row_max = amax > row_max ? amax : row_max;
        struct tile_scale ts = tile_scale(bits_float(amax), fmt, e8m0, given_scale);
        store_scale(t, bi, bj, ts, e8m0, k);
        encode_block(v, t, i0, i1, j0, j1, ts, fmt, k);
    }
    if (t->layout == LAYOUT_BLK && k->scale_inv)
        for (int bj = t->nbc; bj < t->ld; bj++)
            k->scale_inv[scale_index(t, bi, bj)] = 0.0f;
    return row_max;
}

/* The amax q_amax reports, from the max of magnitude bits (every NaN becomes NAN). */
static float amax_of_bits(uint32_t m)
{
    return m > 0x7F800000u ? NAN : bits_float(m);
}

/* The max of |x| over x[0..n) as the max of the magnitude bit patterns (block_amax_bits' order
 * trick: every NaN lies above +Inf), eight lanes and four chains at a time. */
HOT_CLONES_V4 static uint32_t amax_bits_run(const float *x, int64_t n)
{
    uint32_t m = 0;
    int64_t k = 0;
#if defined(__GNUC__)
    i32x8 mv[4] = {{0}, {0}, {0}, {0}};
    for (; k + 32 <= n; k += 32)
#pragma GCC unroll 4
        for (int u = 0; u < 4; u++) {
            i32x8 b;
            memcpy(&b, x + k + 8 * u, sizeof b);
            b &= 0x7FFFFFFF;
            mv[u] = (i32x8)SEL((u32x8)(b > mv[u]), (u32x8)b, (u32x8)mv[u]);
        }
    for (int u = 0; u < 4; u++)
        for (int l = 0; l < 8; l++)
            m = (uint32_t)mv[u][l] > m ? (uint32_t)mv[u][l] : m;
#endif
    for (; k < n; k++) {
        uint32_t b;
        memcpy(&b, x + k, sizeof b);
        b &= 0x7FFFFFFFu;
        m = b > m ? b : m;
    }
    return m;
}

/* NaN if any element is NaN, else the largest magnitude (what a scan with fabsf gives) */
float q_amax(const float *x, int64_t n)
{
    enum { CHUNK = 16384 };
    int64_t nch = (n + CHUNK - 1) / CHUNK;
    uint32_t m = 0;
#ifdef _OPENMP
#pragma omp parallel for reduction(max : m) schedule(static) if (nch > 4)
#endif
    for (int64_t c = 0; c < nch; c++) {
        int64_t k0 = c * CHUNK;
        uint32_t r = amax_bits_run(x + k0, n - k0 < CHUNK ? n - k0 : CHUNK);
        m = r > m ? r : m;
    }
    return amax_of_bits(m);
}

/* Quantize every tile of the view and return the whole view's amax. A single tile (per tensor)
 * needs that amax before it can encode: the caller passes it (amax, from q_amax) and its rows
 * run in parallel. Several tiles compute their own amaxes, and the view's is their max. */
static float quant_tiles(const struct view *v, const struct tiling *t, QFormat fmt, int e8m0, float given_scale,
                         float amax, const struct sink *k)
{
    if (t->nbr == 0 || t->nbc == 0) { /* empty matrix: only a per-tensor scale exists */
        if (t->layout == LAYOUT_TENSOR && k->scale_inv)
            k->scale_inv[0] = 1.0f;
        return amax;
    }
    if (t->nbr == 1 && t->nbc == 1) {
        struct tile_scale ts = tile_scale(amax, fmt, e8m0, given_scale);
        store_scale(t, 0, 0, ts, e8m0, k);
        if (t->layout == LAYOUT_BLK && k->scale_inv)
            for (int bj = 1; bj < t->ld; bj++)
                k->scale_inv[scale_index(t, 0, bj)] = 0.0f;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((int64_t)t->R * t->C > 65536)
#endif
        for (int i = 0; i < t->R; i++)
            encode_rows(v, t, i, i + 1, ts, fmt, k);
        return amax;
    }
    uint32_t m = 0;
#ifdef HAVE_ROWS_V4
    if (t->tr == 1 && t->tc % 16 == 0 && t->C % t->tc == 0 && rows_v4_ok(v, fmt, k)) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(max : m) if ((int64_t)t->R * t->C > 65536)
#endif
        for (int bi = 0; bi < t->nbr; bi++) {
            uint32_t r = quant_row_tiles_v4(v, t, bi, fmt, e8m0, given_scale, k);
            m = r > m ? r : m;
        }
        return amax_of_bits(m);
    }
#endif
    /* rows of single-row tiles are cheap: static chunks instead of one dynamic grab per row */
    if (t->tr == 1) {
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(max : m) if ((int64_t)t->R * t->C > 65536)
#endif
        for (int bi = 0; bi < t->nbr; bi++) {
            uint32_t r = quant_tile_row(v, t, bi, fmt, e8m0, given_scale, k);
            m = r > m ? r : m;
        }
    } else {
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) reduction(max : m) if ((int64_t)t->R * t->C > 65536)
#endif
        for (int bi = 0; bi < t->nbr; bi++) {
            uint32_t r = quant_tile_row(v, t, bi, fmt, e8m0, given_scale, k);
            m = r > m ? r : m;
        }
    }
    return amax_of_bits(m);
}

float q_quantize(uint8_t *codes, float *scale_inv, uint8_t *scale_inv_e8m0, const float *x, int R, int C, int tr,
                 int tc, QFormat fmt, int e8m0, float given_scale)
{
    struct tiling t = make_tiling(R, C, tr, tc);
    struct view v = {x, t.C, 1};
    struct sink k = {codes, scale_inv, scale_inv_e8m0, NULL};
    /* one tile needs the amax first; several find it tile by tile in the same pass */
    float amax = (int64_t)t.nbr * t.nbc == 1 ? q_amax(x, (int64_t)t.R * t.C) : 0.0f;
    return quant_tiles(&v, &t, fmt, e8m0, given_scale, amax, &k);
}

#if defined(__GNUC__)
/* An 8 x 8 block of x (rows ldx apart) transposed in registers and encoded: column l of the
 * block (eight rows, one vector) with scale s[l], stored as eight contiguous codes at
 * codes_t + l * ldq. The shared step of the two transposed fast paths below. */
static inline __attribute__((always_inline)) void encode_transposed8(uint8_t *codes_t, size_t ldq, const float *x,
                                                                     int64_t ldx, const f32x8 s[8], QFormat fmt)
{
    vf8 v[8];
    for (int k = 0; k < 8; k++)
        v[k] = vld8(x + (int64_t)k * ldx);
    vtranspose8(v); /* v[l]: column l, rows 0 .. 7 */
    for (int l = 0; l < 8; l++) {
        uint8_t *q = codes_t + (size_t)l * ldq;
        if (fmt == Q_E4M3)
            ENCODE8V(q, v[l], s[l], 3, 7, 0x7Eu, (uint32_t)FP8C_E4M3_NAN);
        else
            ENCODE8V(q, v[l], s[l], 2, 15, 0x7Bu, (uint32_t)FP8C_E5M2_NAN);
    }
}
#endif

/* The column-wise fast path of q_quantize_transposed: 1 x tc tiles of the transpose are tc-row
 * segments of one column of x, so eight adjacent columns are eight lanes. Task (cb, rb) takes
 * columns [8 cb, 8 cb + 8) and rows [rb tc, rb tc + tc) of x: the eight tiles' amaxes lane by
 * lane, their scales (tile_scale, scalar, as quant_tile_row), then 8 x 8 blocks of x through
 * encode_transposed8, each column with its own scale (each lane the scalar encode of x * s).
 * Columns past the last multiple of 8 and the rows past a tile's last multiple of 8 go through
 * the scalar encode. Returns the max of the amax bits. */
HOT_CLONES_V4 static uint32_t quant_columns_vec(uint8_t *codes_t, float *scale_inv, uint8_t *scale_e8m0, int e8m0,
                                             const float *x, const struct tiling *t, int cb, int rb, QFormat fmt,
                                             float given_scale)
{
    int R = t->C, C = t->R; /* x is R x C; the tiling is of its C x R transpose */
    int c0 = 8 * cb, nl = C - c0 < 8 ? C - c0 : 8;
    int r0 = rb * t->tc, r1 = r0 + t->tc < R ? r0 + t->tc : R;
    uint32_t m[8] = {0};
    float sv[8] = {0};
#if defined(__GNUC__)
    if (nl == 8) { /* the magnitude bits' max, lane by lane (block_amax_bits' order trick; the
                    * bits are below 2^31, so a signed compare orders them: vpmaxsd) */
        i32x8 mv[4] = {{0}, {0}, {0}, {0}}; /* four chains: the max does not depend on the order */
        int r = r0;
        for (; r + 4 <= r1; r += 4)
#pragma GCC unroll 4
            for (int u = 0; u < 4; u++) {
                i32x8 b;
                memcpy(&b, x + (int64_t)(r + u) * C + c0, sizeof b);
                b &= 0x7FFFFFFF;
                mv[u] = (i32x8)SEL((u32x8)(b > mv[u]), (u32x8)b, (u32x8)mv[u]);
            }
        for (; r < r1; r++) {
            i32x8 b;
            memcpy(&b, x + (int64_t)r * C + c0, sizeof b);
            b &= 0x7FFFFFFF;
            mv[0] = (i32x8)SEL((u32x8)(b > mv[0]), (u32x8)b, (u32x8)mv[0]);
        }
        for (int u = 1; u < 4; u++)
            mv[0] = (i32x8)SEL((u32x8)(mv[u] > mv[0]), (u32x8)mv[u], (u32x8)mv[0]);
        for (int l = 0; l < 8; l++)
            m[l] = (uint32_t)mv[0][l];
    } else
#endif
        for (int r = r0; r < r1; r++)
            for (int l = 0; l < nl; l++) {
                uint32_t bits;
                memcpy(&bits, x + (int64_t)r * C + c0 + l, sizeof bits);
                bits &= 0x7FFFFFFFu;
                m[l] = bits > m[l] ? bits : m[l];
            }
    uint32_t mx = 0;
    for (int l = 0; l < nl; l++) {
        struct tile_scale ts = tile_scale(bits_float(m[l]), fmt, e8m0, given_scale);
        if (scale_inv)
            scale_inv[scale_index(t, c0 + l, rb)] = ts.sinv;
        if (e8m0 && scale_e8m0) /* MX: the E8M0 code of sinv, as store_scale writes it */
            scale_e8m0[mx_index(t, c0 + l, rb)] = ts.e8;
        sv[l] = ts.s;
        mx = m[l] > mx ? m[l] : mx;
    }
    int r = r0;
#if defined(__GNUC__)
    if (nl == 8 && (fmt == Q_E4M3 || fmt == Q_E5M2)) {
        f32x8 s[8]; /* column c0 + l's scale in every lane */
        for (int l = 0; l < 8; l++)
            s[l] = (f32x8){0} + sv[l];
        /* the format a constant in each loop, so the encoder's checks and constants leave it */
        if (fmt == Q_E4M3)
            for (; r + 8 <= r1; r += 8)
                encode_transposed8(codes_t + (size_t)c0 * (size_t)R + (size_t)r, (size_t)R, x + (int64_t)r * C + c0, C,
                                   s, Q_E4M3);
        else
            for (; r + 8 <= r1; r += 8)
                encode_transposed8(codes_t + (size_t)c0 * (size_t)R + (size_t)r, (size_t)R, x + (int64_t)r * C + c0, C,
                                   s, Q_E5M2);
    }
#endif
    for (; r < r1; r++)
        for (int l = 0; l < nl; l++)
            codes_t[(size_t)(c0 + l) * (size_t)R + (size_t)r] = encode(fmt, x[(int64_t)r * C + c0 + l] * sv[l]);
    return mx;
}

#ifdef HAVE_ROWS_V4
/* Sixteen rows of sixteen floats (rows ldx apart) times s, lane l with s[l], encoded sixteen
 * lanes at a time, narrowed by vpmovdb, and the 16 x 16 codes transposed as bytes
 * (transpose16x16_bytes): column l's sixteen codes go to codes_t + l ldq. The
 * transposed paths' step in AVX-512 proper, against encode_transposed8's 8 x 8 float transpose
 * (24 shuffles per 64 floats) and three-shuffle narrowing. */
V4_INLINE void encode_transposed16(uint8_t *codes_t, size_t ldq, const float *x, int64_t ldx, f32x16 s,
                                   QFormat fmt)
{
    __m128i a[16];
    for (int k = 0; k < 16; k++) {
        f32x16 xv;
        memcpy(&xv, x + (int64_t)k * ldx, sizeof xv);
        u32x16 r8;
        if (fmt == Q_E4M3)
            ENCODE_LANES(&r8, xv, s, 3, 7, 0x7Eu, (uint32_t)FP8C_E4M3_NAN, u32x16, i32x16, f32x16, KEEP_LANES);
        else
            ENCODE_LANES(&r8, xv, s, 2, 15, 0x7Bu, (uint32_t)FP8C_E5M2_NAN, u32x16, i32x16, f32x16, KEEP_LANES);
        a[k] = _mm512_cvtepi32_epi8((__m512i)r8); /* row k: its sixteen codes */
    }
    transpose16x16_bytes(a);
    for (int l = 0; l < 16; l++)
        _mm_storeu_si128((__m128i *)(void *)(codes_t + (size_t)l * ldq), a[l]);
}

/* quant_columns_vec for sixteen columns [16 cb, 16 cb + 16) and the tc rows of tile row rb, all
 * whole (C a multiple of 16, R of tc, tc of 16): the sixteen tiles' amaxes lane by lane, their
 * scales (tile_scale, scalar, as there), the codes sixteen rows at a time. */
__attribute__((target("arch=x86-64-v4"))) static uint32_t quant_columns_v4(uint8_t *codes_t, float *scale_inv,
                                                                            uint8_t *scale_e8m0, int e8m0,
                                                                            const float *x,
                                                                            const struct tiling *t, int cb,
                                                                            int rb, QFormat fmt,
                                                                            float given_scale)
{
    int R = t->C, C = t->R; /* x is R x C; the tiling is of its C x R transpose */
    int c0 = 16 * cb, r0 = rb * t->tc, r1 = r0 + t->tc;
    i32x16 mv[4] = {{0}, {0}, {0}, {0}}; /* four chains: the max does not depend on the order */
    for (int r = r0; r < r1; r += 4)
        for (int u = 0; u < 4; u++) {
            i32x16 b;
            memcpy(&b, x + (int64_t)(r + u) * C + c0, sizeof b);
            b &= 0x7FFFFFFF;
            mv[u] = (i32x16)SEL((u32x16)(b > mv[u]), (u32x16)b, (u32x16)mv[u]);
        }
    for (int u = 1; u < 4; u++)
        mv[0] = (i32x16)SEL((u32x16)(mv[u] > mv[0]), (u32x16)mv[u], (u32x16)mv[0]);
    uint32_t mx = 0;
    f32x16 sv;
    for (int l = 0; l < 16; l++) {
        uint32_t m = (uint32_t)mv[0][l];
        struct tile_scale ts = tile_scale(bits_float(m), fmt, e8m0, given_scale);
        if (scale_inv)
            scale_inv[scale_index(t, c0 + l, rb)] = ts.sinv;
        if (e8m0 && scale_e8m0)
            scale_e8m0[mx_index(t, c0 + l, rb)] = ts.e8;
        sv[l] = ts.s;
        mx = m > mx ? m : mx;
    }
    for (int r = r0; r < r1; r += 16) {
        uint8_t *q = codes_t + (size_t)c0 * (size_t)R + (size_t)r;
        const float *xb = x + (int64_t)r * C + c0;
        if (fmt == Q_E4M3)
            encode_transposed16(q, (size_t)R, xb, C, sv, Q_E4M3);
        else
            encode_transposed16(q, (size_t)R, xb, C, sv, Q_E5M2);
    }
    return mx;
}

/* quant_strip_transposed's codes (x's rows [r0, r1) with one scale s) where C is a multiple of 16
 * and r1 - r0 of 16 */
__attribute__((target("arch=x86-64-v4"))) static void quant_strip_transposed_v4(uint8_t *codes_t, const float *x,
                                                                                 int R, int C, int r0, int r1,
                                                                                 float s, QFormat fmt)
{
    f32x16 sv = (f32x16){0} + s;
    for (int r = r0; r < r1; r += 16)
        for (int c = 0; c < C; c += 16) {
            uint8_t *q = codes_t + (size_t)c * (size_t)R + (size_t)r;
            if (fmt == Q_E4M3)
                encode_transposed16(q, (size_t)R, x + (int64_t)r * C + c, C, sv, Q_E4M3);
            else
                encode_transposed16(q, (size_t)R, x + (int64_t)r * C + c, C, sv, Q_E5M2);
        }
}
#endif

/* The square-tile (BLK) path of q_quantize_transposed: tile (bi, bj) of the C x R transpose is
 * the block of x at rows [bj T, bj T + T), columns [bi T, bi T + T). Its amax from x's rows (unit
 * stride, block_amax_bits: the max does not depend on the order), its scale as quant_tile_row's,
 * then 8 x 8 blocks of x through encode_transposed8 with the tile's scale.
 * Elements outside whole 8 x 8 blocks go through the scalar encode. Returns the amax bits. */
/* The codes of x's rows [r0, r1) and columns [c0, c1) (x is R x C), all with scale s, into the
 * transposed layout (x[r][c]'s code at codes_t[c R + r]): 8 x 8 blocks through
 * encode_transposed8, the rest by the scalar encode. */
static inline __attribute__((always_inline)) void encode_transposed_rect(uint8_t *codes_t, const float *x, int R, int C,
                                                                         int r0, int r1, int c0, int c1, float sc,
                                                                         QFormat fmt)
{
    int c8 = c0 + (c1 - c0) / 8 * 8, r8 = r0 + (r1 - r0) / 8 * 8;
#if defined(__GNUC__)
    if (fmt == Q_E4M3 || fmt == Q_E5M2) {
        f32x8 s[8]; /* the scale, for each of the eight columns */
        for (int l = 0; l < 8; l++)
            s[l] = (f32x8){0} + sc;
        for (int r = r0; r < r8; r += 8)
            for (int c = c0; c < c8; c += 8) {
                uint8_t *q = codes_t + (size_t)c * (size_t)R + (size_t)r;
                if (fmt == Q_E4M3)
                    encode_transposed8(q, (size_t)R, x + (int64_t)r * C + c, C, s, Q_E4M3);
                else
                    encode_transposed8(q, (size_t)R, x + (int64_t)r * C + c, C, s, Q_E5M2);
            }
    } else
#endif
        r8 = r0, c8 = c0; /* everything below */
    for (int c = c0; c < c1; c++)
        for (int r = (c < c8 ? r8 : r0); r < r1; r++)
            codes_t[(size_t)c * (size_t)R + (size_t)r] = encode(fmt, x[(int64_t)r * C + c] * sc);
}

HOT_CLONES_V4 static uint32_t quant_block_transposed(uint8_t *codes_t, float *scale_inv, const float *x, const struct tiling *t,
                                                  int bi, int bj, QFormat fmt, float given_scale)
{
    int R = t->C, C = t->R; /* x is R x C */
    int c0 = bi * t->tr, c1 = c0 + t->tr < C ? c0 + t->tr : C; /* x's columns: the transpose's rows */
    int r0 = bj * t->tc, r1 = r0 + t->tc < R ? r0 + t->tc : R; /* x's rows: the transpose's columns */
    struct view xv = {x, C, 1};
    uint32_t amax = block_amax_bits(&xv, r0, r1, c0, c1);
    struct tile_scale ts = tile_scale(bits_float(amax), fmt, 0, given_scale);
    if (scale_inv)
        scale_inv[scale_index(t, bi, bj)] = ts.sinv;
    encode_transposed_rect(codes_t, x, R, C, r0, r1, c0, c1, ts.s, fmt);
    return amax;
}

/* A per-tensor (single-tile) transposed copy's rows [r0, r1) of x, with the tensor's scale s */
HOT_CLONES_V4 static void quant_strip_transposed(uint8_t *codes_t, const float *x, int R, int C, int r0, int r1, float s,
                                                 QFormat fmt)
{
    encode_transposed_rect(codes_t, x, R, C, r0, r1, 0, C, s, fmt);
}


float q_quantize_transposed(uint8_t *codes, float *scale_inv, uint8_t *scale_inv_e8m0, const float *x, int R, int C,
                            int tr, int tc, QFormat fmt, int e8m0, float given_scale)
{
    R = R > 0 ? R : 0;
    C = C > 0 ? C : 0;
    struct tiling t = make_tiling(C, R, tr, tc);
    if (t.layout == LAYOUT_VEC && t.nbr > 0 && t.nbc > 0) {
        int ncb = (C + 7) / 8, nrb = t.nbc;
        uint32_t m = 0;
#ifdef HAVE_ROWS_V4
        if (C % 16 == 0 && t.tc % 16 == 0 && R % t.tc == 0 && (fmt == Q_E4M3 || fmt == Q_E5M2) && codes && cpu_v4()) {
            ncb = C / 16;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(max : m) if ((int64_t)R * C > 65536)
#endif
            for (int task = 0; task < ncb * nrb; task++) {
                uint32_t r = quant_columns_v4(codes, scale_inv, scale_inv_e8m0, e8m0, x, &t, task % ncb, task / ncb,
                                              fmt, given_scale);
                m = r > m ? r : m;
            }
            return amax_of_bits(m);
        }
#endif
#ifdef _OPENMP
#pragma omp parallel for schedule(static) reduction(max : m) if ((int64_t)R * C > 65536)
#endif
        for (int task = 0; task < ncb * nrb; task++) {
            uint32_t r = quant_columns_vec(codes, scale_inv, scale_inv_e8m0, e8m0, x, &t, task % ncb, task / ncb, fmt,
                                           given_scale);
            m = r > m ? r : m;
        }
        return amax_of_bits(m);
    }
    if (t.layout == LAYOUT_BLK && !e8m0 && t.nbr > 0 && t.nbc > 0) {
        uint32_t m = 0;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 1) reduction(max : m) if ((int64_t)R * C > 65536)
#endif
        for (int task = 0; task < t.nbr * t.nbc; task++) {
            uint32_t r = quant_block_transposed(codes, scale_inv, x, &t, task / t.nbc, task % t.nbc, fmt, given_scale);
            m = r > m ? r : m;
        }
        if (scale_inv) /* the padding of each tile row's scales */
            for (int bi = 0; bi < t.nbr; bi++)
                for (int bj = t.nbc; bj < t.ld; bj++)
                    scale_inv[scale_index(&t, bi, bj)] = 0.0f;
        return amax_of_bits(m);
    }
    struct view v = {x, 1, C}; /* element (i, j) of the C x R transpose is x[j*C + i] */
    struct sink k = {codes, scale_inv, scale_inv_e8m0, NULL};
    float amax = (int64_t)t.nbr * t.nbc == 1 ? q_amax(x, (int64_t)R * C) : 0.0f;
    if ((int64_t)t.nbr * t.nbc == 1) { /* one tile (per tensor): its scale, then strips of x's rows */
        struct tile_scale ts = tile_scale(amax, fmt, e8m0, given_scale);
        store_scale(&t, 0, 0, ts, e8m0, &k);
        if (t.layout == LAYOUT_BLK && scale_inv)
            for (int bj = 1; bj < t.ld; bj++)
                scale_inv[scale_index(&t, 0, bj)] = 0.0f;
        int nstrip = (R + 63) / 64;
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((int64_t)R * C > 65536)
#endif
        for (int st = 0; st < nstrip; st++) {
            int r0 = st * 64, r1 = st * 64 + 64 < R ? st * 64 + 64 : R;
#ifdef HAVE_ROWS_V4
            if (C % 16 == 0 && (r1 - r0) % 16 == 0 && (fmt == Q_E4M3 || fmt == Q_E5M2) && codes && cpu_v4()) {
                quant_strip_transposed_v4(codes, x, R, C, r0, r1, ts.s, fmt);
                continue;
            }
#endif
            quant_strip_transposed(codes, x, R, C, r0, r1, ts.s, fmt);
        }
        return amax;
    }
    return quant_tiles(&v, &t, fmt, e8m0, given_scale, amax, &k);
}

float q_fake_quant(float *out, const float *x, int R, int C, int tr, int tc, QFormat fmt, int e8m0, float given_scale,
                   int transpose)
{
    R = R > 0 ? R : 0;
    C = C > 0 ? C : 0;
    /* Transposed: the view is C x R with element (i, j) = x[j*C + i]. */
    struct tiling t = transpose ? make_tiling(C, R, tr, tc) : make_tiling(R, C, tr, tc);
    struct view v = {x, transpose ? 1 : C, transpose ? C : 1};
    struct sink k = {NULL, NULL, NULL, out};
    float amax = (int64_t)t.nbr * t.nbc == 1 ? q_amax(x, (int64_t)R * C) : 0.0f;
    return quant_tiles(&v, &t, fmt, e8m0, given_scale, amax, &k);
}

int q_transpose_copy(uint8_t *codes_t, float *scale_inv_t, const uint8_t *codes, const float *scale_inv, int R, int C,
                     int tr, int tc)
{
    struct tiling a = make_tiling(R, C, tr, tc), b = make_tiling(C, R, tr, tc);
    if (a.layout != LAYOUT_TENSOR && a.layout != LAYOUT_BLK)
        return -1;
    enum { TB = 64 }; /* cache blocks of the transpose */
    for (int i0 = 0; i0 < a.R; i0 += TB)
        for (int j0 = 0; j0 < a.C; j0 += TB)
            for (int i = i0; i < i0 + TB && i < a.R; i++)
                for (int j = j0; j < j0 + TB && j < a.C; j++)
                    codes_t[(size_t)j * (size_t)a.R + (size_t)i] = codes[(size_t)i * (size_t)a.C + (size_t)j];
    if (scale_inv && scale_inv_t)
        for (int bi = 0; bi < a.nbr; bi++)
            for (int bj = 0; bj < a.nbc; bj++)
                scale_inv_t[scale_index(&b, bj, bi)] = scale_inv[scale_index(&a, bi, bj)];
    return 0;
}

void q_decoder_init(QDecoder *d, const uint8_t *codes, const float *scale_inv, const uint8_t *scale_inv_e8m0, int R,
                    int C, int tr, int tc, QFormat fmt, int e8m0)
{
    struct tiling t = make_tiling(R, C, tr, tc);
    d->codes = codes;
    d->R = t.R;
    d->C = t.C;
    d->tr = t.tr;
    d->tc = t.tc;
    d->fmt = (int)fmt;
    d->scale_e8m0 = e8m0 && scale_inv_e8m0 ? scale_inv_e8m0 : NULL;
    d->scale_inv = d->scale_e8m0 ? NULL : scale_inv;
    if (d->scale_e8m0) { /* mx_index: always row-major */
        d->s_row = t.nbc;
        d->s_col = 1;
    } else { /* scale_index, as a linear form in (bi, bj) */
        d->s_row = (int64_t)scale_index(&t, 1, 0) - (int64_t)scale_index(&t, 0, 0);
        d->s_col = (int64_t)scale_index(&t, 0, 1) - (int64_t)scale_index(&t, 0, 0);
    }
    for (int c = 0; c < 256; c++) /* a table of decode()'s results: exact */
        d->lut[c] = decode(fmt, (uint8_t)c);
}

HOT_CLONES void q_decode_rect(const QDecoder *d, float *out, int64_t ldo, int r0, int nr, int c0, int nc)
{
    int vec = d->fmt == Q_E4M3 || d->fmt == Q_E5M2, e4 = d->fmt == Q_E4M3;
    for (int i = r0; i < r0 + nr; i++) {
        const uint8_t *row = d->codes + (size_t)i * (size_t)d->C;
        float *orow = out + (int64_t)(i - r0) * ldo;
        int64_t srow = (int64_t)(i / d->tr) * d->s_row;
        for (int j0 = c0; j0 < c0 + nc;) {
            int j1 = (j0 / d->tc + 1) * d->tc; /* the end of j0's tile */
            if (j1 > c0 + nc)
                j1 = c0 + nc;
            int64_t si = srow + (int64_t)(j0 / d->tc) * d->s_col;
            float sinv = d->scale_e8m0 ? e8m0_value(d->scale_e8m0[si]) : d->scale_inv[si];
            int j = j0;
#if defined(__GNUC__)
            /* eight at a time (vmath.h's vdecode8, as the GEMM's packing) */
            if (vec)
                for (; j + 8 <= j1; j += 8) {
                    vf8 v;
                    vdecode8(&v, row + j, sinv, e4, d->lut);
                    vst8(orow + (j - c0), v);
                }
#endif
            for (; j < j1; j++)
                orow[j - c0] = d->lut[row[j]] * sinv;
            j0 = j1;
        }
    }
}

void q_dequantize(float *out, const uint8_t *codes, const float *scale_inv, const uint8_t *scale_inv_e8m0, int R,
                  int C, int tr, int tc, QFormat fmt, int e8m0)
{
    QDecoder d;
    q_decoder_init(&d, codes, scale_inv, scale_inv_e8m0, R, C, tr, tc, fmt, e8m0);
#ifdef _OPENMP
#pragma omp parallel for schedule(static) if ((int64_t)d.R * d.C > 65536)
#endif
    for (int i = 0; i < d.R; i++)
        q_decode_rect(&d, out + (size_t)i * (size_t)d.C, d.C, i, 1, 0, d.C);
}

/* ---- delayed scaling -------------------------------------------------------------- */

void q_delayed_init(QDelayed *d, float *history_storage, int len, int algo, int margin, int interval)
{
    d->len = len > 0 ? len : 1;
    d->algo = algo;
    d->margin = margin;
    d->interval = interval > 0 ? interval : 1;
    d->pos = 0;
    d->filled = 0;
    d->history = history_storage;
    for (int k = 0; k < d->len; k++)
        d->history[k] = 0.0f;
    d->scale = 1.0f;
    d->scale_inv = 1.0f;
    d->bad_steps = 0;
}

void q_delayed_update_fmt(QDelayed *d, float amax, int64_t step, QFormat fmt)
{
    d->history[d->pos] = amax;
    d->pos = (d->pos + 1) % d->len;
    if (d->filled < d->len)
        d->filled++;
    if (step % d->interval != 0)
        return;
    float a = amax; /* most_recent */
    if (d->algo == 0)
        a = q_amax(d->history, d->filled); /* entries are magnitudes: max |h| = max h */
    int bad = 0;
    d->scale = q_compute_scale(a, q_format_max(fmt), d->margin, 0, d->scale, &bad);
    d->scale_inv = 1.0f / d->scale;
    d->bad_steps += bad;
}

void q_delayed_update(QDelayed *d, float amax, int64_t step)
{
    q_delayed_update_fmt(d, amax, step, Q_E4M3);
}
