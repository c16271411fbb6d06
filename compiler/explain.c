/* explain.c: `fp8c explain`: for each module, every field's value and the chain of layers that
 * set it, highest (deciding) first, each with its file:line:col or recipe. Read-only. */
#include "fp8c.h"

#include <stdlib.h>
#include <string.h>

/* The deciding contribution first, with the field's name; then what it overrode, highest first. */
static void print_chain(FILE *out, const Diag *d, const Resolution *r, const char *name, const Contrib *c, int n,
                        int win, int f, int global) {
    char val[64], loc[512];
    for (int pass = 0; pass < 2; pass++) {
        for (int k = n - 1; k >= 0; k--) {
            if ((k == win) != (pass == 0)) continue;
            const Contrib *x = &c[k];
            if (global)
                res_format_global((GlobalField)f, &x->v, val, sizeof val);
            else
                res_format_value(f, &x->v, val, sizeof val);
            res_contrib_loc(d, r, x, 1, loc, sizeof loc);
            const char *layer = x->layer == L_DEFAULTS && global ? "file" : layer_names[x->layer];
            fprintf(out, "  %-28s %-14s %-9s %s\n", pass == 0 ? name : "", val, layer, loc);
        }
    }
}

static void explain_module(FILE *out, const Diag *d, const Resolution *r, const ModRes *mr) {
    const Module *mod = mr->mod;
    char cnt[32], fname[32];
    fprintf(out, "%s  (%s, %s params", mod->path, model_kind_name(r->model, mod->kind), fmt_count(cnt, mod->param_count));
    for (int k = 0; k < mod->nparams; k++) {
        fprintf(out, ", %s [%lld", mod->params[k].name, (long long)mod->params[k].shape[0]);
        if (mod->params[k].shape[1]) fprintf(out, ", %lld", (long long)mod->params[k].shape[1]);
        fputc(']', out);
    }
    if (mod->tied) fprintf(out, ", tied to embed.weight");
    fprintf(out, ")%s\n", mr->low_bit ? (mr->compute == DT_FP4 ? "  [low-bit: fp4]" : "  [low-bit: fp8]") : "");
    for (int f = 0; f < NFIELDS; f++) {
        const FieldRes *fr = &mr->f[f];
        if (fr->win < 0) continue;
        field_name(f, fname, sizeof fname);
        /* The effective compute of a low-bit module is derived from its formats. */
        if (f == F_COMPUTE && mr->low_bit && fr->c[fr->win].v.i != mr->compute) {
            Contrib c[RES_MAX_CONTRIB];
            memcpy(c, fr->c, sizeof c);
            c[fr->win].v.i = mr->compute;
            print_chain(out, d, r, fname, c, fr->win + 1, fr->win, f, 0);
            continue;
        }
        print_chain(out, d, r, fname, fr->c, fr->n, fr->win, f, 0);
    }
}

int explain_print(FILE *out, Diag *d, const Resolution *r, const char *const *paths, int npaths) {
    if (!npaths) {
        fprintf(out, "run-level precision (policy %s, recipe %s)\n", r->pol->name, r->pol->recipe->name);
        LossScalingMode lsm = (LossScalingMode)res_global(r, G_LS_MODE)->i;
        for (int g = 0; g < G_COUNT; g++) {
            if (g >= G_LS_SCALE && (lsm == LS_NONE || (lsm == LS_STATIC) != (g == G_LS_SCALE))) continue;
            const GlobalRes *gr = &r->g[g];
            print_chain(out, d, r, global_names[g], gr->c, gr->n, gr->n - 1, g, 1);
        }
        fputc('\n', out);
        for (int i = 0; i < r->nmods; i++) {
            explain_module(out, d, r, &r->mods[i]);
            fputc('\n', out);
        }
        return 0;
    }
    int bad = 0;
    for (int k = 0; k < npaths; k++) {
        int hits = 0;
        for (int i = 0; i < r->nmods; i++) {
            if (!res_glob_match(paths[k], r->mods[i].mod->path)) continue;
            explain_module(out, d, r, &r->mods[i]);
            fputc('\n', out);
            hits++;
        }
        if (hits) continue;
        const char **cands = xmalloc((size_t)r->nmods * sizeof *cands);
        for (int i = 0; i < r->nmods; i++) cands[i] = r->mods[i].mod->path;
        const char *close = closest_word(paths[k], cands, r->nmods);
        free(cands);
        if (close)
            diag_plain(d, "no module '%s' in model '%s'; did you mean '%s'?", paths[k], r->model->name, close);
        else
            diag_plain(d, "no module '%s' in model '%s' (fp8c explain MODEL POLICY lists them all)", paths[k], r->model->name);
        bad = 1;
    }
    return bad ? -1 : 0;
}
