/* ref_mla.h: CPU reference operators of multi-head latent attention (DeepSeek-V2/V3 MLA) and of
 * the fine-grained mixture of experts (DeepSeekMoE with shared experts). Same conventions as
 * ref.h: float tensors, row-major, outputs first, shape comments, FP32 accumulation, results
 * independent of the OpenMP thread count. Index tensors (expert ids, buffer rows) are int32.
 * MLA lives in ref_mla.c (its own attention: qk head dim != v head dim), MoE in ref_moe.c.
 *
 * Layouts (N = B*T tokens):
 *   MLA: kv_a_proj's output kva (N, L+R) = [latent c_kv (L) | shared rope key k_pe (R)];
 *   kv_b_proj's output kvb (N, H*(dn+dv)) = per head [k_nope (dn) | v (dv)]; queries q
 *   (N, H*(dn+R)) = per head [q_nope (dn) | q_pe (R)]. RoPE turns the R-wide parts by the
 *   position t exactly as ref_rope_fwd does for a head of width R (pairs (2i, 2i+1), angle
 *   t * theta^(-2i/R)); the one rope key per token is shared by every head.
 *   MoE: every token picks K distinct experts; each expert owns a capacity buffer of N rows in
 *   which its tokens sit in token order at rows pos[n,k] (rows past its load are zero), so every
 *   per-expert GEMM has static shape and 128-aligned segments, as a grouped GEMM would.
 */
#ifndef FP8C_RUNTIME_CPU_REF_MLA_H
#define FP8C_RUNTIME_CPU_REF_MLA_H

#include <stdint.h>

/* ---- MLA ---------------------------------------------------------------------------------- */

/* ckv = kva[:, :L], kpe = kva[:, L:] (overwrite). */
void ref_mla_split_fwd(float *ckv,       // (N,L)
                       float *kpe,       // (N,R)
                       const float *kva, // (N,L+R)
                       int N, int L, int R);
/* dkva = [dckv | dkpe] (overwrite). */
void ref_mla_split_bwd(float *dkva,       // (N,L+R)
                       const float *dckv, // (N,L)
                       const float *dkpe, // (N,R)
                       int N, int L, int R);
/* Per head h: qh = [q_nope, rope(q_pe)], kh = [kvb_nope_h, rope(kpe)], vh = kvb_v_h (overwrite). */
void ref_mla_rope_fwd(float *qh,        // (B,T,H*(dn+R))
                      float *kh,        // (B,T,H*(dn+R))
                      float *vh,        // (B,T,H*dv)
                      const float *q,   // (B,T,H*(dn+R))
                      const float *kvb, // (B,T,H*(dn+dv))
                      const float *kpe, // (B,T,R)
                      int B, int T, int H, int dn, int R, int dv, float theta);
/* The adjoint: dq = [dq_nope, rope^T(dq_pe)], dkvb = [dk_nope_h, dv_h], dkpe = sum_h rope^T(dk_pe_h)
 * (overwrite). */
void ref_mla_rope_bwd(float *dq,         // (B,T,H*(dn+R))
                      float *dkvb,       // (B,T,H*(dn+dv))
                      float *dkpe,       // (B,T,R)
                      const float *dqh,  // (B,T,H*(dn+R))
                      const float *dkh,  // (B,T,H*(dn+R))
                      const float *dvh,  // (B,T,H*dv)
                      int B, int T, int H, int dn, int R, int dv, float theta);
/* Causal attention with query/key head width dqk and value width dv, FP32 softmax, scale
 * 1/sqrt(dqk) (the full qk head dim, nope and rope parts together). */
void ref_mla_attention_fwd(float *out,     // (B,T,H*dv)
                           float *lse,     // (B,H,T)
                           const float *q, // (B,T,H*dqk)
                           const float *k, // (B,T,H*dqk)
                           const float *v, // (B,T,H*dv)
                           int B, int T, int H, int dqk, int dv);
/* Overwrites dq, dk, dv. */
void ref_mla_attention_bwd(float *dq,         // (B,T,H*dqk)
                           float *dk,         // (B,T,H*dqk)
                           float *dv,         // (B,T,H*dv)
                           const float *dout, // (B,T,H*dv)
                           const float *q, const float *k, const float *v,
                           const float *out,  // (B,T,H*dv)
                           const float *lse,  // (B,H,T)
                           int B, int T, int H, int dqk, int dvd);

/* ---- MoE ---------------------------------------------------------------------------------- */

enum { REF_SCORE_SOFTMAX = 0, REF_SCORE_SIGMOID = 1 };

/* Router scoring and top-k (DeepSeek-V3 section 2.1.2): scores = softmax or sigmoid of logits
 * (FP32); each token selects the K experts with the largest scores + bias (bias: the aux-loss-free
 * balancing correction, used only for selection; NULL: none), ties to the lower expert index, in
 * descending order; weights = the selected unbiased scores, divided by their sum when norm, times
 * scale. pos[n,k]: the token's row in expert sel[n,k]'s buffer (tokens in order). load[e]: tokens
 * routed to expert e (overwrite). */
void ref_moe_route_fwd(float *scores,       // (N,E)
                       int32_t *sel,        // (N,K)
                       float *weights,      // (N,K)
                       int32_t *pos,        // (N,K)
                       float *load,         // (E)
                       const float *logits, // (N,E)
                       const float *bias,   // (E) or NULL
                       int N, int E, int K, int scoring, int norm, float scale);
/* dlogits (overwrite) from the weights' gradient through normalization and scoring (the
 * selection itself is piecewise constant), plus, when aux > 0, the gradient of DeepSeek-V3's
 * sequence-wise balance loss aux * sum_e f_e P_e per sequence of T tokens, averaged over the
 * N / T sequences (f_e = E / (K T) * tokens of the sequence routed to e; P_e = mean over the
 * sequence of the scores normalized to sum 1). */
void ref_moe_route_bwd(float *dlogits,        // (N,E)
                       const float *dweights, // (N,K)
                       const float *scores,   // (N,E)
                       const int32_t *sel,    // (N,K)
                       int N, int E, int K, int scoring, int norm, float scale, int T, float aux);
/* The aux loss value that ref_moe_route_bwd differentiates (for tests and logs). */
double ref_moe_aux_loss(const float *scores, const int32_t *sel, int N, int E, int K, int T, float aux);
/* Expert `expert`'s capacity buffer: out = 0, then out[pos[n,k]] = x[n] where sel[n,k] == expert. */
void ref_moe_permute_fwd(float *out,         // (N,C)
                         const float *x,     // (N,C)
                         const int32_t *sel, // (N,K)
                         const int32_t *pos, // (N,K)
                         int N, int C, int K, int expert);
/* dx[n] += dout[pos[n,k]] where sel[n,k] == expert. */
void ref_moe_permute_bwd(float *dx,          // (N,C)
                         const float *dout,  // (N,C)
                         const int32_t *sel, // (N,K)
                         const int32_t *pos, // (N,K)
                         int N, int C, int K, int expert);
/* out[n] += weights[n,k] * y[pos[n,k]] where sel[n,k] == expert. */
void ref_moe_combine_fwd(float *out,             // (N,C)
                         const float *y,         // (N,C) the expert's buffer
                         const float *weights,   // (N,K)
                         const int32_t *sel,     // (N,K)
                         const int32_t *pos,     // (N,K)
                         int N, int C, int K, int expert);
/* dy = 0, then dy[pos[n,k]] = weights[n,k] * dout[n] (overwrite); dweights[n,k] += dout[n] .
 * y[pos[n,k]], for sel[n,k] == expert. */
void ref_moe_combine_bwd(float *dy,            // (N,C)
                         float *dweights,      // (N,K)
                         const float *dout,    // (N,C)
                         const float *y,       // (N,C)
                         const float *weights, // (N,K)
                         const int32_t *sel,   // (N,K)
                         const int32_t *pos,   // (N,K)
                         int N, int C, int K, int expert);
/* DeepSeek-V3's aux-loss-free update, outside the gradient: bias[e] += speed * sign(mean load -
 * load[e]) (an overloaded expert is made less attractive). */
void ref_moe_bias_update(float *bias, const float *load, int E, float speed); // (E) each

#endif
