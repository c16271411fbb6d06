"""Shrink an example model (tests/schedule, tests/host): 2 layers, d_model 128, 2 x 64 tokens;
norm, activation, positions, biases, GQA, tied embeddings, MLA and MoE kept (small latents, 4 experts).
usage: python3 tests/schedule/shrink.py EXAMPLE/model.yaml OUT.yaml"""
import re, sys
src = open(sys.argv[1]).read()
gqa = re.search(r"^\s*n_kv_heads:", src, re.M) is not None
odd_vocab = int(re.search(r"vocab_size:\s*(\d+)", src).group(1)) % 2 == 1
sub = {"d_model": "128", "n_layers": "2", "n_heads": "4", "d_ff": "256", "max_seq_len": "64",
       "micro_batch": "2", "seq_len": "64", "steps": "3", "eval_every": "3", "warmup": "1",
       "vocab_size": "259" if odd_vocab else "256"}
if gqa:
    sub["n_kv_heads"] = "2"
# MLA and MoE (DeepSeek examples): small latents and 4 experts of 64, one dense layer first
mla = re.search(r"^\s*attention:\s*mla", src, re.M) is not None
if mla:
    q_lora = int(re.search(r"q_lora_rank:\s*(\d+)", src).group(1))
    sub.update({"q_lora_rank": "64" if q_lora else "0", "kv_lora_rank": "48", "qk_nope_head_dim": "16",
                "qk_rope_head_dim": "16", "v_head_dim": "16"})
if re.search(r"^\s*ffn:\s*moe", src, re.M):
    sub.update({"first_dense_layers": "1", "n_routed_experts": "4", "top_k": "2", "expert_d_ff": "64"})
out = []
for line in src.splitlines():
    m = re.match(r"^(\s*)(\w+):\s*([^#{\[]*?)\s*$", line)
    if m and m.group(2) in sub:
        line = "%s%s: %s" % (m.group(1), m.group(2), sub[m.group(2)])
    line = re.sub(r"warmup: \d+", "warmup: 1", line)
    out.append(line)
    if gqa and re.match(r"^\s*n_kv_heads:", line):
        out.append(re.match(r"^(\s*)", line).group(1) + "head_dim: 64  # kv width 128: blockwise tiles divide it")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
