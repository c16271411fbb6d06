// quantize.cuh: the quantize op, runtime/quant.c q_quantize as runtime/cpu/exec.c run_quantize
// calls it, bit for bit: codes = encode(x * s) per scaling tile, scale_inv = 1 / s in the layouts
// of runtime/quant.h (per tensor, VEC 1xT, BLK TxT with 4-padded rows, ROWS; E8M0 row-major for
// MX), the whole-tensor amax (NaN wins, written as the canonical quiet NaN 0x7fc00000 like C's
// NAN), and the column-wise copy (transpose = 1: the tiles lie over the R x C input's transpose,
// codes are C x R).
//
// Two kernels:
//   quantize_region  a block owns a B x B region of the input (B = 32, 64 or 128; 4B threads,
//                    each holding 8 rows x B/32 adjacent columns in registers), reads it once and
//                    writes the row-wise copy, the column-wise copy or both (FUSE_CAST_TRANSPOSE).
//                    Tiles must line up with the region: 1 x T row segments (warp shuffles),
//                    a x b tiles with a a multiple of 8 (column partials through shared memory),
//                    or one tile for the whole tensor ("single": per-tensor scaling).
//   quantize_tiles   any other tiling (ragged ROWS tiles, tiles wider than 128, ...): one block
//                    per tile, two passes over the tile; slow for tiny tiles but exact.
// Launches (the generator's entries, in order, same arguments):
//   _main    grid = regions (or tiles), block = 4B (or 256): tile amaxes, scales, codes; each
//            block's amax into ws[block] when a finish pass needs the whole-tensor amax.
//   _finish  only for per-tensor current scaling (a single tile needs the global amax before any
//            element is encoded) or an amax output: reduces ws (every slot was written by _main,
//            so ws needs no zeroing) and encodes the single-tile copies whose scale was not given.
// Must not: approximate (x * s is a separately rounded multiply, scales use IEEE division), use
// atomics for the amax (the reduction order is fixed), or read ws before _main wrote it.

// Scale-inverse layouts of runtime/quant.h.
#define QL_TENSOR 0 // scale_inv[0]
#define QL_VEC 1    // 1 x T: scale_inv[i + b*NBR]
#define QL_BLK 2    // T x T: scale_inv[b + bi*LD], LD = NBC rounded up to 4, padding 0
#define QL_ROWS 3   // otherwise: scale_inv[b + bi*NBC]

// One quantized copy as quant.c make_tiling sees it: the view is RV x CV (the input, or its
// transpose for the column-wise copy), tiles TR_ x TC_ as the step gives them (<= 0: the whole
// dimension).
template <int RV_, int CV_, int TR_, int TC_, int FMT_, int MX_> struct QCopy {
    static constexpr int RV = RV_, CV = CV_, FMT = FMT_, MX = MX_;
    static constexpr int TR = TR_ > 0 ? TR_ : RV_, TC = TC_ > 0 ? TC_ : CV_;
    static constexpr int NBR = (RV + TR - 1) / TR, NBC = (CV + TC - 1) / TC;
    static constexpr int LAYOUT = (TR_ <= 0 && TC_ <= 0) ? QL_TENSOR : TR_ == 1 ? QL_VEC : (TR_ > 1 && TR_ == TC_) ? QL_BLK : QL_ROWS;
    static constexpr int LD = LAYOUT == QL_BLK ? (NBC + 3) / 4 * 4 : NBC;
    static constexpr bool SINGLE = NBR == 1 && NBC == 1; // one tile: scaled by the global amax
    static_assert(RV_ > 0 && CV_ > 0, "quantize: empty tensor");
    static_assert(FMT_ == FMT_E4M3 || FMT_ == FMT_E5M2, "quantize: only E4M3 and E5M2 (E2M1 needs sm_100a)");

    // Where tile (bi, bj)'s scale goes; E8M0 codes are always row-major.
    __device__ static __forceinline__ i64 scale_index(int bi, int bj) {
        if (MX) return (i64)bi * NBC + bj;
        if (LAYOUT == QL_TENSOR) return 0;
        if (LAYOUT == QL_VEC) return bi + (i64)bj * NBR;
        return bj + (i64)bi * LD;
    }
};

// A tile's scale pair (quant.c struct tile_scale): x is multiplied by s, codes decode times sinv.
struct QScale {
    float s, sinv;
    u8 e8; // MX: the E8M0 code of sinv
};

// quant.c tile_scale. MX: sinv = 2^(floor(log2 amax) - emax_elem) as E8M0 (multiplying by
// 2^-emax rounds exactly like ldexpf, subnormals included); otherwise a positive given scale
// (delayed scaling) wins, else fmax / amax with the safe scale 1 for an amax of 0, Inf or NaN.
template <int FMT, int MX> __device__ __forceinline__ QScale q_tile_scale(float amax, float given) {
    QScale t = {1.0f, 1.0f, 127};
    if (MX) {
        if (amax > 0.0f && !isinf(amax)) {
            float y = __fmul_rn(amax, FMT == FMT_E4M3 ? 0.00390625f : 3.0517578125e-05f); // 2^-8, 2^-15
            u32 e = __float_as_uint(y) >> 23;
            t.e8 = (u8)e;
            t.sinv = e == 0 ? __uint_as_float(0x00400000u) : __uint_as_float(e << 23); // E8M0 0 is 2^-127
            t.s = __fdiv_rn(1.0f, t.sinv);
        }
        return t;
    }
    t.s = given > 0.0f ? given : compute_scale(amax, FmtMax<FMT>::v, 0, 1.0f);
    t.sinv = __fdiv_rn(1.0f, t.s);
    return t;
}

__device__ __forceinline__ void q_store_scale(float *p, QScale t) { *p = t.sinv; }
__device__ __forceinline__ void q_store_scale(u8 *p, QScale t) { *p = t.e8; }

template <int FMT> __device__ __forceinline__ u32 q_encode(float x, float s) { return fp8_encode<FMT>(__fmul_rn(x, s)); }

// Write tile (bi, bj)'s scale and, after the last tile of a BLK row, that row's zero padding.
template <class Q, typename SP> __device__ __forceinline__ void q_write_scale(SP *sinv, int bi, int bj, QScale t) {
    q_store_scale(sinv + Q::scale_index(bi, bj), t);
    if (!Q::MX && Q::LAYOUT == QL_BLK && bj == Q::NBC - 1)
        for (int p = Q::NBC; p < Q::LD; p++) sinv[Q::scale_index(bi, p)] = 0;
}

// The whole-tensor amax as q_amax returns it: a NaN anywhere is C's NAN.
__device__ __forceinline__ float q_amax_out(float a) { return isnan(a) ? __uint_as_float(0x7fc00000u) : a; }

// ---- quantize_region -------------------------------------------------------------------------

// Registers of one thread: rows rl0 .. rl0+7 of the region, columns cl0 .. cl0+V-1.
#define QR_RPT 8

// How one tiled copy's tiles lie in the input (T: the column-wise copy, whose view is the
// input's transpose): XA x XB input rows x columns, grouped GA x GB inside a region (a tile that
// covers the whole dimension is grouped as the whole region).
template <class Q, bool T, int R, int C, int B> struct QGroup {
    static constexpr int XA = T ? Q::TC : Q::TR, XB = T ? Q::TR : Q::TC;
    static constexpr int GA = XA >= R ? B : XA, GB = XB >= C ? B : XB;
    static_assert(XA < R || R <= B, "quantize_region: a tile taller than the region must cover the whole tensor");
    static_assert(XB < C || C <= B, "quantize_region: a tile wider than the region must cover the whole tensor");
    static_assert(B % GA == 0 && B % GB == 0, "quantize_region: tiles must divide the region");
    static_assert(GA == 1 ? GB % (B / 32) == 0 : GA % QR_RPT == 0, "quantize_region: tile shape does not fit the thread layout");
    // Write the scale of the tile whose first element is input (gr, gc), if that is in the tensor.
    template <typename SP> __device__ static __forceinline__ void write(SP *sinv, int gr, int gc, QScale sc) {
        if (gr < R && gc < C) q_write_scale<Q>(sinv, T ? gc / Q::TR : gr / Q::TR, T ? gr / Q::TC : gc / Q::TC, sc);
    }
};

// 1 x GB row segments (in input coordinates): a shuffle over the GB / V lanes that hold one.
// Codes come back packed: byte v of qw[k] is element (k, v).
template <class Q, bool T, int R, int C, int B, typename SP>
__device__ __forceinline__ void region_tiled_rows(const float (&x)[QR_RPT][B / 32], u32 (&qw)[QR_RPT], SP *sinv, float given,
                                                  int r0, int c0) {
    typedef QGroup<Q, T, R, C, B> G;
    constexpr int V = B / 32, L = G::GB / V;
    const int lane = threadIdx.x & 31, rl0 = (threadIdx.x >> 5) * QR_RPT;
#pragma unroll
    for (int k = 0; k < QR_RPT; k++) {
        float a = 0.0f;
#pragma unroll
        for (int v = 0; v < V; v++) a = amax_combine(a, fabsf(x[k][v]));
#pragma unroll
        for (int o = L / 2; o > 0; o >>= 1) a = amax_combine(a, __shfl_xor_sync(0xffffffffu, a, o));
        QScale sc = q_tile_scale<Q::FMT, Q::MX>(a, given);
        if (lane % L == 0) G::write(sinv, r0 + rl0 + k, c0 + lane * V, sc);
        u32 w = 0;
#pragma unroll
        for (int v = 0; v < V; v++) w |= q_encode<Q::FMT>(x[k][v], sc.s) << (8 * v);
        qw[k] = w;
    }
}

// GA x GB tiles with GA a multiple of 8, so each thread's 8 rows lie in one tile row: column
// maxima per thread row into red_a, per tile row into red_b, then per tile (one warp each, or
// one thread when GB == 1), whose scale lands in a shared table the encode reads.
template <class Q, bool T, int R, int C, int B, typename SP>
__device__ __forceinline__ void region_tiled_blocks(const float (&x)[QR_RPT][B / 32], u32 (&qw)[QR_RPT], SP *sinv,
                                                    float given, int r0, int c0, float *red_a, float *red_b) {
    typedef QGroup<Q, T, R, C, B> G;
    constexpr int V = B / 32, THREADS = 4 * B, TY = THREADS / 32, GA = G::GA, GB = G::GB;
    constexpr int NS = B / GA, NT = B / GB, TPS = GA / QR_RPT; // tile rows, tile columns, thread rows per tile row
    const int tid = threadIdx.x, ty = tid >> 5, lane = tid & 31, rl0 = ty * QR_RPT, cl0 = lane * V;
#pragma unroll
    for (int v = 0; v < V; v++) {
        float a = 0.0f;
#pragma unroll
        for (int k = 0; k < QR_RPT; k++) a = amax_combine(a, fabsf(x[k][v]));
        red_a[ty * B + cl0 + v] = a; // (TY, B)
    }
    __syncthreads();
    for (int t = tid; t < NS * B; t += THREADS) { // red_b: (NS, B)
        int s = t / B, col = t % B;
        float a = 0.0f;
        for (int j = 0; j < TPS; j++) a = amax_combine(a, red_a[(s * TPS + j) * B + col]);
        if (GB == 1) { // the tile is this column segment
            QScale sc = q_tile_scale<Q::FMT, Q::MX>(a, given);
            G::write(sinv, r0 + s * GA, c0 + col, sc);
            a = sc.s;
        }
        red_b[t] = a;
    }
    __syncthreads();
    const float *tile_s = red_b; // (NS, NT) scales
    if (GB > 1) {
        for (int tile = ty; tile < NS * NT; tile += TY) {
            int s = tile / NT, c = tile % NT;
            float a = 0.0f;
            for (int j = lane; j < GB; j += 32) a = amax_combine(a, red_b[s * B + c * GB + j]);
            a = warp_amax(a);
            QScale sc = q_tile_scale<Q::FMT, Q::MX>(a, given);
            if (lane == 0) {
                red_a[tile] = sc.s;
                G::write(sinv, r0 + s * GA, c0 + c * GB, sc);
            }
        }
        __syncthreads();
        tile_s = red_a;
    }
#pragma unroll
    for (int k = 0; k < QR_RPT; k++) {
        u32 w = 0;
#pragma unroll
        for (int v = 0; v < V; v++) w |= q_encode<Q::FMT>(x[k][v], tile_s[((rl0 + k) / GA) * NT + (cl0 + v) / GB]) << (8 * v);
        qw[k] = w;
    }
    __syncthreads(); // red_a / red_b are free again
}

template <class Q, bool T, int R, int C, int B, typename SP>
__device__ __forceinline__ void region_tiled(const float (&x)[QR_RPT][B / 32], u32 (&qw)[QR_RPT], SP *sinv, float given,
                                             int r0, int c0, float *red_a, float *red_b) {
    if constexpr (QGroup<Q, T, R, C, B>::GA == 1) region_tiled_rows<Q, T, R, C, B>(x, qw, sinv, given, r0, c0);
    else region_tiled_blocks<Q, T, R, C, B>(x, qw, sinv, given, r0, c0, red_a, red_b);
}

// One scale for the whole copy (a single tile): codes packed as in region_tiled; block 0 writes
// the scale (and a 1-tile BLK row's padding).
template <class Q, int V, typename SP>
__device__ __forceinline__ void region_single_encode(const float (&x)[QR_RPT][V], u32 (&qw)[QR_RPT], SP *sinv, QScale sc) {
#pragma unroll
    for (int k = 0; k < QR_RPT; k++) {
        u32 w = 0;
#pragma unroll
        for (int v = 0; v < V; v++) w |= q_encode<Q::FMT>(x[k][v], sc.s) << (8 * v);
        qw[k] = w;
    }
    if (blockIdx.x == 0 && threadIdx.x == 0) q_write_scale<Q>(sinv, 0, 0, sc);
}

// Row-wise codes (R x C) straight from the registers: V bytes per thread per row.
template <int R, int C, int B>
__device__ __forceinline__ void region_store_rows(u8 *codes, const u32 (&qw)[QR_RPT], int r0, int c0) {
    constexpr int V = B / 32;
    const int rl0 = (threadIdx.x >> 5) * QR_RPT, gc = c0 + (threadIdx.x & 31) * V;
#pragma unroll
    for (int k = 0; k < QR_RPT; k++) {
        int gr = r0 + rl0 + k;
        if (gr >= R) break;
        u8 *p = codes + (i64)gr * C + gc;
        if (C % V == 0) {
            if (gc >= C) continue;
            if (V == 4) *reinterpret_cast<u32 *>(p) = qw[k];
            else if (V == 2) *reinterpret_cast<u16 *>(p) = (u16)qw[k];
            else *p = (u8)qw[k];
        } else {
            for (int v = 0; v < V; v++)
                if (gc + v < C) p[v] = (u8)(qw[k] >> (8 * v));
        }
    }
}

// Column-wise codes (C x R): transposed through shared memory (tc: B rows of B + 8 bytes, one
// per input column), then written 4 bytes per thread along the output rows.
template <int R, int C, int B>
__device__ __forceinline__ void region_store_cols(u8 *codes, const u32 (&qw)[QR_RPT], u8 *tc, int r0, int c0) {
    constexpr int V = B / 32, P = B + 8, THREADS = 4 * B;
    const int rl0 = (threadIdx.x >> 5) * QR_RPT, cl0 = (threadIdx.x & 31) * V;
#pragma unroll
    for (int v = 0; v < V; v++) { // this thread's 8 rows of column cl0 + v are 8 adjacent bytes
        u32 lo = 0, hi = 0;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            lo |= ((qw[k] >> (8 * v)) & 0xffu) << (8 * k);
            hi |= ((qw[k + 4] >> (8 * v)) & 0xffu) << (8 * k);
        }
        *reinterpret_cast<uint2 *>(tc + (cl0 + v) * P + rl0) = make_uint2(lo, hi);
    }
    __syncthreads();
    for (int w = threadIdx.x; w < B * B / 4; w += THREADS) {
        int cl = w / (B / 4), j = (w % (B / 4)) * 4;
        int gc = c0 + cl, gr = r0 + j;
        if (gc >= C || gr >= R) continue;
        u8 *p = codes + (i64)gc * R + gr;
        const u8 *s = tc + cl * P + j;
        if (R % 4 == 0) {
            *reinterpret_cast<u32 *>(p) = *reinterpret_cast<const u32 *>(s);
        } else {
            for (int b = 0; b < 4; b++)
                if (gr + b < R) p[b] = s[b];
        }
    }
    __syncthreads(); // tc is free again
}

// Load the region: element (k, v) is input (r0 + rl0 + k, c0 + cl0 + v), 0 outside the tensor.
template <typename TIN, int R, int C, int B>
__device__ __forceinline__ void region_load(float (&x)[QR_RPT][B / 32], const TIN *inp, int r0, int c0) {
    constexpr int V = B / 32;
    const int rl0 = (threadIdx.x >> 5) * QR_RPT, gc = c0 + (threadIdx.x & 31) * V;
#pragma unroll
    for (int k = 0; k < QR_RPT; k++) {
        int gr = r0 + rl0 + k;
        const TIN *p = inp + (i64)gr * C + gc;
        if (C % V == 0) {
            if (gr < R && gc < C) {
                pack_ld<V>(x[k], p);
            } else {
#pragma unroll
                for (int v = 0; v < V; v++) x[k][v] = 0.0f;
            }
        } else {
#pragma unroll
            for (int v = 0; v < V; v++) x[k][v] = gr < R && gc + v < C ? ld(p[v]) : 0.0f;
        }
    }
}

// Block-wide amax of the loaded region (every thread gets it).
template <int B> __device__ __forceinline__ float region_amax(const float (&x)[QR_RPT][B / 32], float *bred) {
    float a = 0.0f;
#pragma unroll
    for (int k = 0; k < QR_RPT; k++)
#pragma unroll
        for (int v = 0; v < B / 32; v++) a = amax_combine(a, fabsf(x[k][v]));
    return block_amax<4 * B>(a, bred);
}

// Encode and store one copy of the loaded region: its own tiles, or the one scale of a
// single-tile copy (from the global amax gamax, or given).
template <class Q, bool T, int R, int C, int B, typename SP>
__device__ __forceinline__ void region_copy(const float (&x)[QR_RPT][B / 32], u8 *codes, SP *sinv, float given, float gamax,
                                            int r0, int c0, float *red_a, float *red_b, u8 *tc) {
    u32 qw[QR_RPT];
    if constexpr (Q::SINGLE) region_single_encode<Q, B / 32>(x, qw, sinv, q_tile_scale<Q::FMT, Q::MX>(gamax, given));
    else region_tiled<Q, T, R, C, B>(x, qw, sinv, given, r0, c0, red_a, red_b);
    if constexpr (T) region_store_cols<R, C, B>(codes, qw, tc, r0, c0);
    else region_store_rows<R, C, B>(codes, qw, r0, c0);
}

// One entry of a quantize_region instance. QR / QC: the row-wise and column-wise copies (ROW /
// COL say which exist); HAS_AMAX: an amax output is bound (amax_r and/or amax_c, the same value).
// PHASE 0 is _main, 1 is _finish (see the file comment). Grid: one block per B x B region,
// row-major over regions ((R/B) x (C/B), rounded up), or 1 block for a finish that only reduces.
template <typename TIN, int R, int C, int B, class QR, class QC, bool ROW, bool COL, bool HAS_AMAX, int PHASE,
          typename SPR, typename SPC>
__device__ __forceinline__ void quantize_region(u8 *codes_r, SPR *sinv_r, float *amax_r, u8 *codes_c, SPC *sinv_c,
                                                float *amax_c, const TIN *inp, const float *scale_r, const float *scale_c,
                                                void *ws) {
    constexpr int V = B / 32, THREADS = 4 * B, TY = THREADS / 32;
    static_assert(B == 32 || B == 64 || B == 128, "quantize_region: B is 32, 64 or 128");
    static_assert(TY * QR_RPT == B, "quantize_region: 8 rows per thread");
    static_assert(ROW || COL, "quantize_region: no copy to write");
    static_assert(!ROW || (QR::RV == R && QR::CV == C), "quantize_region: row copy view must be R x C");
    static_assert(!COL || (QC::RV == C && QC::CV == R), "quantize_region: column copy view must be C x R");
    constexpr int NCB = (C + B - 1) / B, NBLK = (R + B - 1) / B * NCB;
    constexpr bool R_SINGLE = ROW && QR::SINGLE, C_SINGLE = COL && QC::SINGLE;
    constexpr bool ONE_BLOCK = NBLK == 1; // the region is the tensor: its amax is the global amax
    constexpr bool FINISH = !ONE_BLOCK && (R_SINGLE || C_SINGLE || HAS_AMAX);
    static_assert(PHASE == 0 || FINISH, "quantize_region: this instance has no finish pass");

    __shared__ float red_a[TY * B], red_b[TY * B], bred[32];
    __shared__ __align__(8) u8 tc[COL ? B * (B + 8) : 8];
    float *part = reinterpret_cast<float *>(ws); // (NBLK) per-block amax, written by _main
    const float given_r = ROW && scale_r ? scale_r[0] : 0.0f, given_c = COL && scale_c ? scale_c[0] : 0.0f;
    // a single-tile copy can encode in _main only with its scale known: given (not MX) or ONE_BLOCK
    const bool r_now = ROW && (!R_SINGLE || ONE_BLOCK || (!QR::MX && given_r > 0.0f));
    const bool c_now = COL && (!C_SINGLE || ONE_BLOCK || (!QC::MX && given_c > 0.0f));
    const int blk = blockIdx.x, r0 = blk / NCB * B, c0 = blk % NCB * B;
    float x[QR_RPT][V];

    if (PHASE == 0) {
        region_load<TIN, R, C, B>(x, inp, r0, c0);
        float gamax = 0.0f;
        if (FINISH || (ONE_BLOCK && (R_SINGLE || C_SINGLE || HAS_AMAX))) {
            gamax = region_amax<B>(x, bred);
            if (FINISH && threadIdx.x == 0) part[blk] = gamax;
            if (ONE_BLOCK && HAS_AMAX && threadIdx.x == 0) {
                if (amax_r) amax_r[0] = q_amax_out(gamax);
                if (amax_c) amax_c[0] = q_amax_out(gamax);
            }
        }
        if constexpr (ROW)
            if (r_now) region_copy<QR, false, R, C, B>(x, codes_r, sinv_r, given_r, gamax, r0, c0, red_a, red_b, tc);
        if constexpr (COL)
            if (c_now) region_copy<QC, true, R, C, B>(x, codes_c, sinv_c, given_c, gamax, r0, c0, red_a, red_b, tc);
        return;
    }
    // PHASE 1: the global amax from the per-block values; encode the single-tile copies _main
    // could not (their scale was not given). The conditions are the same in every block.
    if constexpr (FINISH) {
        const bool r_late = ROW && !r_now, c_late = COL && !c_now;
        if (!r_late && !c_late && !(HAS_AMAX && blk == 0)) return;
        float a = 0.0f;
        for (int i = threadIdx.x; i < NBLK; i += THREADS) a = amax_combine(a, part[i]);
        float gamax = block_amax<THREADS>(a, bred);
        if (HAS_AMAX && blk == 0 && threadIdx.x == 0) {
            if (amax_r) amax_r[0] = q_amax_out(gamax);
            if (amax_c) amax_c[0] = q_amax_out(gamax);
        }
        if (!r_late && !c_late) return;
        region_load<TIN, R, C, B>(x, inp, r0, c0);
        if constexpr (R_SINGLE)
            if (r_late) region_copy<QR, false, R, C, B>(x, codes_r, sinv_r, given_r, gamax, r0, c0, red_a, red_b, tc);
        if constexpr (C_SINGLE)
            if (c_late) region_copy<QC, true, R, C, B>(x, codes_c, sinv_c, given_c, gamax, r0, c0, red_a, red_b, tc);
    }
}

// ---- quantize_tiles: the general fallback -------------------------------------------------------

// One copy, one block of THREADS per tile (grid = Q::NBR * Q::NBC, row-major over tiles). Pass
// one reduces the tile's amax, pass two re-reads it (from L2) and encodes. The column-wise copy
// goes through 32 x 32 shared-memory chunks so that reads and writes stay coalesced. PHASE 1
// (HAS_AMAX only, one block) reduces the per-tile amaxes in ws into amax.
template <typename TIN, int R, int C, class Q, bool T, bool HAS_AMAX, int PHASE, int THREADS, typename SP>
__device__ __forceinline__ void quantize_tiles(u8 *codes, SP *sinv, float *amax, const TIN *inp, const float *scale, void *ws) {
    static_assert(THREADS == 256, "quantize_tiles: 256 threads (8 rows of a 32 x 32 chunk per pass)");
    static_assert(Q::RV == (T ? C : R) && Q::CV == (T ? R : C), "quantize_tiles: view does not match the input");
    static_assert(!Q::SINGLE, "quantize_tiles: a single tile is quantize_region's");
    constexpr int NTILES = Q::NBR * Q::NBC;
    __shared__ float bred[32];
    __shared__ u8 chunk[32][33];
    float *part = reinterpret_cast<float *>(ws);
    const int tid = threadIdx.x;
    if (PHASE == 1) {
        float a = 0.0f;
        for (int i = tid; i < NTILES; i += THREADS) a = amax_combine(a, part[i]);
        a = block_amax<THREADS>(a, bred);
        if (tid == 0) amax[0] = q_amax_out(a);
        return;
    }
    const int bi = blockIdx.x / Q::NBC, bj = blockIdx.x % Q::NBC;
    const int i0 = bi * Q::TR, i1 = min(i0 + Q::TR, Q::RV), j0 = bj * Q::TC, j1 = min(j0 + Q::TC, Q::CV);
    // the tile's footprint in the input: rows [fr0, fr1), columns [fc0, fc1)
    const int fr0 = T ? j0 : i0, fr1 = T ? j1 : i1, fc0 = T ? i0 : j0, fc1 = T ? i1 : j1;
    const int w = fc1 - fc0;
    const i64 n = (i64)(fr1 - fr0) * w;
    float a = 0.0f;
    for (i64 e = tid; e < n; e += THREADS) a = amax_combine(a, fabsf(ld(inp[(i64)(fr0 + e / w) * C + fc0 + e % w])));
    a = block_amax<THREADS>(a, bred);
    if (HAS_AMAX && tid == 0) part[blockIdx.x] = a;
    const float given = scale ? scale[0] : 0.0f;
    QScale sc = q_tile_scale<Q::FMT, Q::MX>(a, given);
    if (tid == 0) q_write_scale<Q>(sinv, bi, bj, sc);
    if (!T) {
        for (i64 e = tid; e < n; e += THREADS) {
            i64 o = (i64)(fr0 + e / w) * C + fc0 + e % w;
            codes[o] = (u8)q_encode<Q::FMT>(ld(inp[o]), sc.s);
        }
        return;
    }
    const int tx = tid & 31, ty = tid >> 5;
    for (int cr = fr0; cr < fr1; cr += 32)
        for (int cc = fc0; cc < fc1; cc += 32) {
            for (int m = ty; m < 32; m += THREADS / 32) { // chunk[col][row] = code of input (cr + m, cc + tx)
                int gr = cr + m, gc = cc + tx;
                if (gr < fr1 && gc < fc1) chunk[tx][m] = (u8)q_encode<Q::FMT>(ld(inp[(i64)gr * C + gc]), sc.s);
            }
            __syncthreads();
            for (int m = ty; m < 32; m += THREADS / 32) { // output row cc + m (an input column), columns cr + tx
                int gc = cc + m, gr = cr + tx;
                if (gr < fr1 && gc < fc1) codes[(i64)gc * R + gr] = chunk[m][tx];
            }
            __syncthreads();
        }
}
