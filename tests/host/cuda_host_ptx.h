// cuda_host_ptx.h: host twins of common.cuh's PTX helpers (tests only), included by common.cuh in
// place of the inline PTX when FP8C_HOST is defined. Same names, same signatures, same results:
//   conversions through runtime/fp8.c (the CPU reference's own encoders: RNE, satfinite, NaN
//   canonicalised as CUDA does);
//   ldmatrix and mma.sync as warp collectives, fragments as the PTX ISA's tables lay them out
//   (host_rt.cpp; checked against plain matrix products by tests/host/test_host_shim.cpp);
//   cp.async held back per thread until cp.async.wait_group.
// Needs: the types and FMT_ constants common.cuh defines above its PTX helpers.

extern "C" {
#include "fp8.h"
}

__device__ __forceinline__ float f16_bits_to_f32(u16 h) { return fp8c_f16_to_f32(h); }
__device__ __forceinline__ u16 f32_to_bf16_bits(float v) { return fp8c_f32_to_bf16(v); }
__device__ __forceinline__ u16 f32_to_f16_bits(float v) { return fp8c_f32_to_f16(v); }
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) { return (u32)fp8c_f32_to_bf16(lo) | (u32)fp8c_f32_to_bf16(hi) << 16; }
__device__ __forceinline__ u32 pack_f16x2(float lo, float hi) { return (u32)fp8c_f32_to_f16(lo) | (u32)fp8c_f32_to_f16(hi) << 16; }

template <int FMT> __device__ __forceinline__ u8 fp8c_host_enc(float x) {
    return FMT == FMT_E4M3 ? fp8c_f32_to_e4m3(x, 1) : fp8c_f32_to_e5m2(x, 1);
}
template <int FMT> __device__ __forceinline__ u16 fp8x2_encode_sat(float hi, float lo) {
    static_assert(FMT == FMT_E4M3 || FMT == FMT_E5M2, "cvt.rn.satfinite: E4M3 and E5M2 only");
    return (u16)(fp8c_host_enc<FMT>(lo) | fp8c_host_enc<FMT>(hi) << 8);
}
template <int FMT> __device__ __forceinline__ u32 fp8x2_to_f16x2(u16 in) {
    static_assert(FMT == FMT_E4M3 || FMT == FMT_E5M2, "cvt.rn.f16x2: E4M3 and E5M2 only");
    float lo = FMT == FMT_E4M3 ? fp8c_e4m3_to_f32((u8)in) : fp8c_e5m2_to_f32((u8)in);
    float hi = FMT == FMT_E4M3 ? fp8c_e4m3_to_f32((u8)(in >> 8)) : fp8c_e5m2_to_f32((u8)(in >> 8));
    return (u32)fp8c_f32_to_f16(lo) | (u32)fp8c_f32_to_f16(hi) << 16;
}

// cp.async: 16 bytes read now, written to shared memory when this thread's wait covers the group.
void fp8c_host_cp_async(void *dst, const void *src, bool ok);
void fp8c_host_cp_commit();
void fp8c_host_cp_wait(int n);
__device__ __forceinline__ void cp_async16(void *dst, const void *src) { fp8c_host_cp_async(dst, src, true); }
__device__ __forceinline__ void cp_async16_zfill(void *dst, const void *src, bool ok) { fp8c_host_cp_async(dst, src, ok); }
__device__ __forceinline__ void cp_async_commit() { fp8c_host_cp_commit(); }
template <int N> __device__ __forceinline__ void cp_async_wait() { fp8c_host_cp_wait(N); }

// ldmatrix.x4 (.trans) and mma.sync: warp collectives computed by host_rt.cpp.
void fp8c_host_ldsm_x4(u32 (&r)[4], const void *p, bool trans);
// kind: 0..3 m16n8k32 with A, B = (E4M3|E5M2) as (AF, BF) = kind >> 1, kind & 1; 4 m16n8k16
// bf16; 5 m16n8k16 f16.
void fp8c_host_mma(int kind, float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1);
__device__ __forceinline__ void ldsm_x4(u32 (&r)[4], const void *p) { fp8c_host_ldsm_x4(r, p, false); }
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const void *p) { fp8c_host_ldsm_x4(r, p, true); }
template <int AF, int BF> __device__ __forceinline__ void mma_m16n8k32_fp8(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
    static_assert((AF == FMT_E4M3 || AF == FMT_E5M2) && (BF == FMT_E4M3 || BF == FMT_E5M2),
                  "mma.sync m16n8k32 multiplies E4M3 and E5M2 only (E2M1 needs sm_100a)");
    fp8c_host_mma((AF == FMT_E5M2) << 1 | (BF == FMT_E5M2), d, a, b0, b1);
}
__device__ __forceinline__ void mma_m16n8k16_bf16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) { fp8c_host_mma(4, d, a, b0, b1); }
__device__ __forceinline__ void mma_m16n8k16_f16(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) { fp8c_host_mma(5, d, a, b0, b1); }

__device__ __forceinline__ void check_dynamic_smem(u32 need) {
    if (fp8c_host_dynamic_smem_size() < need) __trap();
}
#define DYNAMIC_SMEM(T, NAME, ALIGN) T *NAME = (T *)fp8c_host_dynamic_smem()
