/* analyze.c: fp8c analyze FILE|DIR...: what a released safetensors checkpoint holds, from its
 * headers alone (runtime/safetensors.c's st_read_header: the same refusal of damaged headers as
 * checkpoints get, and instant on multi-GB shards). It prints the tables of the seed "Mixed
 * Precision Strategy: Learning from DeepSeek V3.1": the precision distribution (parameters and
 * bytes per dtype), the breakdown by component and by layer, and how the low-bit weights are
 * scaled (128x128 blocks from weight_scale_inv shapes, MX E8M0 scales, per-tensor or per-row
 * scales); --json prints the same as one JSON object, and --policy OUT.yaml writes the fp8c
 * policy that reproduces the checkpoint's precision layout.
 *
 * Owns: tensor-name classification for Hugging Face Llama, GPT-2 and DeepSeek-V3 naming, and the
 * mapping of those names to fp8c module paths (DESIGN.md section 4) for the policy. Must not:
 * read tensor data, or write a partial policy (it is written to a temporary file and renamed). */
#include "fp8c.h"
#include "safetensors.h"

#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { C_EMBED, C_NORM, C_ATTN, C_FFN, C_EXPERTS, C_SHARED, C_ROUTER, C_HEAD, C_SCALE, C_OTHER, C_COUNT };
static const char *const comp_names[C_COUNT] = {"embeddings", "norms",         "attention", "ffn",   "experts",
                                                "shared experts", "router", "lm_head", "scale factors", "other"};

typedef struct {
    const char *name;   /* as in the file */
    const char *dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    int64_t numel, bytes;
    int comp, layer;    /* layer -1: outside the layers */
    int scale_of;       /* index of the weight this tensor scales, or -1 */
    int scale;          /* index of this weight's scale tensor, or -1 */
    const char *layout; /* for a low-bit weight: how it is scaled */
    int64_t block[2];
} ATensor;

typedef struct {
    Arena *a;
    ATensor *t;
    int n, cap;
    int *by_name;       /* tensor indices sorted by name (find_tensor) */
    const char **files;
    int nfiles;
} Inventory;

static int is_low_bit(const char *dt) { return !strncmp(dt, "F8_", 3) && strcmp(dt, "F8_E8M0"); }

static int ends_with(const char *s, const char *suf) {
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* The segment after "layers." / "h." / "blocks." / "layer." when it is a number, else -1. */
static int layer_of(const char *name) {
    static const char *const keys[] = {"layers.", "h.", "blocks.", "layer."};
    for (int k = 0; k < 4; k++) {
        const char *p = name;
        while ((p = strstr(p, keys[k]))) {
            if (p == name || p[-1] == '.') {
                const char *q = p + strlen(keys[k]);
                char *end;
                long v = strtol(q, &end, 10);
                if (end > q && (*end == '.' || !*end) && v >= 0 && v < 1000000) return (int)v;
            }
            p++;
        }
    }
    return -1;
}

static int has_seg(const char *name, const char *seg) {
    size_t m = strlen(seg);
    for (const char *p = name; (p = strstr(p, seg)); p++)
        if ((p == name || p[-1] == '.') && (p[m] == '.' || !p[m])) return 1;
    return 0;
}

static int classify(const char *n) {
    if (ends_with(n, "_scale_inv") || ends_with(n, "_scale") || ends_with(n, ".scale") || ends_with(n, ".scales") ||
        ends_with(n, "_scale_2"))
        return C_SCALE;
    if (strstr(n, "e_score_correction_bias") || strstr(n, "router") || strstr(n, "mlp.gate.")) return C_ROUTER;
    if (strstr(n, "lm_head") || strstr(n, "shared_head.head") || !strcmp(n, "output.weight")) return C_HEAD;
    if (strstr(n, "embed") || has_seg(n, "wte") || has_seg(n, "wpe")) return C_EMBED;
    if (strstr(n, "norm") || strstr(n, "ln_") || has_seg(n, "ln_f")) return C_NORM;
    if (strstr(n, "shared_experts") || strstr(n, "shared_expert.")) return C_SHARED;
    if (strstr(n, ".experts.")) return C_EXPERTS;
    if (strstr(n, "attn") || strstr(n, "attention")) return C_ATTN;
    if (strstr(n, "mlp") || strstr(n, "ffn") || strstr(n, "feed_forward") || strstr(n, "eh_proj")) return C_FFN;
    return C_OTHER;
}

static void add_file(Inventory *inv, const StFile *f) {
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *s = st_at(f, i);
        if (inv->n == inv->cap) {
            inv->cap = inv->cap ? 2 * inv->cap : 256;
            inv->t = xrealloc(inv->t, (size_t)inv->cap * sizeof *inv->t);
        }
        ATensor *t = &inv->t[inv->n++];
        memset(t, 0, sizeof *t);
        t->name = arena_strdup(inv->a, s->name);
        t->dtype = arena_strdup(inv->a, s->dtype);
        t->ndim = s->ndim;
        t->numel = 1;
        for (int d = 0; d < s->ndim; d++) t->shape[d] = s->shape[d], t->numel *= s->shape[d];
        t->bytes = (int64_t)s->nbytes;
        t->comp = classify(t->name);
        t->layer = layer_of(t->name);
        t->scale_of = t->scale = -1;
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

static int is_dir(const char *p) {
    struct stat st;
    return !stat(p, &st) && S_ISDIR(st.st_mode);
}

/* The shard files of a directory: those its model.safetensors.index.json's weight_map names
 * (each once, every one must exist), or else every *.safetensors in it, sorted. */
static int dir_files(Arena *a, Diag *d, const char *dir, const char ***out, int *nout) {
    char idx[4096];
    snprintf(idx, sizeof idx, "%s/model.safetensors.index.json", dir);
    int cap = 16, n = 0;
    const char **files = arena_alloc(a, (size_t)cap * sizeof *files);
    if (!access(idx, F_OK)) {
        YamlNode *root = yml_load_file(a, d, idx);
        if (!root) return EXIT_BAD_INPUT;
        const YamlNode *wm = yml_get(root, "weight_map");
        if (!wm || wm->kind != YN_MAP) {
            diag_error(d, root->mark, NULL, "a safetensors index needs a \"weight_map\" object of tensor name -> shard file");
            return EXIT_BAD_INPUT;
        }
        for (int i = 0; i < wm->n; i++) {
            const YamlNode *v = wm->items[2 * i + 1];
            const char *shard;
            if (yml_str(d, v, &shard)) return EXIT_BAD_INPUT;
            if (strchr(shard, '/') || !ends_with(shard, ".safetensors")) {
                diag_error(d, v->mark, NULL, "shard '%s' is not a .safetensors file name in the index's directory", shard);
                return EXIT_BAD_INPUT;
            }
            int seen = 0;
            for (int k = 0; k < n && !seen; k++) seen = !strcmp(strrchr(files[k], '/') + 1, shard);
            if (seen) continue;
            if (n == cap) {
                const char **g = arena_alloc(a, (size_t)cap * 2 * sizeof *g);
                memcpy(g, files, (size_t)n * sizeof *g);
                files = g, cap *= 2;
            }
            files[n] = arena_printf(a, "%s/%s", dir, shard);
            if (access(files[n], R_OK)) {
                diag_error(d, v->mark, "analyze the shards you have by naming the files",
                           "the index names shard '%s', which is missing (%s)", shard, strerror(errno));
                return EXIT_RUNTIME;
            }
            n++;
        }
    } else {
        DIR *dp = opendir(dir);
        if (!dp) {
            diag_plain(d, "%s: cannot open directory: %s", dir, strerror(errno));
            return EXIT_RUNTIME;
        }
        struct dirent *e;
        while ((e = readdir(dp))) {
            if (!ends_with(e->d_name, ".safetensors")) continue;
            if (n == cap) {
                const char **g = arena_alloc(a, (size_t)cap * 2 * sizeof *g);
                memcpy(g, files, (size_t)n * sizeof *g);
                files = g, cap *= 2;
            }
            files[n++] = arena_printf(a, "%s/%s", dir, e->d_name);
        }
        closedir(dp);
        qsort(files, (size_t)n, sizeof *files, cmp_str);
    }
    if (!n) {
        diag_plain(d, "%s: no .safetensors files (and no model.safetensors.index.json)", dir);
        return EXIT_BAD_INPUT;
    }
    *out = files, *nout = n;
    return 0;
}

static const Inventory *sort_inv; /* qsort has no context argument */
static int cmp_idx(const void *a, const void *b) {
    return strcmp(sort_inv->t[*(const int *)a].name, sort_inv->t[*(const int *)b].name);
}

/* A tensor by name (the first, if shards repeat one), or -1: a binary search of by_name. */
static int find_tensor(const Inventory *inv, const char *name) {
    int lo = 0, hi = inv->n - 1, hit = -1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(inv->t[inv->by_name[mid]].name, name);
        if (c >= 0) {
            if (!c) hit = inv->by_name[mid];
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
    }
    return hit;
}

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Pair each scale tensor with its weight ("X.weight_scale_inv" / "X.weight_scale" / "X.scales"
 * -> "X.weight") and name the low-bit weights' layouts from the two shapes. */
static void detect_scaling(Inventory *inv) {
    static const char *const sufs[] = {"_scale_inv", "_scale"};
    inv->by_name = xmalloc((size_t)(inv->n + 1) * sizeof *inv->by_name);
    for (int i = 0; i < inv->n; i++) inv->by_name[i] = i;
    sort_inv = inv;
    qsort(inv->by_name, (size_t)inv->n, sizeof *inv->by_name, cmp_idx);
    for (int i = 0; i < inv->n; i++) {
        ATensor *s = &inv->t[i];
        if (s->comp != C_SCALE) continue;
        char wname[1024];
        int w = -1;
        for (int k = 0; k < 2 && w < 0; k++)
            if (ends_with(s->name, sufs[k])) {
                snprintf(wname, sizeof wname, "%.*s", (int)(strlen(s->name) - strlen(sufs[k])), s->name);
                w = find_tensor(inv, wname);
            }
        if (w < 0 && ends_with(s->name, ".scales")) {
            snprintf(wname, sizeof wname, "%.*s.weight", (int)(strlen(s->name) - 7), s->name);
            w = find_tensor(inv, wname);
        }
        if (w < 0) continue;
        ATensor *wt = &inv->t[w];
        s->scale_of = w;
        wt->scale = i;
        /* the scale belongs to its weight's component, layer-wise (its bytes stay "scale factors") */
        s->layer = wt->layer;
        if (wt->ndim != 2) {
            wt->layout = "scaled (not a matrix)";
            continue;
        }
        int64_t N = wt->shape[0], K = wt->shape[1];
        int64_t a = s->ndim >= 1 ? s->shape[0] : 1, b = s->ndim >= 2 ? s->shape[1] : 1;
        if (!strcmp(s->dtype, "F8_E8M0") || (!strcmp(s->dtype, "U8") && a == N && b == cdiv(K, 32))) {
            wt->layout = a == N && b == cdiv(K, 32) ? "MX 1x32 (E8M0)" : "E8M0 scales (unrecognized shape)";
            wt->block[0] = 1, wt->block[1] = 32;
            continue;
        }
        if (s->ndim == 2) { /* blocks first: a [1, 1] scale of a 128 x 128 weight is one block */
            static const int64_t cand[] = {128, 256, 64, 32, 16};
            for (int x = 0; x < 5 && !wt->block[0]; x++)
                for (int y = 0; y < 5; y++)
                    if (cdiv(N, cand[x]) == a && cdiv(K, cand[y]) == b) {
                        wt->block[0] = cand[x], wt->block[1] = cand[y];
                        break;
                    }
        }
        if (wt->block[0]) {
            wt->layout = "block";
        } else if (s->numel == 1) {
            wt->layout = "per-tensor";
        } else if (a == N && b == 1) {
            wt->layout = "per-row";
        } else {
            wt->layout = "scaled (unrecognized shape)";
        }
    }
    for (int i = 0; i < inv->n; i++)
        if (is_low_bit(inv->t[i].dtype) && !inv->t[i].layout) inv->t[i].layout = "no scale tensor";
}

/* ---- naming: HF name -> fp8c module path ---- */

typedef enum { NAMING_UNKNOWN, NAMING_LLAMA, NAMING_GPT2, NAMING_DEEPSEEK } Naming;
static const char *const naming_names[] = {"unknown", "llama", "gpt2", "deepseek_v3"};

static Naming detect_naming(const Inventory *inv) {
    int llama = 0, gpt2 = 0, ds = 0;
    for (int i = 0; i < inv->n; i++) {
        const char *n = inv->t[i].name;
        if (strstr(n, "kv_a_proj_with_mqa") || strstr(n, "q_a_proj") || strstr(n, "mlp.experts.")) ds = 1;
        if (strstr(n, "attn.c_attn")) gpt2 = 1;
        if (strstr(n, "self_attn.q_proj") || strstr(n, "self_attn.o_proj")) llama = 1;
    }
    return ds ? NAMING_DEEPSEEK : gpt2 ? NAMING_GPT2 : llama ? NAMING_LLAMA : NAMING_UNKNOWN;
}

/* The fp8c module paths of a weight ("model.layers.3.self_attn.q_proj.weight" ->
 * "blocks.3.attn.q_proj"); GPT-2's fused c_attn is three. Returns how many (0: not a linear
 * fp8c has). */
static int module_paths(Arena *a, const char *name, int layer, char **out) {
    if (!ends_with(name, ".weight")) return 0;
    if (strstr(name, "lm_head")) return out[0] = "lm_head", 1;
    if (layer < 0) return 0;
    static const struct { const char *hf, *fp8c; } map[] = {
        {"self_attn.q_proj", "attn.q_proj"},       {"self_attn.k_proj", "attn.k_proj"},
        {"self_attn.v_proj", "attn.v_proj"},       {"self_attn.o_proj", "attn.o_proj"},
        {"self_attn.q_a_proj", "attn.q_a_proj"},   {"self_attn.q_b_proj", "attn.q_b_proj"},
        {"self_attn.kv_a_proj_with_mqa", "attn.kv_a_proj"}, {"self_attn.kv_b_proj", "attn.kv_b_proj"},
        {"mlp.gate_proj", "ffn.gate_proj"},        {"mlp.up_proj", "ffn.up_proj"},
        {"mlp.down_proj", "ffn.down_proj"},        {"attn.c_proj", "attn.o_proj"},
        {"mlp.c_fc", "ffn.up_proj"},               {"mlp.c_proj", "ffn.down_proj"},
    };
    char key[64];
    snprintf(key, sizeof key, ".%d.", layer);
    const char *rest = strstr(name, key);
    if (!rest) return 0;
    rest += strlen(key);
    if (!strcmp(rest, "attn.c_attn.weight")) {
        out[0] = arena_printf(a, "blocks.%d.attn.q_proj", layer);
        out[1] = arena_printf(a, "blocks.%d.attn.k_proj", layer);
        out[2] = arena_printf(a, "blocks.%d.attn.v_proj", layer);
        return 3;
    }
    int e;
    char proj[32];
    if (sscanf(rest, "mlp.experts.%d.%31[a-z_].weight", &e, proj) == 2) {
        out[0] = arena_printf(a, "blocks.%d.ffn.experts.%d.%s", layer, e, proj);
        return 1;
    }
    if (sscanf(rest, "mlp.shared_experts.%31[a-z_].weight", proj) == 1) {
        out[0] = arena_printf(a, "blocks.%d.ffn.shared.%s", layer, proj);
        return 1;
    }
    for (size_t k = 0; k < sizeof map / sizeof map[0]; k++) {
        size_t m = strlen(map[k].hf);
        if (!strncmp(rest, map[k].hf, m) && !strcmp(rest + m, ".weight")) {
            out[0] = arena_printf(a, "blocks.%d.%s", layer, map[k].fp8c);
            return 1;
        }
    }
    return 0;
}

/* "blocks.3.ffn.experts.7.up_proj" -> "blocks.*.ffn.experts.*.up_proj" */
static char *kind_of(Arena *a, const char *path) {
    char *k = arena_strdup(a, path), *o = k;
    for (const char *p = path; *p;) {
        if ((p == path || p[-1] == '.') && *p >= '0' && *p <= '9') {
            while (*p >= '0' && *p <= '9') p++;
            *o++ = '*';
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    return k;
}

/* ---- tables ---- */

typedef struct {
    const char *dtype;
    int64_t params, bytes;
} DtRow;

typedef struct {
    int64_t params, bytes, tensors;
    char dtypes[96];   /* "F8_E4M3, BF16" in first-seen order */
    int layers;        /* distinct layers holding it */
} CompRow;

static void add_dtype(char *list, size_t n, const char *dt) {
    char tmp[32];
    snprintf(tmp, sizeof tmp, "%s", dt);
    for (const char *p = list; (p = strstr(p, tmp)); p++)
        if ((p == list || p[-1] == ' ') && (p[strlen(tmp)] == ',' || !p[strlen(tmp)])) return;
    size_t len = strlen(list);
    snprintf(list + len, n - len, "%s%s", len ? ", " : "", dt);
}

typedef struct {
    Inventory inv;
    DtRow dt[32];
    int ndt;
    CompRow comp[C_COUNT];
    int64_t total_params, total_bytes;
    int max_layer;
    Naming naming;
} Analysis;

static void tabulate(Analysis *an) {
    Inventory *inv = &an->inv;
    an->max_layer = -1;
    int *seen = NULL;
    for (int i = 0; i < inv->n; i++)
        if (inv->t[i].layer > an->max_layer) an->max_layer = inv->t[i].layer;
    seen = calloc((size_t)(an->max_layer + 2) * C_COUNT, sizeof *seen);
    for (int i = 0; i < inv->n; i++) {
        ATensor *t = &inv->t[i];
        int k = 0;
        while (k < an->ndt && strcmp(an->dt[k].dtype, t->dtype)) k++;
        if (k == an->ndt && an->ndt < 32) an->dt[an->ndt++] = (DtRow){t->dtype, 0, 0};
        if (k < 32) an->dt[k].params += t->numel, an->dt[k].bytes += t->bytes;
        CompRow *c = &an->comp[t->comp];
        c->params += t->numel, c->bytes += t->bytes, c->tensors++;
        add_dtype(c->dtypes, sizeof c->dtypes, t->dtype);
        if (t->layer >= 0 && !seen[t->layer * C_COUNT + t->comp]++) c->layers++;
        an->total_params += t->numel, an->total_bytes += t->bytes;
    }
    free(seen);
    /* largest first, as the seed lists them */
    for (int i = 1; i < an->ndt; i++)
        for (int j = i; j > 0 && an->dt[j].params > an->dt[j - 1].params; j--) {
            DtRow x = an->dt[j];
            an->dt[j] = an->dt[j - 1], an->dt[j - 1] = x;
        }
}

static double share(int64_t x, int64_t total) { return total ? 100.0 * (double)x / (double)total : 0; }

static const char *fmt_params(char *out, int64_t n) {
    if (n >= 1000000000) snprintf(out, 32, "%.2fB", (double)n / 1e9);
    else if (n >= 1000000) snprintf(out, 32, "%.1fM", (double)n / 1e6);
    else if (n >= 1000) snprintf(out, 32, "%.1fK", (double)n / 1e3);
    else snprintf(out, 32, "%lld", (long long)n);
    return out;
}

/* Low-bit weights grouped by (dtype, layout, block, scale dtype): count and one example. */
typedef struct {
    const char *dtype, *layout, *scale_dtype, *example;
    int64_t block[2];
    int count;
    char wshape[48], sshape[48];
} ScaleGroup;

static void shape_str(char *out, size_t n, const ATensor *t) {
    size_t k = (size_t)snprintf(out, n, "[");
    for (int d = 0; d < t->ndim && k < n; d++) k += (size_t)snprintf(out + k, n - k, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (k < n) snprintf(out + k, n - k, "]");
}

static int scale_groups(const Inventory *inv, ScaleGroup *g, int max) {
    int n = 0;
    for (int i = 0; i < inv->n; i++) {
        const ATensor *w = &inv->t[i];
        if (!w->layout) continue;
        const ATensor *s = w->scale >= 0 ? &inv->t[w->scale] : NULL;
        const char *sdt = s ? s->dtype : "-";
        int k = 0;
        while (k < n && !(!strcmp(g[k].dtype, w->dtype) && !strcmp(g[k].layout, w->layout) && !strcmp(g[k].scale_dtype, sdt) &&
                          g[k].block[0] == w->block[0] && g[k].block[1] == w->block[1]))
            k++;
        if (k == n) {
            if (n == max) continue;
            g[n] = (ScaleGroup){.dtype = w->dtype, .layout = w->layout, .scale_dtype = sdt, .example = w->name,
                                .block = {w->block[0], w->block[1]}};
            shape_str(g[n].wshape, sizeof g[n].wshape, w);
            if (s) shape_str(g[n].sshape, sizeof g[n].sshape, s);
            else snprintf(g[n].sshape, sizeof g[n].sshape, "-");
            n++;
        }
        g[k].count++;
    }
    return n;
}

static void layout_str(char *out, size_t n, const ScaleGroup *g) {
    if (!strcmp(g->layout, "block")) snprintf(out, n, "%lldx%lld blocks", (long long)g->block[0], (long long)g->block[1]);
    else snprintf(out, n, "%s", g->layout);
}

static void print_text(FILE *o, const Analysis *an) {
    const Inventory *inv = &an->inv;
    char a[32], b[32], c[32];
    fprintf(o, "fp8c analyze: %d file%s, %d tensors, %s parameters, %s (naming: %s)\n", inv->nfiles, inv->nfiles > 1 ? "s" : "",
            inv->n, fmt_params(a, an->total_params), fmt_bytes(b, (double)an->total_bytes), naming_names[an->naming]);
    for (int i = 0; i < inv->nfiles; i++) fprintf(o, "  %s\n", inv->files[i]);
    fprintf(o, "\n## Precision distribution (%s params)\n\n| dtype | params | share | bytes | share |\n|---|---:|---:|---:|---:|\n",
            fmt_params(a, an->total_params));
    for (int i = 0; i < an->ndt; i++)
        fprintf(o, "| %s | %s | %.2f%% | %s | %.2f%% |\n", an->dt[i].dtype, fmt_params(a, an->dt[i].params),
                share(an->dt[i].params, an->total_params), fmt_bytes(b, (double)an->dt[i].bytes), share(an->dt[i].bytes, an->total_bytes));
    fprintf(o, "\n## Components\n\n| component | precision | tensors | params | size | size per layer |\n|---|---|---:|---:|---:|---:|\n");
    for (int k = 0; k < C_COUNT; k++) {
        const CompRow *r = &an->comp[k];
        if (!r->tensors) continue;
        if (r->layers) fmt_bytes(c, (double)r->bytes / r->layers);
        else snprintf(c, sizeof c, "-");
        fprintf(o, "| %s | %s | %lld | %s | %s | %s |\n", comp_names[k], r->dtypes, (long long)r->tensors, fmt_params(a, r->params),
                fmt_bytes(b, (double)r->bytes), c);
    }
    if (an->max_layer >= 0) {
        fprintf(o, "\n## Layers\n\n| layer | attention | ffn / experts | norms | scales | params | size |\n|---:|---|---|---|---:|---:|---:|\n");
        for (int l = 0; l <= an->max_layer; l++) {
            char attn[96] = "", ffn[96] = "", norm[96] = "";
            int64_t p = 0, by = 0, ns = 0;
            int any = 0;
            for (int i = 0; i < inv->n; i++) {
                const ATensor *t = &inv->t[i];
                if (t->layer != l) continue;
                any = 1;
                p += t->numel, by += t->bytes;
                if (t->comp == C_ATTN) add_dtype(attn, sizeof attn, t->dtype);
                else if (t->comp == C_FFN || t->comp == C_EXPERTS || t->comp == C_SHARED || t->comp == C_ROUTER) add_dtype(ffn, sizeof ffn, t->dtype);
                else if (t->comp == C_NORM) add_dtype(norm, sizeof norm, t->dtype);
                else if (t->comp == C_SCALE) ns++;
            }
            if (!any) continue;
            fprintf(o, "| %d | %s | %s | %s | %lld | %s | %s |\n", l, *attn ? attn : "-", *ffn ? ffn : "-", *norm ? norm : "-", (long long)ns,
                    fmt_params(a, p), fmt_bytes(b, (double)by));
        }
    }
    ScaleGroup g[32];
    int ng = scale_groups(inv, g, 32);
    if (ng) {
        fprintf(o, "\n## Low-bit weights and their scales\n\n| weights | scaling | scale dtype | count | example | weight shape | scale shape |\n|---|---|---|---:|---|---|---|\n");
        for (int k = 0; k < ng; k++) {
            char lay[64];
            layout_str(lay, sizeof lay, &g[k]);
            fprintf(o, "| %s | %s | %s | %d | %s | %s | %s |\n", g[k].dtype, lay, g[k].scale_dtype, g[k].count, g[k].example, g[k].wshape,
                    g[k].sshape);
        }
    } else {
        fprintf(o, "\nNo low-bit (FP8) weights.\n");
    }
}

static void json_s(FILE *o, const char *s) {
    fputc('"', o);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == '"' || *c == '\\') fprintf(o, "\\%c", *c);
        else if (*c < 0x20) fprintf(o, "\\u%04x", *c);
        else fputc(*c, o);
    }
    fputc('"', o);
}

static void print_json(FILE *o, const Analysis *an) {
    const Inventory *inv = &an->inv;
    fprintf(o, "{\"files\": [");
    for (int i = 0; i < inv->nfiles; i++) {
        if (i) fprintf(o, ", ");
        json_s(o, inv->files[i]);
    }
    fprintf(o, "], \"naming\": \"%s\", \"tensors\": %d, \"params\": %lld, \"bytes\": %lld,\n \"dtypes\": [", naming_names[an->naming], inv->n,
            (long long)an->total_params, (long long)an->total_bytes);
    for (int i = 0; i < an->ndt; i++)
        fprintf(o, "%s{\"dtype\": \"%s\", \"params\": %lld, \"param_share\": %.6f, \"bytes\": %lld, \"byte_share\": %.6f}", i ? ", " : "",
                an->dt[i].dtype, (long long)an->dt[i].params, share(an->dt[i].params, an->total_params) / 100, (long long)an->dt[i].bytes,
                share(an->dt[i].bytes, an->total_bytes) / 100);
    fprintf(o, "],\n \"components\": [");
    int first = 1;
    for (int k = 0; k < C_COUNT; k++) {
        const CompRow *r = &an->comp[k];
        if (!r->tensors) continue;
        fprintf(o, "%s{\"component\": \"%s\", \"dtypes\": \"%s\", \"tensors\": %lld, \"params\": %lld, \"bytes\": %lld, \"layers\": %d}",
                first ? "" : ", ", comp_names[k], r->dtypes, (long long)r->tensors, (long long)r->params, (long long)r->bytes, r->layers);
        first = 0;
    }
    fprintf(o, "],\n \"layers\": [");
    first = 1;
    for (int l = 0; l <= an->max_layer; l++) {
        int64_t p = 0, by = 0, low = 0;
        int any = 0;
        for (int i = 0; i < inv->n; i++)
            if (inv->t[i].layer == l) {
                any = 1, p += inv->t[i].numel, by += inv->t[i].bytes;
                if (is_low_bit(inv->t[i].dtype)) low += inv->t[i].numel;
            }
        if (!any) continue;
        fprintf(o, "%s{\"layer\": %d, \"params\": %lld, \"bytes\": %lld, \"low_bit_params\": %lld}", first ? "" : ", ", l, (long long)p, (long long)by,
                (long long)low);
        first = 0;
    }
    fprintf(o, "],\n \"low_bit_weights\": [");
    ScaleGroup g[32];
    int ng = scale_groups(inv, g, 32);
    for (int k = 0; k < ng; k++) {
        fprintf(o, "%s{\"dtype\": \"%s\", \"scaling\": \"%s\", \"block\": [%lld, %lld], \"scale_dtype\": \"%s\", \"count\": %d, \"example\": ",
                k ? ", " : "", g[k].dtype, g[k].layout, (long long)g[k].block[0], (long long)g[k].block[1], g[k].scale_dtype, g[k].count);
        json_s(o, g[k].example);
        fprintf(o, ", \"weight_shape\": \"%s\", \"scale_shape\": \"%s\"}", g[k].wshape, g[k].sshape);
    }
    fprintf(o, "]}\n");
}

/* ---- policy ---- */

typedef struct {
    const char *kind;
    int total, low;
} KindCount;

/* The policy that reproduces the checkpoint's layout: its non-low-bit storage dtype, and the
 * modules whose weights are FP8 with the weights' format and tiles. */
static int write_policy(Diag *d, const Analysis *an, const char *out) {
    const Inventory *inv = &an->inv;
    Arena a = {0};
    if (an->naming == NAMING_UNKNOWN) {
        diag_plain(d, "--policy: the tensor names follow none of the namings fp8c maps (Hugging Face Llama, GPT-2, DeepSeek-V3)");
        return EXIT_BAD_INPUT;
    }
    /* storage dtype: the commonest float dtype of the non-low-bit, non-scale tensors */
    int64_t f32 = 0, bf16 = 0, f16 = 0;
    for (int i = 0; i < inv->n; i++) {
        const ATensor *t = &inv->t[i];
        if (t->comp == C_SCALE) continue;
        if (!strcmp(t->dtype, "F32")) f32 += t->numel;
        else if (!strcmp(t->dtype, "BF16")) bf16 += t->numel;
        else if (!strcmp(t->dtype, "F16")) f16 += t->numel;
    }
    const char *params = bf16 >= f32 && bf16 >= f16 ? "bf16" : f16 > f32 ? "fp16" : "fp32";
    KindCount kinds[256];
    int nk = 0;
    char **low = xmalloc((size_t)(3 * inv->n + 1) * sizeof *low);
    int nlow = 0;
    const ATensor *rep = NULL; /* a low-bit weight whose format and scaling the policy takes */
    int mixed = 0;
    for (int i = 0; i < inv->n; i++) {
        const ATensor *t = &inv->t[i];
        char *paths[3];
        int np = module_paths(&a, t->name, t->layer, paths);
        for (int p = 0; p < np; p++) {
            if (!strcmp(paths[p], "lm_head")) continue;
            char *k = kind_of(&a, paths[p]);
            int j = 0;
            while (j < nk && strcmp(kinds[j].kind, k)) j++;
            if (j == nk && nk < 256) kinds[nk++] = (KindCount){k, 0, 0};
            if (j == 256) continue;
            kinds[j].total++;
            if (is_low_bit(t->dtype)) {
                kinds[j].low++;
                low[nlow++] = paths[p];
                if (!rep) rep = t;
                else if (strcmp(rep->dtype, t->dtype) || strcmp(rep->layout, t->layout) || rep->block[0] != t->block[0] || rep->block[1] != t->block[1])
                    mixed = 1;
            }
        }
    }
    if (mixed) {
        free(low);
        arena_free(&a);
        diag_plain(d, "--policy: the low-bit weights use more than one format or scaling layout; one fp8c low_bit section cannot reproduce that");
        return EXIT_BAD_INPUT;
    }
    Buf b = {0};
    buf_printf(&b, "# Written by fp8c analyze from");
    for (int i = 0; i < inv->nfiles; i++) buf_printf(&b, " %s", inv->files[i]);
    buf_printf(&b, "\n# (%s naming). It reproduces the checkpoint's precision layout: %s storage outside the\n# low-bit modules", naming_names[an->naming], params);
    if (rep) {
        char lay[64];
        ScaleGroup g = {.layout = rep->layout, .block = {rep->block[0], rep->block[1]}};
        layout_str(lay, sizeof lay, &g);
        buf_printf(&b, ", %d low-bit modules with %s weights (%s). A checkpoint stores weights only:\n"
                       "# the activation and gradient tiles below follow the weight scheme's usual companion.\n", nlow, rep->dtype, lay);
    } else {
        buf_printf(&b, " (there are none: no FP8 weights).\n");
    }
    buf_printf(&b, "name: analyzed\nrecipe: %s\nparams: %s\ncompute: bf16\nmaster_weights: fp32\noptimizer_state: fp32\nloss: fp32\n",
               !strcmp(params, "fp32") ? "fp32" : "bf16", params);
    if (rep) {
        const char *fmt = !strcmp(rep->dtype, "F8_E5M2") ? "e5m2" : "e4m3";
        buf_printf(&b, "low_bit:\n  modules:\n");
        for (int j = 0; j < nk; j++) {
            if (!kinds[j].low) continue;
            if (kinds[j].low == kinds[j].total) {
                buf_printf(&b, "    - \"%s\"\n", kinds[j].kind);
                continue;
            }
            for (int i = 0; i < nlow; i++)
                if (!strcmp(kind_of(&a, low[i]), kinds[j].kind)) buf_printf(&b, "    - \"%s\"\n", low[i]);
        }
        if (rep->block[0] == 1 && rep->block[1] == 32) {
            buf_printf(&b, "  x:  {format: %s, scaling: current, tile: [1, 32], scale_format: e8m0}\n", fmt);
            buf_printf(&b, "  w:  {format: %s, scaling: current, tile: [1, 32], scale_format: e8m0}\n", fmt);
            buf_printf(&b, "  dy: {format: %s, scaling: current, tile: [1, 32], scale_format: e8m0}\n", fmt);
        } else if (rep->block[0] > 1) {
            buf_printf(&b, "  x:  {format: %s, scaling: current, tile: [1, %lld], scale_format: fp32}\n", fmt, (long long)rep->block[1]);
            buf_printf(&b, "  w:  {format: %s, scaling: current, tile: [%lld, %lld], scale_format: fp32}\n", fmt, (long long)rep->block[0],
                       (long long)rep->block[1]);
            buf_printf(&b, "  dy: {format: %s, scaling: current, tile: [1, %lld], scale_format: fp32}\n", fmt, (long long)rep->block[0]);
        } else {
            buf_printf(&b, "  x:  {format: %s, scaling: current, tile: tensor, scale_format: fp32}\n", fmt);
            buf_printf(&b, "  w:  {format: %s, scaling: current, tile: tensor, scale_format: fp32}\n", fmt);
            buf_printf(&b, "  dy: {format: %s, scaling: current, tile: tensor, scale_format: fp32}\n", fmt);
        }
    }
    free(low);
    arena_free(&a);
    char tmp[4200];
    snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", out);
    int fd = mkstemp(tmp);
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fwrite(b.data, 1, b.len, f) == b.len;
    if (f && fclose(f)) ok = 0;
    if (!f && fd >= 0) close(fd);
    if (ok && (chmod(tmp, 0644) || rename(tmp, out))) ok = 0;
    if (!ok) {
        if (fd >= 0) unlink(tmp);
        diag_plain(d, "--policy: cannot write '%s': %s", out, strerror(errno));
    }
    buf_free(&b);
    return ok ? EXIT_OK : EXIT_RUNTIME;
}

int analyze_main(const char *const *paths, int npaths, int json, const char *policy_out) {
    Arena a = {0};
    Diag d;
    diag_init(&d, stderr);
    Analysis an = {0};
    an.inv.a = &a;
    int cap = 16, rc = EXIT_OK;
    an.inv.files = arena_alloc(&a, (size_t)cap * sizeof *an.inv.files);
    for (int i = 0; i < npaths && !rc; i++) {
        const char *const *files = &paths[i];
        const char **listed = NULL;
        int n = 1;
        if (is_dir(paths[i])) {
            if ((rc = dir_files(&a, &d, paths[i], &listed, &n))) break;
            files = listed;
        }
        for (int k = 0; k < n; k++) {
            char err[1024];
            StFile *f = st_read_header(files[k], err, sizeof err);
            if (!f) {
                fprintf(stderr, "fp8c: error: %s\n", err);
                rc = errno == ENOENT || strstr(err, "cannot open") ? EXIT_RUNTIME : EXIT_BAD_INPUT;
                break;
            }
            add_file(&an.inv, f);
            st_free(f);
            if (an.inv.nfiles == cap) {
                const char **g = arena_alloc(&a, (size_t)cap * 2 * sizeof *g);
                memcpy(g, an.inv.files, (size_t)cap * sizeof *g);
                an.inv.files = g, cap *= 2;
            }
            an.inv.files[an.inv.nfiles++] = files[k];
        }
    }
    if (!rc) {
        detect_scaling(&an.inv);
        an.naming = detect_naming(&an.inv);
        tabulate(&an);
        if (policy_out) rc = write_policy(&d, &an, policy_out);
        if (!rc) {
            if (json) print_json(stdout, &an);
            else print_text(stdout, &an);
            if (policy_out) fprintf(stderr, "fp8c: wrote %s\n", policy_out);
        }
    }
    free(an.inv.t);
    free(an.inv.by_name);
    arena_free(&a);
    return rc;
}
