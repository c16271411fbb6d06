/* yaml.c: YAML text -> a small tree of YamlNode with source marks, via libyaml's event parser.
 *
 * libyaml's document loader is avoided on purpose: it lets an alias refer to a node that is
 * still being built (a cycle) and keeps no limit on depth. Building the tree from events keeps
 * both under control: an alias may only name a finished anchor, depth is capped, duplicate
 * keys and non-scalar keys are errors. Nothing here knows what a model or a policy is. */
#include "fp8c.h"
#include "io.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define MAX_ITEMS 10000 /* per mapping: keeps the duplicate-key check cheap */
/* per sequence: a plan's tensor list and program grow with the model (a 1000-layer plan has
 * 70,000 tensors); the file size limit bounds the rest */
#define MAX_SEQ_ITEMS (1 << 24)

typedef struct {
    YamlNode *node;
    YamlNode **items;
    int n, cap;
    const char *anchor;
} Frame;

typedef struct {
    const char *name;
    YamlNode *node;
} Anchor;

typedef struct {
    Arena *a;
    Diag *d;
    int file;
    Frame stack[YAML_MAX_DEPTH + 1];
    int depth;
    Anchor *anchors;
    int nanchors, capanchors;
    YamlNode *root;
} Builder;

static Mark mark_of(int file, yaml_mark_t m) {
    return (Mark){file, (int)m.line + 1, (int)m.column + 1};
}

/* libyaml reader errors carry a byte offset only; turn it into line and column. */
static Mark mark_of_offset(int file, const char *text, size_t len, size_t off) {
    Mark m = {file, 1, 1};
    for (size_t i = 0; i < off && i < len; i++) {
        if (text[i] == '\n') {
            m.line++;
            m.col = 1;
        } else {
            m.col++;
        }
    }
    return m;
}

static void free_frames(Builder *b) {
    for (int i = 0; i < b->depth; i++) free(b->stack[i].items);
    b->depth = 0;
    free(b->anchors);
    b->anchors = NULL;
}

static int push_item(Builder *b, Frame *f, YamlNode *item) {
    int is_map = f->node->kind == YN_MAP;
    if (f->n >= (is_map ? 2 * MAX_ITEMS : MAX_SEQ_ITEMS)) {
        diag_error(b->d, item->mark, NULL, "more than %d entries in one %s", is_map ? MAX_ITEMS : MAX_SEQ_ITEMS,
                   is_map ? "mapping" : "sequence");
        return -1;
    }
    if (f->n == f->cap) {
        f->cap = f->cap ? 2 * f->cap : 8;
        f->items = xrealloc(f->items, (size_t)f->cap * sizeof *f->items);
    }
    f->items[f->n++] = item;
    return 0;
}

/* Attach a finished node to its parent (or make it the root), checking map keys. */
static int attach(Builder *b, YamlNode *node) {
    if (b->depth == 0) {
        b->root = node;
        return 0;
    }
    Frame *f = &b->stack[b->depth - 1];
    if (f->node->kind == YN_MAP && f->n % 2 == 0) {
        if (node->kind != YN_SCALAR) {
            diag_error(b->d, node->mark, "write keys as plain names", "a mapping key must be a scalar, not a %s",
                       yml_kind_name(node));
            return -1;
        }
        for (int i = 0; i < f->n; i += 2) {
            if (strcmp(f->items[i]->str, node->str) == 0) {
                char prev[512];
                diag_error(b->d, node->mark, NULL, "duplicate key '%s' (first given at %s)", node->str,
                           diag_loc(b->d, f->items[i]->mark, 1, prev, sizeof prev));
                return -1;
            }
        }
    }
    return push_item(b, f, node);
}

static void register_anchor(Builder *b, const char *name, YamlNode *node) {
    if (!name) return;
    if (b->nanchors == b->capanchors) {
        b->capanchors = b->capanchors ? 2 * b->capanchors : 8;
        b->anchors = xrealloc(b->anchors, (size_t)b->capanchors * sizeof *b->anchors);
    }
    b->anchors[b->nanchors++] = (Anchor){name, node};
}

static YamlNode *find_anchor(Builder *b, const char *name) {
    for (int i = b->nanchors - 1; i >= 0; i--)
        if (strcmp(b->anchors[i].name, name) == 0) return b->anchors[i].node;
    return NULL;
}

static int open_node(Builder *b, YamlKind kind, yaml_mark_t m, const yaml_char_t *anchor,
                     const yaml_char_t *tag, int implicit) {
    Mark mk = mark_of(b->file, m);
    if (tag && !implicit) {
        diag_error(b->d, mk, "remove the tag; fp8c infers types from the schema",
                   "YAML tags ('%s') are not supported", (const char *)tag);
        return -1;
    }
    if (b->depth >= YAML_MAX_DEPTH) {
        diag_error(b->d, mk, NULL, "nesting deeper than %d levels", YAML_MAX_DEPTH);
        return -1;
    }
    YamlNode *n = arena_alloc(b->a, sizeof *n);
    n->kind = kind;
    n->mark = mk;
    b->stack[b->depth++] = (Frame){n, NULL, 0, 0, anchor ? arena_strdup(b->a, (const char *)anchor) : NULL};
    return 0;
}

static int close_node(Builder *b, yaml_mark_t end) {
    Frame f = b->stack[--b->depth];
    YamlNode *n = f.node;
    if (n->kind == YN_MAP && f.n % 2) {
        diag_error(b->d, mark_of(b->file, end), NULL, "mapping key without a value");
        free(f.items);
        return -1;
    }
    n->n = n->kind == YN_MAP ? f.n / 2 : f.n;
    n->items = arena_alloc(b->a, (size_t)(f.n ? f.n : 1) * sizeof *n->items);
    if (f.n) memcpy(n->items, f.items, (size_t)f.n * sizeof *n->items);
    free(f.items);
    register_anchor(b, f.anchor, n);
    return attach(b, n);
}

static int on_event(Builder *b, yaml_event_t *ev, int *docs) {
    switch (ev->type) {
    case YAML_DOCUMENT_START_EVENT:
        if (++*docs > 1) {
            diag_error(b->d, mark_of(b->file, ev->start_mark), "keep one document per file",
                       "more than one YAML document in the file");
            return -1;
        }
        return 0;
    case YAML_MAPPING_START_EVENT:
        return open_node(b, YN_MAP, ev->start_mark, ev->data.mapping_start.anchor,
                         ev->data.mapping_start.tag, ev->data.mapping_start.implicit);
    case YAML_SEQUENCE_START_EVENT:
        return open_node(b, YN_SEQ, ev->start_mark, ev->data.sequence_start.anchor,
                         ev->data.sequence_start.tag, ev->data.sequence_start.implicit);
    case YAML_MAPPING_END_EVENT:
    case YAML_SEQUENCE_END_EVENT:
        return close_node(b, ev->start_mark);
    case YAML_SCALAR_EVENT: {
        Mark mk = mark_of(b->file, ev->start_mark);
        if (ev->data.scalar.tag && !ev->data.scalar.plain_implicit && !ev->data.scalar.quoted_implicit) {
            diag_error(b->d, mk, "remove the tag; fp8c infers types from the schema",
                       "YAML tags ('%s') are not supported", (const char *)ev->data.scalar.tag);
            return -1;
        }
        YamlNode *n = arena_alloc(b->a, sizeof *n);
        n->kind = YN_SCALAR;
        n->mark = mk;
        n->str = arena_strndup(b->a, (const char *)ev->data.scalar.value, ev->data.scalar.length);
        if (strlen(n->str) != ev->data.scalar.length) {
            diag_error(b->d, mk, NULL, "NUL character inside a scalar");
            return -1;
        }
        n->quoted = ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
        if (ev->data.scalar.anchor)
            register_anchor(b, arena_strdup(b->a, (const char *)ev->data.scalar.anchor), n);
        return attach(b, n);
    }
    case YAML_ALIAS_EVENT: {
        Mark mk = mark_of(b->file, ev->start_mark);
        YamlNode *n = find_anchor(b, (const char *)ev->data.alias.anchor);
        if (!n) {
            diag_error(b->d, mk, "an alias must name an anchor defined, and finished, before it",
                       "unknown anchor '*%s'", (const char *)ev->data.alias.anchor);
            return -1;
        }
        return attach(b, n);
    }
    default:
        return 0;
    }
}

YamlNode *yml_parse(Arena *a, Diag *d, int file, const char *text, size_t len) {
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser)) {
        diag_plain(d, "cannot initialize the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    Builder b = {.a = a, .d = d, .file = file};
    int docs = 0, ok = 1;
    for (;;) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&parser, &ev)) {
            Mark mk = parser.error == YAML_READER_ERROR
                          ? mark_of_offset(file, text, len, parser.problem_offset)
                          : mark_of(file, parser.problem_mark);
            if (parser.context) {
                Mark ctx = mark_of(file, parser.context_mark);
                diag_error(d, mk, NULL, "invalid YAML: %s %s", parser.problem ? parser.problem : "error",
                           parser.context);
                const char *what = strstr(parser.context, " a ");
                if (what && (ctx.line != mk.line || ctx.col != mk.col))
                    diag_note(d, ctx, "the %s started here", what + 3);
            } else {
                diag_error(d, mk, NULL, "invalid YAML: %s", parser.problem ? parser.problem : "error");
            }
            ok = 0;
            break;
        }
        int done = ev.type == YAML_STREAM_END_EVENT;
        int rc = on_event(&b, &ev, &docs);
        yaml_event_delete(&ev);
        if (rc) {
            ok = 0;
            break;
        }
        if (done) break;
    }
    yaml_parser_delete(&parser);
    free_frames(&b);
    if (!ok) return NULL;
    if (!b.root) {
        diag_error(d, (Mark){file, 1, 1}, NULL, "the file is empty");
        return NULL;
    }
    return b.root;
}

YamlNode *yml_load_file_max(Arena *a, Diag *d, const char *path, size_t max) {
    char *text, err[1200];
    size_t len;
    if (io_read_all(path, max, &text, &len, err, sizeof err)) {
        diag_plain(d, "%s", err);
        return NULL;
    }
    char *kept = arena_strndup(a, text, len); /* memchr-safe copy; NULs inside are caught by libyaml */
    memcpy(kept, text, len);
    free(text);
    int file = diag_add_file(d, arena_strdup(a, path), kept, len);
    return yml_parse(a, d, file, kept, len);
}

YamlNode *yml_load_file(Arena *a, Diag *d, const char *path) { return yml_load_file_max(a, d, path, YAML_MAX_BYTES); }

YamlNode *yml_get(const YamlNode *map, const char *key) {
    if (!map || map->kind != YN_MAP) return NULL;
    for (int i = 0; i < map->n; i++)
        if (strcmp(map->items[2 * i]->str, key) == 0) return map->items[2 * i + 1];
    return NULL;
}

const char *yml_kind_name(const YamlNode *n) {
    switch (n->kind) {
    case YN_SCALAR: return "scalar";
    case YN_SEQ: return "sequence";
    case YN_MAP: return "mapping";
    }
    return "?";
}

int yml_expect(Diag *d, const YamlNode *n, YamlKind kind, const char *what) {
    if (n->kind == kind) return 0;
    static const char *const article[] = {"a scalar", "a sequence", "a mapping"};
    diag_error(d, n->mark, NULL, "%s must be %s, not a %s", what, article[kind], yml_kind_name(n));
    return -1;
}

static int is_null_scalar(const YamlNode *n) {
    return !n->quoted && (!n->str[0] || !strcmp(n->str, "~") || !strcmp(n->str, "null"));
}

int yml_int(Diag *d, const YamlNode *n, int64_t lo, int64_t hi, int64_t *out) {
    if (n->kind != YN_SCALAR || n->quoted || is_null_scalar(n)) {
        diag_error(d, n->mark, NULL, "expected an integer, got %s",
                   n->kind != YN_SCALAR ? yml_kind_name(n) : n->quoted ? "a quoted string" : "nothing");
        return -1;
    }
    const char *s = n->str;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno == ERANGE) {
        double f;
        char *fend;
        f = strtod(s, &fend);
        if (fend != s && !*fend && f == floor(f) && fabs(f) < 9e15) {
            v = (long long)f; /* "1.0e3" is an integer value written as a float: accept it */
        } else {
            diag_error(d, n->mark, NULL, "expected an integer, got '%s'", s);
            return -1;
        }
    }
    if (v < lo || v > hi) {
        diag_error(d, n->mark, NULL, "%lld is out of range [%lld, %lld]", v, (long long)lo, (long long)hi);
        return -1;
    }
    *out = v;
    return 0;
}

int yml_float(Diag *d, const YamlNode *n, double lo, double hi, double *out) {
    if (n->kind != YN_SCALAR || n->quoted || is_null_scalar(n)) {
        diag_error(d, n->mark, NULL, "expected a number, got %s",
                   n->kind != YN_SCALAR ? yml_kind_name(n) : n->quoted ? "a quoted string" : "nothing");
        return -1;
    }
    char *end;
    errno = 0;
    double v = strtod(n->str, &end);
    if (end == n->str || *end || !isfinite(v) || errno == ERANGE) {
        diag_error(d, n->mark, NULL, "expected a finite number, got '%s'", n->str);
        return -1;
    }
    if (!(v >= lo && v <= hi)) {
        diag_error(d, n->mark, NULL, "%g is out of range [%g, %g]", v, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

int yml_bool(Diag *d, const YamlNode *n, int *out) {
    if (n->kind == YN_SCALAR && !n->quoted) {
        if (!strcmp(n->str, "true")) return *out = 1, 0;
        if (!strcmp(n->str, "false")) return *out = 0, 0;
    }
    diag_error(d, n->mark, "write true or false", "expected a boolean, got %s%s%s",
               n->kind == YN_SCALAR ? "'" : "a ", n->kind == YN_SCALAR ? n->str : yml_kind_name(n),
               n->kind == YN_SCALAR ? "'" : "");
    return -1;
}

int yml_str(Diag *d, const YamlNode *n, const char **out) {
    if (n->kind != YN_SCALAR || is_null_scalar(n)) {
        diag_error(d, n->mark, NULL, "expected a string, got %s",
                   n->kind == YN_SCALAR ? "nothing" : yml_kind_name(n));
        return -1;
    }
    *out = n->str;
    return 0;
}

int yml_enum(Diag *d, const YamlNode *n, const char *const *names, int nnames, int *out) {
    if (n->kind != YN_SCALAR) {
        diag_error(d, n->mark, NULL, "expected one of a fixed set of names, got a %s", yml_kind_name(n));
        return -1;
    }
    for (int i = 0; i < nnames; i++)
        if (names[i] && !strcmp(n->str, names[i])) return *out = i, 0;
    char list[512] = "";
    size_t o = 0;
    for (int i = 0; i < nnames && o < sizeof list - 32; i++)
        if (names[i]) o += (size_t)snprintf(list + o, sizeof list - o, "%s%s", o ? ", " : "", names[i]);
    const char *close = closest_word(n->str, names, nnames);
    char hint[640];
    if (close)
        snprintf(hint, sizeof hint, "did you mean '%s'? (one of: %s)", close, list);
    else
        snprintf(hint, sizeof hint, "one of: %s", list);
    diag_error(d, n->mark, hint, "unknown value '%s'", n->str);
    return -1;
}

int yml_check_keys(Diag *d, const YamlNode *map, const char *what, const char *const *keys, int nkeys) {
    int bad = 0;
    for (int i = 0; i < map->n; i++) {
        const YamlNode *k = map->items[2 * i];
        int known = 0;
        for (int j = 0; j < nkeys; j++)
            if (!strcmp(k->str, keys[j])) known = 1;
        if (known) continue;
        const char *close = closest_word(k->str, keys, nkeys);
        char hint[512];
        if (close) {
            snprintf(hint, sizeof hint, "did you mean '%s'?", close);
        } else {
            size_t o = (size_t)snprintf(hint, sizeof hint, "known keys: ");
            for (int j = 0; j < nkeys && o < sizeof hint - 32; j++)
                o += (size_t)snprintf(hint + o, sizeof hint - o, "%s%s", j ? ", " : "", keys[j]);
        }
        diag_error(d, k->mark, hint, "unknown key '%s' in %s", k->str, what);
        bad = 1;
    }
    return bad ? -1 : 0;
}
