/* util.c: arena, growable buffers, "did you mean" distance and number formatting.
 * Owns no global state. Allocation failure is the one place the library exits (code 1):
 * a compiler that cannot allocate a few megabytes has nothing useful left to do. */
#include <ftw.h>
#include <sys/stat.h>
#include "fp8c.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

_Noreturn void fp8c_assert_fail(const char *cond, const char *file, int line) {
    fprintf(stderr, "fp8c: internal error: %s:%d: assertion failed: %s\n", file, line, cond);
    abort();
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "fp8c: out of memory (%zu bytes)\n", n);
        exit(EXIT_RUNTIME);
    }
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) {
        fprintf(stderr, "fp8c: out of memory (%zu bytes)\n", n);
        exit(EXIT_RUNTIME);
    }
    return q;
}

struct ArenaChunk {
    ArenaChunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *arena_alloc(Arena *a, size_t n) {
    n = (n + 15) & ~(size_t)15;
    ArenaChunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > (1u << 16) ? n : (1u << 16);
        c = xmalloc(sizeof *c + cap);
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

char *arena_strndup(Arena *a, const char *s, size_t n) {
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_strdup(Arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }

char *arena_printf(Arena *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    FP8C_ASSERT(n >= 0);
    char *p = arena_alloc(a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(p, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return p;
}

void arena_free(Arena *a) {
    ArenaChunk *c = a->head;
    while (c) {
        ArenaChunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

static void buf_reserve(Buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1) cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    FP8C_ASSERT(n >= 0);
    buf_reserve(b, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void buf_puts(Buf *b, const char *s) {
    size_t n = strlen(s);
    buf_reserve(b, n);
    memcpy(b->data + b->len, s, n + 1);
    b->len += n;
}

void buf_free(Buf *b) {
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int edit_distance(const char *a, const char *b) {
    enum { MAXL = 127 };
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAXL || lb > MAXL) return (int)(la > lb ? la : lb);
    int row[MAXL + 2];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int best = diag + (a[i - 1] != b[j - 1]);
            if (row[j] + 1 < best) best = row[j] + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

const char *closest_word(const char *word, const char *const *cands, int n) {
    const char *best = NULL;
    int bestd = 1 << 30;
    size_t wl = strlen(word);
    for (int i = 0; i < n; i++) {
        if (!cands[i]) continue; /* sparse name tables */
        /* a prefix ("deepseek" for "deepseek_v3") is as good as a typo */
        if (wl >= 3 && !strncmp(cands[i], word, wl)) return cands[i];
        int dist = edit_distance(word, cands[i]);
        if (dist < bestd) {
            bestd = dist;
            best = cands[i];
        }
    }
    /* A plausible typo: at most a third of the word changed (and at least one edit allowed). */
    int len = (int)strlen(word);
    int limit = len / 3 > 1 ? len / 3 : 1;
    if (len >= 3 && limit < 2) limit = 2;
    return best && bestd <= limit ? best : NULL;
}

const char *fmt_count(char *out, int64_t n) {
    char digits[32];
    int neg = n < 0;
    uint64_t u = neg ? (uint64_t)(-(n + 1)) + 1 : (uint64_t)n;
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)u);
    size_t len = strlen(digits), o = 0;
    if (neg) out[o++] = '-';
    for (size_t i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0) out[o++] = ',';
        out[o++] = digits[i];
    }
    out[o] = 0;
    return out;
}

const char *fmt_bytes(char *out, double bytes) {
    /* Decimal units, as the seed tables use (307 MB for 153.6M BF16 embeddings). */
    if (bytes >= 1e9)
        snprintf(out, 32, "%.2f GB", bytes / 1e9);
    else if (bytes >= 1e6)
        snprintf(out, 32, "%.1f MB", bytes / 1e6);
    else if (bytes >= 1e3)
        snprintf(out, 32, "%.1f kB", bytes / 1e3);
    else
        snprintf(out, 32, "%.0f B", bytes);
    return out;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path) ? 0 : 0; /* best effort: keep walking */
}

void fs_remove_tree(const char *dir) { nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS); }

int str_to_i64(const char *s, int64_t lo, int64_t hi, int64_t *out) {
    if (!s || !(isdigit((unsigned char)*s) || (*s == '-' && isdigit((unsigned char)s[1])))) return -1;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int str_to_f64(const char *s, double lo, double hi, double *out) {
    if (!s || !*s || isspace((unsigned char)*s)) return -1;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno == ERANGE || !isfinite(v) || !(v >= lo && v <= hi)) return -1;
    *out = v;
    return 0;
}
