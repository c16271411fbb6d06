// scale_update.cuh: delayed scaling's per-step update (runtime/cpu/exec.c run_scale_update) for
// every scale_update step of the program in one launch (FUSE_SCALE_UPDATE).
//
// All histories, scales and amaxes live in the scales allocation; the kernel gets its base and a
// literal table of byte offsets (one entry per step, in the emitted file), so one pointer
// parameter serves hundreds of tensors. One warp per entry:
//   hist[amax_step % len] = amax;
//   on steps with amax_step % interval == 0:
//     sel = amax (most_recent) or the CPU loop `sel = 0; for i: if (!(hist[i] <= sel)) sel = hist[i]`
//     scale = compute_scale(sel, fmax(format), margin, scale)   (q_compute_scale, no pow2)
// The loop is not a plain NaN-propagating max: a NaN sets sel to NaN and the next entry replaces
// it. Its result is NaN when the last entry is NaN, else the max of 0 and the entries after the
// last NaN (equal to the loop's sel whenever it is positive and finite, the only case in which
// the scale depends on its value: zero, negative, NaN and Inf all keep the previous scale).
// Launch: ceil(N / 8) blocks of 256 threads. Must not: let two entries share a history or scale
// (the generator checks; steps in one launch must be independent), or use ws.

struct ScaleUpdateEntry {
    i64 hist, scale, amax; // byte offsets into the scales allocation
    int len, algo, margin, interval, format;
};

__device__ __forceinline__ float format_max(int format) {
    return format == FMT_E5M2 ? FmtMax<FMT_E5M2>::v : format == FMT_E2M1 ? FmtMax<FMT_E2M1>::v : FmtMax<FMT_E4M3>::v;
}

__device__ __forceinline__ int warp_max_int(int v) {
    for (int o = 16; o > 0; o >>= 1) {
        int w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

// scales: the scales allocation (bytes); table: (N) entries; rs->amax_step: this step's ring slot.
template <int N, int THREADS>
__device__ __forceinline__ void scale_update_all(u8 *scales, const ScaleUpdateEntry *table, const Fp8cRunState *rs) {
    static_assert(THREADS % 32 == 0 && N > 0, "scale_update_all: whole warps, at least one entry");
    const int w = (int)((blockIdx.x * THREADS + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (w >= N) return;
    const ScaleUpdateEntry e = table[w];
    float *hist = reinterpret_cast<float *>(scales + e.hist);   // (len)
    float *scale = reinterpret_cast<float *>(scales + e.scale); // (1)
    const float amax = *reinterpret_cast<const float *>(scales + e.amax);
    const int step = rs->amax_step, pos = step % e.len;
    if (lane == 0) hist[pos] = amax;
    if (step % e.interval) return;
    float sel = amax; // most_recent
    if (e.algo != 1) {
        // the history as the CPU loop reads it: the new amax already in slot pos
        int last_nan = -1;
        for (int i = lane; i < e.len; i += 32) {
            float h = i == pos ? amax : hist[i];
            if (isnan(h)) last_nan = i;
        }
        last_nan = warp_max_int(last_nan);
        float m = 0.0f;
        for (int i = last_nan + 1 + lane; i < e.len; i += 32) m = fmaxf(m, i == pos ? amax : hist[i]);
        m = warp_amax(m);
        sel = last_nan == e.len - 1 ? __uint_as_float(0x7fc00000u) : m;
    }
    if (lane == 0) *scale = compute_scale(sel, format_max(e.format), e.margin, *scale);
}
