"""fp8c analyze: a DeepSeek-V3-layout shard (the seed's shapes, a sparse multi-GB file), a
sharded Llama checkpoint through its index, every dtype, damaged headers, and --policy.
Expected numbers are computed here from the shapes this test writes.
usage: analyze_test.py FP8C TMPDIR; one PASS/FAIL line per case."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import harness  # noqa: E402
import st  # noqa: E402

fp8c, tmp = sys.argv[1], sys.argv[2]


run = harness.runner(fp8c)


def case(name, fn):
    harness.case(name, fn, limit=None)


def cdiv(a, b):
    return -(-a // b)


# ---- 1. a DeepSeek-V3 shard: the seed's [7168, 18432] down_proj with its [56, 144] scales
H, V, FF = 7168, 129280, 18432
ds = [("model.embed_tokens.weight", "BF16", [V, H])]
for l in range(2):
    p = "model.layers.%d." % l
    ds += [(p + "input_layernorm.weight", "BF16", [H]), (p + "post_attention_layernorm.weight", "BF16", [H])]
    for name, n, k in [("q_a_proj", 1536, H), ("q_b_proj", 24576, 1536), ("kv_a_proj_with_mqa", 576, H),
                       ("kv_b_proj", 32768, 512), ("o_proj", H, 16384)]:
        ds += [(p + "self_attn.%s.weight" % name, "F8_E4M3", [n, k]),
               (p + "self_attn.%s.weight_scale_inv" % name, "F32", [cdiv(n, 128), cdiv(k, 128)])]
    ds += [(p + "self_attn.q_a_layernorm.weight", "BF16", [1536]), (p + "self_attn.kv_a_layernorm.weight", "BF16", [512])]
    for name, n, k in [("gate_proj", FF, H), ("up_proj", FF, H), ("down_proj", H, FF)]:
        ds += [(p + "mlp.%s.weight" % name, "F8_E4M3", [n, k]), (p + "mlp.%s.weight_scale_inv" % name, "F32", [cdiv(n, 128), cdiv(k, 128)])]
shard = os.path.join(tmp, "model-00001-of-000163.safetensors")
st.write(shard, [(n, d, s, None) for n, d, s in ds], sparse=True)


def deepseek_tables():
    t0 = time.time()
    rc, out, err = run("analyze", shard, "--json")
    dt = time.time() - t0
    assert rc == 0, err
    assert dt < 5, "analyze took %.1f s on a header" % dt
    j = json.loads(out)
    want = {}
    for n, d, s in ds:
        w = want.setdefault(d, [0, 0])
        w[0] += st.numel(s)
        w[1] += st.numel(s) * st.SIZES[d]
    total = sum(w[0] for w in want.values())
    got = {r["dtype"]: r for r in j["dtypes"]}
    assert set(got) == set(want), (set(got), set(want))
    for d, (p, b) in want.items():
        assert got[d]["params"] == p and got[d]["bytes"] == b, (d, got[d], p, b)
        assert abs(got[d]["param_share"] - p / total) < 1e-6
    assert j["naming"] == "deepseek_v3"
    lb = j["low_bit_weights"]
    assert len(lb) == 1 and lb[0]["dtype"] == "F8_E4M3" and lb[0]["block"] == [128, 128] and lb[0]["count"] == 16, lb
    comps = {c["component"]: c for c in j["components"]}
    assert comps["scale factors"]["dtypes"] == "F32" and comps["embeddings"]["params"] == V * H
    assert comps["ffn"]["params"] == 2 * 3 * FF * H and comps["ffn"]["dtypes"] == "F8_E4M3"
    assert [l["layer"] for l in j["layers"]] == [0, 1]
    rc, text, err = run("analyze", shard)
    assert rc == 0 and "| F8_E4M3 | 128x128 blocks | F32 | 16 |" in text, text
    # the seed's scale: down_proj [7168, 18432] -> [56, 144]
    assert [s for n, d, s in ds if n.endswith("down_proj.weight_scale_inv")][0] == [56, 144]


case("analyze_deepseek_shard_tables", deepseek_tables)


def deepseek_policy():
    pol = os.path.join(tmp, "ds.yaml")
    rc, out, err = run("analyze", shard, "--policy", pol)
    assert rc == 0, err
    text = open(pol).read()
    for want in ['"blocks.*.attn.q_a_proj"', '"blocks.*.attn.kv_a_proj"', '"blocks.*.ffn.down_proj"',
                 "w:  {format: e4m3, scaling: current, tile: [128, 128], scale_format: fp32}", "params: bf16"]:
        assert want in text, "policy lacks %s:\n%s" % (want, text)


case("analyze_deepseek_policy", deepseek_policy)

# ---- 2. a sharded Llama checkpoint with FP8 attention only in layer 1, through its index
L = {"vocab_size": 256, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2, "num_attention_heads": 4,
     "num_key_value_heads": 2, "head_dim": 64, "hidden_act": "silu", "max_position_embeddings": 64, "rms_norm_eps": 1e-5,
     "rope_theta": 10000.0, "tie_word_embeddings": False, "model_type": "llama",
     "fp8c_train": {"micro_batch": 4, "seq_len": 64, "steps": 2}}
ldir = os.path.join(tmp, "llama")
os.makedirs(ldir, exist_ok=True)
json.dump(L, open(os.path.join(ldir, "config.json"), "w"))
shards = [[("model.embed_tokens.weight", "BF16", [256, 128])], [("lm_head.weight", "BF16", [256, 128]), ("model.norm.weight", "BF16", [128])]]
for l in range(2):
    p = "model.layers.%d." % l
    t = [(p + "input_layernorm.weight", "BF16", [128]), (p + "post_attention_layernorm.weight", "BF16", [128])]
    for name, n, k in [("q_proj", 256, 128), ("k_proj", 128, 128), ("v_proj", 128, 128), ("o_proj", 128, 256)]:
        if l == 1:
            t += [(p + "self_attn.%s.weight" % name, "F8_E4M3", [n, k]), (p + "self_attn.%s.weight_scale_inv" % name, "F32", [cdiv(n, 128), cdiv(k, 128)])]
        else:
            t += [(p + "self_attn.%s.weight" % name, "BF16", [n, k])]
    t += [(p + "mlp.%s.weight" % name, "BF16", [n, k]) for name, n, k in [("gate_proj", 256, 128), ("up_proj", 256, 128), ("down_proj", 128, 256)]]
    shards[l] += t
wmap = {}
for i, s in enumerate(shards):
    fn = "model-%05d-of-%05d.safetensors" % (i + 1, len(shards))
    st.write(os.path.join(ldir, fn), [(n, d, sh, None) for n, d, sh in s])
    wmap.update({n: fn for n, d, sh in s})
json.dump({"metadata": {}, "weight_map": wmap}, open(os.path.join(ldir, "model.safetensors.index.json"), "w"))


def llama_sharded():
    rc, out, err = run("analyze", ldir, "--json")
    assert rc == 0, err
    j = json.loads(out)
    assert len(j["files"]) == 2 and j["naming"] == "llama", j["files"]
    assert j["tensors"] == sum(len(s) for s in shards)
    pol = os.path.join(tmp, "llama.yaml")
    rc, out, err = run("analyze", ldir, "--policy", pol)
    assert rc == 0, err
    text = open(pol).read()
    assert '"blocks.1.attn.q_proj"' in text and "blocks.0.attn" not in text and "ffn" not in text.split("low_bit")[1], text
    # the policy compiles against the checkpoint's own config.json, and explain shows the layout
    rc, out, err = run("explain", os.path.join(ldir, "config.json"), pol, "--target", "cpu")
    assert rc == 0, err
    rc, out, err = run("compile", os.path.join(ldir, "config.json"), pol, "--target", "cpu", "-o", os.path.join(tmp, "lplan"))
    assert rc == 0, err
    plan = json.load(open(os.path.join(tmp, "lplan", "plan.json")))
    low = sorted(m["path"] for m in plan["modules"] if m["compute"] == "fp8")
    want = sorted("blocks.1.attn.%s_proj" % x for x in "qkvo")
    assert low == want, (low, want)
    w = [m for m in plan["modules"] if m["path"] == "blocks.1.attn.q_proj"][0]
    assert "128, 128" in json.dumps(w), w


case("analyze_llama_index_and_policy_compiles", llama_sharded)


def missing_shard():
    d2 = os.path.join(tmp, "llama_missing")
    os.makedirs(d2, exist_ok=True)
    fn = "model-00001-of-00002.safetensors"
    st.write(os.path.join(d2, fn), [(n, d, sh, None) for n, d, sh in shards[0]])
    json.dump({"weight_map": {"a": fn, "b": "model-00002-of-00002.safetensors"}}, open(os.path.join(d2, "model.safetensors.index.json"), "w"))
    rc, out, err = run("analyze", d2)
    assert rc == 1 and "model-00002-of-00002.safetensors" in err and "missing" in err and out == "", (rc, err, out)


case("analyze_index_missing_shard", missing_shard)


def every_dtype():
    t = [("t_" + d, d, [2, 3], None) for d in st.SIZES] + [("mx.weight", "F8_E4M3", [64, 64], None), ("mx.weight_scale", "F8_E8M0", [64, 2], None)]
    path = os.path.join(tmp, "dtypes.safetensors")
    st.write(path, t)
    rc, out, err = run("analyze", path, "--json")
    assert rc == 0, err
    j = json.loads(out)
    got = {r["dtype"] for r in j["dtypes"]}
    assert got == set(st.SIZES), set(st.SIZES) ^ got
    mx = [g for g in j["low_bit_weights"] if g["example"] == "mx.weight"]
    assert mx and mx[0]["scaling"].startswith("MX 1x32"), j["low_bit_weights"]


case("analyze_every_dtype_and_mx_scales", every_dtype)


def damaged():
    good = os.path.join(tmp, "dtypes.safetensors")
    raw = open(good, "rb").read()
    cases = {"truncated": raw[:-1], "bad_json": raw[:8] + b"[" + raw[9:], "huge_len": b"\xff" * 8 + raw[8:],
             "short": raw[:5], "unknown_dtype": raw.replace(b'"I16"', b'"X16"')}
    for name, data in cases.items():
        p = os.path.join(tmp, "bad_%s.safetensors" % name)
        open(p, "wb").write(data)
        rc, out, err = run("analyze", p)
        assert rc == 2 and p in err and out == "", (name, rc, err)
    rc, out, err = run("analyze", os.path.join(tmp, "nope.safetensors"))
    assert rc == 1 and "cannot open" in err, (rc, err)


case("analyze_damaged_headers_refused", damaged)
