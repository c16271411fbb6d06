// gemm.cuh: the generated FP8 GEMM for qgemm steps that cuBLASLt does not run (`--gemm generated`).
//
//   out (P,Q) (+)= dequant(a) (P,R) x dequant(b)^T (Q,R) (+ bias (Q))
//
// Both operands are FP8 codes, row-major with the contraction R contiguous (the "TN" layout of
// shared/notes/cuda-apis.md 1.2), each with float scale inverses in one of the four layouts of
// runtime/quant.h (per tensor, VEC 1xT, BLK TxT, ROWS). The products run on the tensor cores
// with mma.sync.m16n8k32 (sm_89 and later; every E4M3/E5M2 pair, E5M2 x E5M2 included), fragments
// read with ldmatrix from a swizzled shared-memory tile. K advances in stages of BK = 128; two
// stages alternate, cp.async filling one while the tensor cores read the other.
//
// Promotion (DeepSeek-V3 section 3.3.2, notes 5.3): each 128-wide K block is accumulated on the
// tensor cores into a zeroed temporary, then added on the CUDA cores into the FP32 accumulator as
// acc += tmp * (sa * sb) with the block's scales of the row and the column. When no scale varies
// along K (per tensor, per row), tmp is added unscaled and the scales are applied once at the end.
//
// Launch: grid (ceil(Q/BN), ceil(P/BM)), block WM*WN*32 threads, dynamic shared memory
// 2 * (BM + BN) * 128 bytes (48 KiB for 128 x 64, under the default limit: no opt-in needed).
// Each warp owns a (BM/WM) x (BN/WN) tile; cg_gemm.c uses 32 x 32 warp tiles, 128 x 64 blocks
// (8 warps) or 64 x 64 (4 warps) for small GEMMs.
//
// Numerics against runtime/cpu (q_dequantize then an FP32 GEMM): every FP8 product is exact; the
// GPU sums in a different order, inside the tensor core with its own alignment of the 32 products
// of one mma (about 14 bits kept on some parts, notes 5.3), and multiplies by sa*sb once per K block
// instead of each operand once per element. Expect |gpu - cpu| <= 2^-10 * sum_k |a_k b_k| (the
// dequantized products' absolute sum) before the output's own rounding (1 ulp of bf16 when out is
// bf16). Not bit-exact, by design of the tensor cores.
//
// Must not: read past the operands (edges are zero-filled by cp.async's src-size 0), or support
// what the static_asserts refuse: dimensions that are not multiples of 16, K tiles that are not
// multiples of 128 (unless the scale does not vary along K), E2M1.

// Blocks per SM that the entry's __launch_bounds__ asks for. sm_89 runs the FP8 mma natively and
// fits a 32 x 32 warp tile in 128 registers, so two 256-thread blocks share an SM; on sm_90 the
// instruction is emulated through FP16 (notes 5.1), needs about 180 registers, and 128 would spill.
#if __CUDA_ARCH__ == 890
#define GEMM_MIN_BLOCKS 2
#else
#define GEMM_MIN_BLOCKS 1
#endif

// ---- stores of two adjacent outputs (an even column and the next) -----------------------------

__device__ __forceinline__ void gemm_st2(float *p, float a, float b) { *(float2 *)p = make_float2(a, b); }
__device__ __forceinline__ void gemm_st2(bf16 *p, float a, float b) { *(u32 *)p = pack_bf16x2(a, b); } // a -> lower address
__device__ __forceinline__ void gemm_st2(f16 *p, float a, float b) { *(u32 *)p = pack_f16x2(a, b); }

// ---- scales ----------------------------------------------------------------------------------

// The scale inverse of element (i, k) of a ROWS x COLS operand quantized in TR x TC tiles, in
// runtime/quant.c's layouts (make_tiling / scale_index): TR, TC <= 0 mean the whole dimension.
template <int TR, int TC, int ROWS, int COLS> __device__ __forceinline__ float gemm_scale_at(const float *si, int i, int k) {
    constexpr int tr = TR > 0 ? TR : ROWS, tc = TC > 0 ? TC : COLS;
    constexpr int L = (COLS + tc - 1) / tc;
    if constexpr (TR <= 0 && TC <= 0) return si[0];                               // per tensor
    else if constexpr (TR == 1) return si[i + (k / tc) * ROWS];                     // VEC 1 x T
    else if constexpr (TR > 1 && TR == TC) return si[k / tc + (i / tr) * ((L + 3) / 4 * 4)]; // BLK T x T
    else return si[(i / tr) * L + k / tc];                                          // ROWS
}

// Does the scale change along the contraction (more than one tile across COLS)?
template <int TC, int COLS> struct GemmKVaries { static constexpr bool v = TC > 0 && TC < COLS; };

// ---- the kernel body -------------------------------------------------------------------------

// One BK = 128 deep stage: A (BM rows) then B (BN rows), 128 bytes a row, the 16-byte chunk c of
// row r stored at chunk c ^ (r % 8) so that ldmatrix's 8 rows of one chunk hit 8 distinct banks.
template <int ROWS, int LIMIT, int R, int THREADS>
__device__ __forceinline__ void gemm_load_tile(u8 *s, const u8 *g, int row0, int k0) {
    static_assert((ROWS * 8) % THREADS == 0, "gemm: tile chunks must divide evenly over the threads");
#pragma unroll
    for (int it = 0; it < ROWS * 8 / THREADS; it++) {
        int c = it * THREADS + (int)threadIdx.x;
        int row = c >> 3, ch = c & 7;
        int gr = row0 + row, gk = k0 + ch * 16;
        bool ok = gr < LIMIT && gk < R; // R % 16 == 0: a chunk is all in or all out
        const u8 *src = ok ? g + (i64)gr * R + gk : g;
        cp_async16_zfill(s + row * 128 + ((ch ^ (row & 7)) << 4), src, ok);
    }
}

// out  (P,Q)  f32/bf16/f16, written (ACC == 0) or accumulated into (ACC == 1)
// a    (P,R)  FP8 codes in format AF, scale inverses a_si in tiles A_TR x A_TC
// b    (Q,R)  FP8 codes in format BF, scale inverses b_si in tiles B_TR x B_TC
// bias (Q)    or nullptr (HAS_BIAS == 0)
template <typename TO, typename TB, int AF, int BF, int P, int Q, int R, int ACC, int HAS_BIAS, int A_TR, int A_TC, int B_TR,
          int B_TC, int BM, int BN, int WM, int WN>
__device__ __forceinline__ void qgemm(TO *out, const u8 *a, const float *a_si, const u8 *b, const float *b_si, const TB *bias) {
    constexpr int BK = 128, THREADS = WM * WN * 32;
    constexpr int WTM = BM / WM, WTN = BN / WN, MT = WTM / 16, NT = WTN / 8;
    constexpr int A_BYTES = BM * BK, STAGE_BYTES = (BM + BN) * BK, NKB = (R + BK - 1) / BK;
    constexpr bool KSCALED = GemmKVaries<A_TC, R>::v || GemmKVaries<B_TC, R>::v;
    static_assert(P % 16 == 0 && Q % 16 == 0 && R % 16 == 0, "gemm: P, Q and R must be multiples of 16");
    static_assert(WTM % 16 == 0 && WTN % 16 == 0, "gemm: a warp tile is a multiple of 16 x 16");
    static_assert(!GemmKVaries<A_TC, R>::v || A_TC % BK == 0, "gemm: a's K tile must be a multiple of 128 (one scale per K block)");
    static_assert(!GemmKVaries<B_TC, R>::v || B_TC % BK == 0, "gemm: b's K tile must be a multiple of 128 (one scale per K block)");
    static_assert(ACC == 0 || ACC == 1, "gemm: ACC is 0 or 1");

    DYNAMIC_SMEM(u8, gemm_smem, 128);
    check_dynamic_smem(2 * STAGE_BYTES);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, t = lane & 3;      // fragment row group, thread in group
    const int wm = warp / WN, wn = warp % WN;
    const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
    const int wr0 = wm * WTM, wc0 = wn * WTN;   // the warp's tile inside the block tile

    float acc[MT][NT][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int j = 0; j < NT; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;

    gemm_load_tile<BM, P, R, THREADS>(gemm_smem, a, m0, 0);
    gemm_load_tile<BN, Q, R, THREADS>(gemm_smem + A_BYTES, b, n0, 0);
    cp_async_commit();

    for (int kb = 0; kb < NKB; kb++) {
        if (kb + 1 < NKB) { // the next stage streams in while this one multiplies
            u8 *s = gemm_smem + ((kb + 1) & 1) * STAGE_BYTES;
            gemm_load_tile<BM, P, R, THREADS>(s, a, m0, (kb + 1) * BK);
            gemm_load_tile<BN, Q, R, THREADS>(s + A_BYTES, b, n0, (kb + 1) * BK);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();

        float tmp[MT][NT][4];
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) tmp[i][j][e] = 0.0f;

        const u8 *sA = gemm_smem + (kb & 1) * STAGE_BYTES, *sB = sA + A_BYTES;
#pragma unroll
        for (int ks = 0; ks < BK / 32; ks++) {
            u32 af[MT][4], bfr[NT][2];
            // A: matrices (rows 0-7, k 0-15), (rows 8-15, k 0-15), (rows 0-7, k 16-31), (rows 8-15, k 16-31)
#pragma unroll
            for (int i = 0; i < MT; i++) {
                int row = wr0 + i * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, ch = ks * 2 + (lane >> 4);
                ldsm_x4(af[i], sA + row * 128 + ((ch ^ (row & 7)) << 4));
            }
            // B: matrices (n 0-7, k 0-15), (n 0-7, k 16-31), (n 8-15, k 0-15), (n 8-15, k 16-31)
#pragma unroll
            for (int j = 0; j < NT / 2; j++) {
                int row = wc0 + j * 16 + (lane & 7) + (lane >> 4) * 8, ch = ks * 2 + ((lane >> 3) & 1);
                u32 r[4];
                ldsm_x4(r, sB + row * 128 + ((ch ^ (row & 7)) << 4));
                bfr[2 * j][0] = r[0], bfr[2 * j][1] = r[1], bfr[2 * j + 1][0] = r[2], bfr[2 * j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int j = 0; j < NT; j++) mma_m16n8k32_fp8<AF, BF>(tmp[i][j], af[i], bfr[j][0], bfr[j][1]);
        }
        __syncthreads(); // every warp is done with this stage before the next iteration refills it

        // this K block's scales of the thread's rows and columns (loaded after the MMAs: live
        // only through the promotion, so that they do not compete with the fragments)
        float sa[MT][2], sb[NT][2];
        if constexpr (KSCALED) {
#pragma unroll
            for (int i = 0; i < MT; i++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int row = m0 + wr0 + i * 16 + g + 8 * h;
                    sa[i][h] = row < P ? gemm_scale_at<A_TR, A_TC, P, R>(a_si, row, kb * BK) : 0.0f;
                }
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    int col = n0 + wc0 + j * 8 + 2 * t + h;
                    sb[j][h] = col < Q ? gemm_scale_at<B_TR, B_TC, Q, R>(b_si, col, kb * BK) : 0.0f;
                }
        }

        // promotion: FP32 on the CUDA cores, scaled per K block when a scale varies along K
#pragma unroll
        for (int i = 0; i < MT; i++)
#pragma unroll
            for (int j = 0; j < NT; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) {
                    if constexpr (KSCALED) acc[i][j][e] += tmp[i][j][e] * (sa[i][e >> 1] * sb[j][e & 1]);
                    else acc[i][j][e] += tmp[i][j][e];
                }
    }

    // epilogue: per-tensor / per-row scales, accumulate, bias, round to the output type
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            int row = m0 + wr0 + i * 16 + g + 8 * h;
            if (row >= P) continue;
            float rs = 1.0f;
            if constexpr (!KSCALED) rs = gemm_scale_at<A_TR, A_TC, P, R>(a_si, row, 0);
#pragma unroll
            for (int j = 0; j < NT; j++) {
                int col = n0 + wc0 + j * 8 + 2 * t;
                if (col >= Q) continue; // Q is even: col + 1 < Q too
                float v0 = acc[i][j][2 * h], v1 = acc[i][j][2 * h + 1];
                if constexpr (!KSCALED) {
                    v0 *= rs * gemm_scale_at<B_TR, B_TC, Q, R>(b_si, col, 0);
                    v1 *= rs * gemm_scale_at<B_TR, B_TC, Q, R>(b_si, col + 1, 0);
                }
                TO *o = out + (i64)row * Q + col;
                if constexpr (ACC) v0 = ld(o[0]) + v0, v1 = ld(o[1]) + v1;
                if constexpr (HAS_BIAS) v0 += ld(bias[col]), v1 += ld(bias[col + 1]);
                gemm_st2(o, v0, v1);
            }
        }
}
