/* ref.h: the CPU reference operators of the training runtime.
 *
 * Every op the plan can name has a function here whose name stem and argument
 * order match its CUDA template (DESIGN.md section 7): outputs first, then
 * inputs, then dimensions; gradients are prefixed `d`. All tensors are float,
 * row-major. GEMMs and reductions accumulate in FP32 (ref_sumsq in double);
 * narrower storage dtypes are modelled by rounding through runtime/fp8.h.
 *
 * Gradient conventions: a backward marked "+=" accumulates into its output
 * (so the executor zeroes gradient buffers once per step); one marked
 * "overwrite" replaces it. Outputs may not alias inputs unless a comment says
 * they may.
 *
 * Results do not depend on the number of OpenMP threads: every output element
 * is produced by one thread in a fixed order (ref_sumsq sums fixed chunks).
 * Implementations: GEMMs in ref_gemm.c, attention in ref_attn.c, everything
 * else in ref.c. Must not:
 * keep state between calls, print, or exit.
 */
#ifndef FP8C_RUNTIME_CPU_REF_H
#define FP8C_RUNTIME_CPU_REF_H

#include <stdint.h>
#include "quant.h"

/* Storage dtype codes of ref_round and ref_adamw. */
enum {
    REF_FP32 = 0, /* no rounding */
    REF_BF16 = 1, /* 8 exponent bits, 7 mantissa bits */
    REF_FP16 = 2, /* IEEE binary16 */
};

/* ---- GEMMs (ref_gemm.c), FP32 accumulation ------------------------------------------
 * Y = X W^T convention: inp (M,K), w (N,K), out (M,N). fprop contracts K,
 * dgrad contracts N, wgrad contracts M. */

/* The GEMMs' inner tile: 1 for the AVX-512 one (x86-64-v4 CPUs), 0 for the AVX2 (or baseline)
 * one; both give the same bits. set >= 0 selects (1 only where the CPU has AVX-512), set < 0
 * only asks; the first answer follows FP8C_CPU_ISA=avx2 if it is set. */
int ref_gemm_isa(int set);

/* out = inp @ w^T + bias (overwrite). */
void ref_matmul_fwd(float *out,        // (M,N)
                    const float *inp,  // (M,K)
                    const float *w,    // (N,K)
                    const float *bias, // (N) or NULL
                    int M, int K, int N);
/* out = dequantize(inp) @ dequantize(w)^T + bias (overwrite), for FP8 operands (the decoders of
 * quant.h, both K-contiguous): the codes are decoded while the GEMM packs them, with no
 * dequantized copy; bit-identical to q_dequantize of both followed by ref_matmul_fwd. */
void ref_qmatmul_fwd(float *out, const QDecoder *inp, const QDecoder *w, const float *bias, int M, int K, int N);
/* out += inp @ w^T with the product rounded before the add (what a separate product and add
 * give): in place when the contraction is one slice of the GEMM (K <= 256: the GEMM adds its one
 * rounded sum to out), else through scratch (M,N) and ref_accumulate. */
void ref_qmatmul_add(float *out, float *scratch, const QDecoder *inp, const QDecoder *w, int M, int K, int N);
/* dinp += dout @ w. */
void ref_matmul_bwd_data(float *dinp,       // (M,K)
                         const float *dout, // (M,N)
                         const float *w,    // (N,K)
                         int M, int K, int N);
/* out(C,R) = in(R,C)^T: a plain copy, eight by eight in registers (the quantize op's column-wise
 * copy quantizes the transpose). */
void ref_transpose(float *out, const float *in, int64_t R, int64_t C);

/* dw += dout^T @ inp; dbias += column sums of dout. */
void ref_matmul_bwd_weight(float *dw,         // (N,K)
                           float *dbias,      // (N) or NULL
                           const float *dout, // (M,N)
                           const float *inp,  // (M,K)
                           int M, int K, int N);

/* ---- embeddings ----------------------------------------------------------------------- */

/* out[b,t] = wte[tokens[b,t]] (+ wpe[t]); tokens must lie in [0, vocab). */
void ref_embed_fwd(float *out,             // (B,T,C)
                   const int32_t *tokens,  // (B,T)
                   const float *wte,       // (vocab,C)
                   const float *wpe,       // (>=T,C) or NULL: no learned positions
                   int B, int T, int C);
/* dwte[tokens[b,t]] += dout[b,t]; dwpe[t] += sum_b dout[b,t]. */
void ref_embed_bwd(float *dwte,           // (vocab,C)
                   float *dwpe,           // (>=T,C) or NULL
                   const float *dout,     // (B,T,C)
                   const int32_t *tokens, // (B,T)
                   int B, int T, int C);

/* ---- normalization ---------------------------------------------------------------------- */

/* out = inp / sqrt(mean(inp^2) + eps) * w, per row. */
void ref_rmsnorm_fwd(float *out,       // (N,C)
                     float *rstd,      // (N) saved for backward
                     const float *inp, // (N,C)
                     const float *w,   // (C)
                     int N, int C, float eps);
/* dinp +=, dw +=. */
void ref_rmsnorm_bwd(float *dinp,       // (N,C)
                     float *dw,         // (C)
                     const float *dout, // (N,C)
                     const float *inp,  // (N,C)
                     const float *w,    // (C)
                     const float *rstd, // (N)
                     int N, int C);
/* out = (inp - mean) * rstd * w + b, per row. */
void ref_layernorm_fwd(float *out,       // (N,C)
                       float *mean,      // (N) saved for backward
                       float *rstd,      // (N) saved for backward
                       const float *inp, // (N,C)
                       const float *w,   // (C)
                       const float *b,   // (C) or NULL
                       int N, int C, float eps);
/* dinp +=, dw +=, db +=. */
void ref_layernorm_bwd(float *dinp,       // (N,C)
                       float *dw,         // (C)
                       float *db,         // (C) or NULL
                       const float *dout, // (N,C)
                       const float *inp,  // (N,C)
                       const float *w,    // (C)
                       const float *mean, // (N)
                       const float *rstd, // (N)
                       int N, int C);

/* ---- rotary position embedding -----------------------------------------------------------
 * On (B,T,H,hd) laid out as (B*T, H*hd): the pair (2i, 2i+1) of every head at
 * position t is rotated by t * theta^(-2i/hd). hd must be even. */

/* out = R inp; out may equal inp. */
void ref_rope_fwd(float *out,       // (B,T,H*hd)
                  const float *inp, // (B,T,H*hd)
                  int B, int T, int H, int hd, float theta);
/* dinp = R^T dout (overwrite); dinp may equal dout. */
void ref_rope_bwd(float *dinp,       // (B,T,H*hd)
                  const float *dout, // (B,T,H*hd)
                  int B, int T, int H, int hd, float theta);

/* ---- attention ---------------------------------------------------------------------------
 * Causal grouped-query attention, FP32 softmax, scale 1/sqrt(hd). Query head
 * h reads kv head h / (H/KV); KV must divide H. lse keeps the log-sum-exp of
 * each score row so that backward recomputes the probabilities instead of
 * storing T x T of them. */

void ref_attention_fwd(float *out,     // (B,T,H*hd)
                       float *lse,     // (B,H,T)
                       const float *q, // (B,T,H*hd)
                       const float *k, // (B,T,KV*hd)
                       const float *v, // (B,T,KV*hd)
                       int B, int T, int H, int KV, int hd);
/* Overwrites dq, dk, dv. */
void ref_attention_bwd(float *dq,         // (B,T,H*hd)
                       float *dk,         // (B,T,KV*hd)
                       float *dv,         // (B,T,KV*hd)
                       const float *dout, // (B,T,H*hd)
                       const float *q,    // (B,T,H*hd)
                       const float *k,    // (B,T,KV*hd)
                       const float *v,    // (B,T,KV*hd)
                       const float *out,  // (B,T,H*hd) forward output
                       const float *lse,  // (B,H,T)
                       int B, int T, int H, int KV, int hd);

/* The general form, with separate query-key (hdk) and value (hdv) head dims and an explicit
 * softmax scale (DeepSeek MLA: hdk 192, hdv 128, scale 1/sqrt(192)); the two above are this
 * with hdk = hdv = hd and scale 1/sqrt(hd). Tiled flash-style: see ref_attn.c for the blocks
 * and the summation order. */
void ref_attention_fwd_dims(float *out,     // (B,T,H*hdv)
                            float *lse,     // (B,H,T)
                            const float *q, // (B,T,H*hdk)
                            const float *k, // (B,T,KV*hdk)
                            const float *v, // (B,T,KV*hdv)
                            int B, int T, int H, int KV, int hdk, int hdv, float scale);
/* Overwrites dq, dk, dv. */
void ref_attention_bwd_dims(float *dq,         // (B,T,H*hdk)
                            float *dk,         // (B,T,KV*hdk)
                            float *dv,         // (B,T,KV*hdv)
                            const float *dout, // (B,T,H*hdv)
                            const float *q,    // (B,T,H*hdk)
                            const float *k,    // (B,T,KV*hdk)
                            const float *v,    // (B,T,KV*hdv)
                            const float *out,  // (B,T,H*hdv) forward output
                            const float *lse,  // (B,H,T)
                            int B, int T, int H, int KV, int hdk, int hdv, float scale);

/* ---- elementwise ---------------------------------------------------------------------------
 * Backwards here overwrite their outputs. */

/* out = a * sigmoid(g) (gated attention). */
void ref_gate_fwd(float *out, const float *a, const float *g, int64_t n); // (n) each
void ref_gate_bwd(float *da, float *dg, const float *dout, const float *a, const float *g,
                  int64_t n); // (n) each
/* out = silu(gate) * up. */
void ref_swiglu_fwd(float *out, const float *gate, const float *up, int64_t n); // (n) each
void ref_swiglu_bwd(float *dgate, float *dup, const float *dout, const float *gate,
                    const float *up, int64_t n); // (n) each
/* GELU, tanh approximation (GPT-2). */
void ref_gelu_fwd(float *out, const float *inp, int64_t n);                   // (n) each
void ref_gelu_bwd(float *dinp, const float *dout, const float *inp, int64_t n); // (n) each
/* out = a + b (residual); out may alias a or b. */
void ref_add_fwd(float *out, const float *a, const float *b, int64_t n); // (n) each
/* dst += src. */
void ref_accumulate(float *dst, const float *src, int64_t n); // (n) each

/* ---- loss -----------------------------------------------------------------------------------
 * Fused softmax cross-entropy in FP32. A target < 0 is ignored (loss 0,
 * gradient 0); others must lie in [0, V). */

void ref_crossentropy_fwd(float *losses,          // (N)
                          const float *logits,    // (N,V)
                          const int32_t *targets, // (N)
                          int N, int V);
/* dlogits = (softmax - onehot(target)) * dloss, dloss being the gradient of
 * each token's loss (e.g. loss_scale / N). dlogits may alias logits. */
void ref_crossentropy_bwd(float *dlogits,         // (N,V)
                          const float *logits,    // (N,V)
                          const int32_t *targets, // (N)
                          float dloss, int N, int V);

/* ---- storage rounding and optimizer ------------------------------------------------------- */

/* Round every element to the nearest value of a storage dtype (REF_*), ties to
 * even, through fp8.h's encoders. REF_FP32 is a no-op. */
void ref_round(float *x, int64_t n, int dtype); // (n)

/* One AdamW step on n elements, t the 1-based step for bias correction.
 * g = grad * grad_scale (loss-scale unscaling and clipping folded in);
 * m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 * p -= lr * (mhat / (sqrt(vhat) + eps) + weight_decay * p)   (decoupled decay)
 * where p is master (FP32) when master != NULL, then param = round(master,
 * param_dtype); else p is param itself, rounded after the update. The update
 * uses m and v in FP32; they are stored rounded to state_dtype (REF_FP32 or
 * REF_BF16), as a GPU kernel that keeps them in registers would. */
void ref_adamw(float *param,      // (n)
               float *master,     // (n) or NULL
               float *m,          // (n)
               float *v,          // (n)
               const float *grad, // (n)
               int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay,
               int t, float grad_scale, int param_dtype, int state_dtype);

/* memset(p, 0, n) split over the OpenMP threads in 1 MiB pieces (the per-step gradient clear,
 * the CPU backend's first touch of its memory). */
void ref_zero_bytes(void *p, size_t n);
/* Sum of squares in double (global gradient norm); independent of thread count. */
double ref_sumsq(const float *x, int64_t n); // (n)
/* 1 if no element is NaN or Inf, else 0. */
int ref_all_finite(const float *x, int64_t n); // (n)

#endif
