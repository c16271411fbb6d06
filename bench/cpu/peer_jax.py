"""peer_jax.py: the same training step as fp8c's, written in JAX (jit: forward + backward +
grad clip + AdamW), and a driver that times it interleaved with fp8c in one process.

Written for bench/cpu/run.sh; not part of fp8c. It reads fp8c's model YAML (the keys the two
example families use: Llama-style tiny and GPT-2) and runs one of three policies:
  fp32         everything in FP32;
  bf16         parameters cast to BF16 for the step, activations in BF16, FP32 master weights,
               FP32 AdamW moments, FP32 loss (fp8c's policies/bf16.yaml);
  deepseek_v3  bf16 plus the block linears (attention q/k/v/o and FFN projections) as FP8 E4M3
               GEMMs with current scaling: activations and gradients per 1x128 tile along the
               contraction dimension, weights per 128x128 block, FP32 scales (fp8c's
               policies/deepseek_v3.yaml): quantize -> dequantize -> GEMM, the same emulation
               semantics as fp8c's CPU backend (a CPU has no FP8 GEMM either).

Usage (from run.sh): peer_jax.py MODEL.yaml POLICY --fp8c build/fp8c --steps N --rounds R
Prints one JSON line: {"fp8c_ms": [...], "peer_ms": [...]} with one median per round; each
round runs fp8c (a subprocess, N steps) and then the peer (N steps), so both see the same
machine load.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

FP8_MAX = 448.0  # E4M3


def read_yaml_model(path):
    """The flat scalar keys of an fp8c model file (enough for the examples; no YAML library)."""
    txt = open(path).read()
    cfg = {}
    for key in ["vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "d_ff", "activation", "norm",
                "norm_eps", "positions", "rope_theta", "max_seq_len", "bias", "micro_batch", "seq_len"]:
        m = re.search(r"^\s+%s:\s*([^\s#]+)" % key, txt, re.M)
        if m:
            cfg[key] = m.group(1)
    m = re.search(r"weight_decay:\s*([0-9.eE+-]+)", txt)
    cfg["weight_decay"] = float(m.group(1)) if m else 0.0
    out = {k: int(cfg[k]) for k in ["vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_seq_len",
                                    "micro_batch", "seq_len"]}
    out["n_kv_heads"] = int(cfg.get("n_kv_heads", out["n_heads"]))
    out["activation"] = cfg.get("activation", "gelu")
    out["norm"] = cfg.get("norm", "layernorm")
    out["eps"] = float(cfg.get("norm_eps", "1e-5"))
    out["positions"] = cfg.get("positions", "learned")
    out["rope_theta"] = float(cfg.get("rope_theta", "10000"))
    out["bias"] = cfg.get("bias", "false") == "true"
    out["weight_decay"] = cfg["weight_decay"]
    return out


# ---- FP8 fake quantization (E4M3, current scaling) -------------------------------------------

def fq_rows(x):
    """Quantize-dequantize x (..., K) per 1x128 tile along the last axis."""
    K = x.shape[-1]
    xt = x.astype(jnp.float32).reshape(x.shape[:-1] + (K // 128, 128))
    amax = jnp.max(jnp.abs(xt), axis=-1, keepdims=True)
    s = jnp.where(amax > 0, FP8_MAX / amax, 1.0)
    q = (xt * s).astype(jnp.float8_e4m3fn).astype(jnp.float32) * (1.0 / s)
    return q.reshape(x.shape)


def fq_cols(x):
    """Per 128x1 tile along the first axis of a 2-D x (the column-wise copy)."""
    return fq_rows(x.T).T


def fq_blocks(w):
    """Per 128x128 block of a 2-D w."""
    N, K = w.shape
    wt = w.astype(jnp.float32).reshape(N // 128, 128, K // 128, 128)
    amax = jnp.max(jnp.abs(wt), axis=(1, 3), keepdims=True)
    s = jnp.where(amax > 0, FP8_MAX / amax, 1.0)
    q = (wt * s).astype(jnp.float8_e4m3fn).astype(jnp.float32) * (1.0 / s)
    return q.reshape(N, K)


@jax.custom_vjp
def fp8_linear(x, w):
    """y = x @ w.T with x (M,K), w (N,K); all three GEMMs on FP8-quantized operands."""
    y = fq_rows(x) @ fq_blocks(w).T
    return y.astype(x.dtype)


def _fp8_fwd(x, w):
    return fp8_linear(x, w), (x, w)


def _fp8_bwd(res, dy):
    x, w = res
    dx = fq_rows(dy) @ fq_blocks(w)        # contracts N: dy per 1x128 along N, w per block
    dw = fq_cols(dy).T @ fq_cols(x)        # contracts M: both per 128x1 along M
    return dx.astype(x.dtype), dw.astype(w.dtype)


fp8_linear.defvjp(_fp8_fwd, _fp8_bwd)


# ---- the model --------------------------------------------------------------------------------

def init_params(cfg, key):
    C, F, V, L = cfg["d_model"], cfg["d_ff"], cfg["vocab_size"], cfg["n_layers"]
    hd = C // cfg["n_heads"]
    kvd = cfg["n_kv_heads"] * hd
    keys = iter(jax.random.split(key, 16 * L + 8))
    nrm = lambda shape: 0.02 * jax.random.normal(next(keys), shape, jnp.float32)
    p = {"wte": nrm((V, C)), "lnf_w": jnp.ones((C,))}
    if cfg["positions"] == "learned":
        p["wpe"] = nrm((cfg["max_seq_len"], C))
    if cfg["norm"] == "layernorm":
        p["lnf_b"] = jnp.zeros((C,))
    blocks = []
    for _ in range(L):
        b = {"ln1_w": jnp.ones((C,)), "ln2_w": jnp.ones((C,)),
             "q": nrm((C, C)), "k": nrm((kvd, C)), "v": nrm((kvd, C)), "o": nrm((C, C))}
        if cfg["activation"] == "swiglu":
            b.update(gate=nrm((F, C)), up=nrm((F, C)), down=nrm((C, F)))
        else:
            b.update(fc=nrm((F, C)), proj=nrm((C, F)))
        if cfg["norm"] == "layernorm":
            b.update(ln1_b=jnp.zeros((C,)), ln2_b=jnp.zeros((C,)))
        if cfg["bias"]:
            for n in list(b):
                if len(b[n].shape) == 2:
                    b[n + "_b"] = jnp.zeros((b[n].shape[0],))
        blocks.append(b)
    p["blocks"] = blocks
    return p


def forward_loss(p, tokens, targets, cfg, fp8):
    B, T = tokens.shape
    C, H, KV = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"]
    hd = C // H
    dt = p["wte"].dtype

    def norm(x, w, b):
        xf = x.astype(jnp.float32)
        if cfg["norm"] == "rmsnorm":
            y = xf * jax.lax.rsqrt(jnp.mean(xf * xf, -1, keepdims=True) + cfg["eps"]) * w
        else:
            mu = jnp.mean(xf, -1, keepdims=True)
            var = jnp.mean((xf - mu) ** 2, -1, keepdims=True)
            y = (xf - mu) * jax.lax.rsqrt(var + cfg["eps"]) * w + b
        return y.astype(dt)

    def linear(x, blk, name):
        x2 = x.reshape(-1, x.shape[-1])
        y = fp8_linear(x2, blk[name]) if fp8 else x2 @ blk[name].T
        if name + "_b" in blk:
            y = y + blk[name + "_b"]
        return y.reshape(x.shape[:-1] + (y.shape[-1],))

    def rope(x):  # (B,T,h,hd), pairs (2i, 2i+1) rotated by t * theta^(-2i/hd)
        half = hd // 2
        freq = cfg["rope_theta"] ** (-2.0 * np.arange(half) / hd)
        ang = np.arange(T)[:, None] * freq[None, :]
        cs = jnp.asarray(np.cos(ang), jnp.float32)[None, :, None, :]
        sn = jnp.asarray(np.sin(ang), jnp.float32)[None, :, None, :]
        xf = x.astype(jnp.float32).reshape(x.shape[:-1] + (half, 2))
        x0, x1 = xf[..., 0], xf[..., 1]
        return jnp.stack([x0 * cs - x1 * sn, x0 * sn + x1 * cs], -1).reshape(x.shape).astype(dt)

    x = p["wte"][tokens]
    if "wpe" in p:
        x = x + p["wpe"][:T]
    mask = jnp.tril(jnp.ones((T, T), bool))
    for blk in p["blocks"]:
        h = norm(x, blk["ln1_w"], blk.get("ln1_b"))
        q = linear(h, blk, "q").reshape(B, T, H, hd)
        k = linear(h, blk, "k").reshape(B, T, KV, hd)
        v = linear(h, blk, "v").reshape(B, T, KV, hd)
        if cfg["positions"] == "rope":
            q, k = rope(q), rope(k)
        if KV != H:
            k = jnp.repeat(k, H // KV, axis=2)
            v = jnp.repeat(v, H // KV, axis=2)
        s = jnp.einsum("bthd,bshd->bhts", q.astype(jnp.float32), k.astype(jnp.float32)) / np.sqrt(hd)
        s = jnp.where(mask, s, -jnp.inf)
        a = jnp.einsum("bhts,bshd->bthd", jax.nn.softmax(s, -1), v.astype(jnp.float32)).astype(dt)
        x = x + linear(a.reshape(B, T, C), blk, "o")
        h = norm(x, blk["ln2_w"], blk.get("ln2_b"))
        if cfg["activation"] == "swiglu":
            f = jax.nn.silu(linear(h, blk, "gate")) * linear(h, blk, "up")
            x = x + linear(f, blk, "down")
        else:
            f = jax.nn.gelu(linear(h, blk, "fc"), approximate=True)
            x = x + linear(f, blk, "proj")
    x = norm(x, p["lnf_w"], p.get("lnf_b"))
    logits = (x @ p["wte"].T).astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, -1)
    tgt = jnp.take_along_axis(logits, targets[..., None], -1)[..., 0]
    return jnp.mean(lse - tgt)


def make_step(cfg, policy):
    low = policy in ("bf16", "deepseek_v3")
    fp8 = policy == "deepseek_v3"
    lr, b1, b2, eps, wd, clip = 6e-4, 0.9, 0.95, 1e-8, cfg["weight_decay"], 1.0

    def step(master, m, v, t, tokens, targets):
        def loss_fn(mp):
            p = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), mp) if low else mp
            return forward_loss(p, tokens, targets, cfg, fp8)

        loss, g = jax.value_and_grad(loss_fn)(master)
        gn = jnp.sqrt(sum(jnp.sum(x.astype(jnp.float32) ** 2) for x in jax.tree_util.tree_leaves(g)))
        sc = jnp.minimum(1.0, clip / (gn + 1e-6))
        tf = t.astype(jnp.float32)
        bc1, bc2 = 1 - b1 ** tf, 1 - b2 ** tf

        def upd(p_, g_, m_, v_):
            g_ = g_.astype(jnp.float32) * sc
            m_ = b1 * m_ + (1 - b1) * g_
            v_ = b2 * v_ + (1 - b2) * g_ * g_
            p_ = p_ - lr * ((m_ / bc1) / (jnp.sqrt(v_ / bc2) + eps) + wd * p_)
            return p_, m_, v_

        out = jax.tree_util.tree_map(upd, master, g, m, v)
        istuple = lambda x: isinstance(x, tuple)
        newp = jax.tree_util.tree_map(lambda o: o[0], out, is_leaf=istuple)
        newm = jax.tree_util.tree_map(lambda o: o[1], out, is_leaf=istuple)
        newv = jax.tree_util.tree_map(lambda o: o[2], out, is_leaf=istuple)
        return newp, newm, newv, loss

    return jax.jit(step, donate_argnums=(0, 1, 2))


def run_fp8c(fp8c, model, policy, steps, B, T):
    """Median ms per step of steps 2..N of one fp8c run (from the log's tokens/s)."""
    with tempfile.TemporaryDirectory() as d:
        log = os.path.join(d, "log.jsonl")
        r = subprocess.run([fp8c, "train", model, "policies/%s.yaml" % policy, "--steps", str(steps),
                            "--eval-batches", "1", "--log", log, "--progress-every", "100000"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            sys.exit("fp8c failed: " + r.stderr[-500:])
        rows = [json.loads(l) for l in open(log)]
    use = rows[1:] if len(rows) > 2 else rows
    return statistics.median([1000.0 * B * T / r["tokens_per_s"] for r in use])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("policy", choices=["fp32", "bf16", "deepseek_v3"])
    ap.add_argument("--fp8c", default="build/fp8c")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer-only", action="store_true")
    a = ap.parse_args()
    cfg = read_yaml_model(a.model)
    B, T = cfg["micro_batch"], cfg["seq_len"]
    step = make_step(cfg, a.policy)
    master = init_params(cfg, jax.random.PRNGKey(1337))
    m = jax.tree_util.tree_map(jnp.zeros_like, master)
    v = jax.tree_util.tree_map(jnp.zeros_like, master)
    rng = np.random.default_rng(1337)
    tokens = jnp.asarray(rng.integers(0, cfg["vocab_size"], (B, T)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, cfg["vocab_size"], (B, T)), jnp.int32)
    t0 = time.perf_counter()
    master, m, v, loss = step(master, m, v, jnp.int32(1), tokens, targets)
    loss.block_until_ready()
    compile_s = time.perf_counter() - t0
    res = {"fp8c_ms": [], "peer_ms": [], "peer_compile_s": compile_s}
    t = 2
    for _ in range(a.rounds):
        if not a.peer_only:
            res["fp8c_ms"].append(run_fp8c(a.fp8c, a.model, a.policy, a.steps + 1, B, T))
        times = []
        for _ in range(a.steps):
            t0 = time.perf_counter()
            master, m, v, loss = step(master, m, v, jnp.int32(t), tokens, targets)
            loss.block_until_ready()
            times.append(1000.0 * (time.perf_counter() - t0))
            t += 1
        res["peer_ms"].append(statistics.median(times))
    res["peer_loss"] = float(loss)
    print(json.dumps(res))


if __name__ == "__main__":
    main()
