/* safetensors.c: the writer and the validating reader declared in
 * safetensors.h.
 *
 * Owns: the header JSON (a writer for exactly the shape the format uses and a
 * strict parser for the same subset: objects, arrays, strings with escapes,
 * non-negative integers), the atomic write, and the layout checks.
 *
 * Must not: trust a single byte of a file it reads. The reader loads the whole
 * file, parses the header straight into the tensor table (there is no generic
 * JSON tree), and only forms pointers into the data buffer after every
 * tensor's offsets have been checked against the file size. Decoded strings go
 * into one arena of N+1 bytes: a JSON string's decoded bytes plus its NUL never
 * outnumber its encoded bytes plus its two quotes, so the arena cannot overflow.
 */
#include "safetensors.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define META_KEY "__metadata__"

struct StFile {
    unsigned char *buf;     /* the whole file, or only its header (st_read_header) */
    size_t size;            /* the file's size */
    int header_only;        /* st_read_header: tensors have no data */
    char *strings;          /* decoded names, keys and values (N+1 bytes) */
    StTensor *t;            /* (nt) in header order */
    int nt;
    const StTensor **by_name; /* (nt) sorted by name, for st_find */
    StMeta *meta;           /* (nmeta) in header order */
    int nmeta;
};

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8},
    {"I32", 4}, {"U8", 1},  {"F8_E4M3", 1}, {"F8_E5M2", 1},
    /* the rest of the format's byte-sized dtypes (fp8c analyze reads any checkpoint) */
    {"F8_E8M0", 1}, {"I8", 1}, {"I16", 2}, {"U16", 2}, {"U32", 4}, {"U64", 8}, {"BOOL", 1},
};
#define NDTYPES (int)(sizeof dtypes / sizeof dtypes[0])
#define DTYPE_LIST "F32, BF16, F16, F64, I32, I64, U8, F8_E4M3, F8_E5M2, F8_E8M0, I8, I16, U16, U32, U64, BOOL"

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The table's entry for a dtype name, or -1. */
static int dtype_index(const char *name)
{
    for (int i = 0; i < NDTYPES; i++)
        if (strcmp(dtypes[i].name, name) == 0)
            return i;
    return -1;
}

size_t st_dtype_size(const char *dtype)
{
    int i = dtype ? dtype_index(dtype) : -1;
    return i < 0 ? 0 : dtypes[i].size;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        size_t len;
        unsigned cp, min;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        if (n - i < len)
            return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += len;
    }
    return 1;
}

/* product(shape) x element size, or -1 if it overflows int64. */
static int64_t shape_bytes(const int64_t *shape, int ndim, size_t elem)
{
    int64_t n = (int64_t)elem;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return -1;
        if (shape[d] != 0 && n > INT64_MAX / shape[d])
            return -1;
        n *= shape[d];
    }
    return n;
}

/* ---- writer ------------------------------------------------------------------------ */

/* A growing byte buffer; oom sticks once set so callers check once at the end. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} Buf;

static void buf_put(Buf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static void buf_str(Buf *b, const char *s) { buf_put(b, s, strlen(s)); }

static void buf_int(Buf *b, int64_t v)
{
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
    buf_put(b, tmp, (size_t)n);
}

/* A JSON string: quotes, backslashes and control characters escaped, other
 * bytes (UTF-8, already validated) as they are -- the same bytes serde_json
 * writes. */
static void buf_json_string(Buf *b, const char *s)
{
    buf_put(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char tmp[8];
        switch (*c) {
        case '"': buf_put(b, "\\\"", 2); break;
        case '\\': buf_put(b, "\\\\", 2); break;
        case '\n': buf_put(b, "\\n", 2); break;
        case '\r': buf_put(b, "\\r", 2); break;
        case '\t': buf_put(b, "\\t", 2); break;
        case '\b': buf_put(b, "\\b", 2); break;
        case '\f': buf_put(b, "\\f", 2); break;
        default:
            if (*c < 0x20) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *c);
                buf_put(b, tmp, 6);
            } else {
                buf_put(b, (const char *)c, 1);
            }
        }
    }
    buf_put(b, "\"", 1);
}

/* Check what st_write was given; returns 0 or -1 with a message. */
static int check_write_args(const char *path, const StTensor *t, int nt, const StMeta *meta,
                            int nmeta, char *err, size_t errlen)
{
    if (nt < 0 || nmeta < 0 || (nt > 0 && !t) || (nmeta > 0 && !meta)) {
        set_err(err, errlen, "%s: bad arguments: %d tensors, %d metadata entries", path, nt,
                nmeta);
        return -1;
    }
    for (int i = 0; i < nt; i++) {
        const StTensor *x = &t[i];
        if (!x->name || !valid_utf8((const unsigned char *)x->name, strlen(x->name))) {
            set_err(err, errlen, "%s: tensor %d: name is %s", path, i,
                    x->name ? "not valid UTF-8" : "missing");
            return -1;
        }
        if (strcmp(x->name, META_KEY) == 0) {
            set_err(err, errlen, "%s: tensor %d: \"%s\" is reserved for metadata", path, i,
                    META_KEY);
            return -1;
        }
        size_t elem = st_dtype_size(x->dtype);
        if (elem == 0) {
            set_err(err, errlen, "%s: tensor \"%s\": unknown dtype \"%s\" (expected one of %s)",
                    path, x->name, x->dtype ? x->dtype : "(null)", DTYPE_LIST);
            return -1;
        }
        if (x->ndim < 0 || x->ndim > ST_MAX_DIMS) {
            set_err(err, errlen, "%s: tensor \"%s\": ndim %d is outside 0..%d", path, x->name,
                    x->ndim, ST_MAX_DIMS);
            return -1;
        }
        int64_t need = shape_bytes(x->shape, x->ndim, elem);
        if (need < 0 || (uint64_t)need != (uint64_t)x->nbytes) {
            set_err(err, errlen,
                    "%s: tensor \"%s\": nbytes is %zu, but dtype %s and its shape need %lld",
                    path, x->name, x->nbytes, x->dtype, (long long)need);
            return -1;
        }
        if (x->nbytes > 0 && !x->data) {
            set_err(err, errlen, "%s: tensor \"%s\": data is NULL", path, x->name);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(t[j].name, x->name) == 0) {
                set_err(err, errlen, "%s: tensor name \"%s\" appears twice (%d and %d)", path,
                        x->name, j, i);
                return -1;
            }
    }
    for (int i = 0; i < nmeta; i++) {
        const StMeta *m = &meta[i];
        if (!m->key || !m->value ||
            !valid_utf8((const unsigned char *)m->key, strlen(m->key)) ||
            !valid_utf8((const unsigned char *)m->value, strlen(m->value))) {
            set_err(err, errlen, "%s: metadata entry %d: key or value missing or not UTF-8",
                    path, i);
            return -1;
        }
        for (int j = 0; j < i; j++)
            if (strcmp(meta[j].key, m->key) == 0) {
                set_err(err, errlen, "%s: metadata key \"%s\" appears twice", path, m->key);
                return -1;
            }
    }
    return 0;
}

/* The header JSON, compact, padded with spaces to a multiple of 8. */
static int build_header(Buf *b, const StTensor *t, int nt, const StMeta *meta, int nmeta)
{
    buf_str(b, "{");
    if (nmeta > 0) {
        buf_str(b, "\"" META_KEY "\":{");
        for (int i = 0; i < nmeta; i++) {
            if (i)
                buf_str(b, ",");
            buf_json_string(b, meta[i].key);
            buf_str(b, ":");
            buf_json_string(b, meta[i].value);
        }
        buf_str(b, "}");
    }
    int64_t off = 0;
    for (int i = 0; i < nt; i++) {
        if (i || nmeta > 0)
            buf_str(b, ",");
        buf_json_string(b, t[i].name);
        buf_str(b, ":{\"dtype\":");
        buf_json_string(b, t[i].dtype);
        buf_str(b, ",\"shape\":[");
        for (int d = 0; d < t[i].ndim; d++) {
            if (d)
                buf_str(b, ",");
            buf_int(b, t[i].shape[d]);
        }
        buf_str(b, "],\"data_offsets\":[");
        buf_int(b, off);
        buf_str(b, ",");
        off += (int64_t)t[i].nbytes;
        buf_int(b, off);
        buf_str(b, "]}");
    }
    buf_str(b, "}");
    while (b->len % 8)
        buf_put(b, " ", 1);
    return b->oom ? -1 : 0;
}

/* The directory part of path ("." if none), fsync'ed so that the rename is
 * durable. Best effort: the new file is complete either way, and some file
 * systems refuse fsync on directories. */
static void sync_parent_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir)
        return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

static int write_all(FILE *fp, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, fp) == n; }

int st_write(const char *path, const StTensor *t, int nt, const StMeta *meta, int nmeta,
             char *err, size_t errlen)
{
    if (!path) {
        set_err(err, errlen, "st_write: no path");
        return -1;
    }
    if (check_write_args(path, t, nt, meta, nmeta, err, errlen))
        return -1;
    Buf hdr = {0};
    if (build_header(&hdr, t, nt, meta, nmeta)) {
        free(hdr.p);
        set_err(err, errlen, "%s: out of memory building the header", path);
        return -1;
    }
    size_t tlen = strlen(path) + sizeof ".tmp.XXXXXX" + 24;
    char *tmp = malloc(tlen);
    if (!tmp) {
        free(hdr.p);
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    /* PATH.tmp.PID.XXXXXX (io.h): a later run can tell a killed writer's leftover from a live one */
    snprintf(tmp, tlen, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
    int fd = mkstemp(tmp);
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot create temporary file %s: %s", path, tmp,
                strerror(errno));
        free(tmp);
        free(hdr.p);
        return -1;
    }
    /* mkstemp creates the file 0600; a checkpoint is as readable as any file
     * (reading the umask would mean changing it, which is process-global). */
    const char *what = NULL;
    int saved = 0;
    FILE *fp = NULL;
    if (fchmod(fd, 0644) != 0)
        what = "chmod", saved = errno;
    if (!what && !(fp = fdopen(fd, "wb")))
        what = "fdopen", saved = errno;
    if (!what) {
        unsigned char len8[8];
        uint64_t n = hdr.len;
        for (int i = 0; i < 8; i++)
            len8[i] = (unsigned char)(n >> (8 * i));
        if (!write_all(fp, len8, 8) || !write_all(fp, hdr.p, hdr.len))
            what = "write", saved = errno;
        for (int i = 0; !what && i < nt; i++)
            if (!write_all(fp, t[i].data, t[i].nbytes))
                what = "write", saved = errno;
    }
    if (!what && fflush(fp) != 0)
        what = "write", saved = errno;
    if (!what && fsync(fileno(fp)) != 0)
        what = "fsync", saved = errno;
    if (fp) {
        if (fclose(fp) != 0 && !what)
            what = "close", saved = errno;
    } else {
        close(fd);
    }
    if (!what && rename(tmp, path) != 0)
        what = "rename", saved = errno;
    if (what) {
        unlink(tmp);
        set_err(err, errlen, "%s: %s of %s failed: %s; %s left as it was", path, what, tmp,
                saved ? strerror(saved) : "unknown error", path);
    } else {
        sync_parent_dir(path);
    }
    free(tmp);
    free(hdr.p);
    return what ? -1 : 0;
}

/* ---- header parser ----------------------------------------------------------------- */

typedef struct {
    const unsigned char *s; /* the header JSON (n bytes) */
    size_t n, i;
    char *sp;               /* next free byte of the string arena */
    const char *path;
    char *err;
    size_t errlen;
    int failed;
    StFile *f;
    int tcap, mcap;         /* allocated entries of f->t and f->meta */
} Parser;

/* Record a syntax or shape error at the current position (a file offset, so
 * that it matches a hex dump); only the first one is kept. */
static int fail(Parser *p, const char *fmt, ...)
{
    if (p->failed)
        return -1;
    p->failed = 1;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_err(p->err, p->errlen, "%s: bad header at byte %zu: %s", p->path, p->i + 8, msg);
    return -1;
}

static void skip_ws(Parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' ||
                           p->s[p->i] == '\r'))
        p->i++;
}

/* The next non-space character, not consumed; -1 at the end. */
static int peek(Parser *p)
{
    skip_ws(p);
    return p->i < p->n ? p->s[p->i] : -1;
}

static int expect(Parser *p, char c)
{
    int got = peek(p);
    if (got != c) {
        if (got < 0)
            return fail(p, "expected '%c', found the end of the header", c);
        if (got >= 0x20 && got < 0x7F)
            return fail(p, "expected '%c', found '%c'", c, got);
        return fail(p, "expected '%c', found byte 0x%02x", c, got);
    }
    p->i++;
    return 0;
}

static int hex4(Parser *p, unsigned *out)
{
    if (p->n - p->i < 4)
        return fail(p, "\\u escape needs 4 hex digits");
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        int c = p->s[p->i + k], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return fail(p, "\\u escape needs 4 hex digits");
        v = v * 16 + (unsigned)d;
    }
    p->i += 4;
    *out = v;
    return 0;
}

/* A \uXXXX escape (p->i just past the 'u'), possibly a surrogate pair, as UTF-8. */
static int unicode_escape(Parser *p, char **o)
{
    unsigned cp, lo;
    if (hex4(p, &cp))
        return -1;
    if (cp >= 0xDC00 && cp <= 0xDFFF)
        return fail(p, "lone low surrogate \\u%04x", cp);
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (p->n - p->i < 2 || p->s[p->i] != '\\' || p->s[p->i + 1] != 'u')
            return fail(p, "high surrogate \\u%04x without its low half", cp);
        p->i += 2;
        if (hex4(p, &lo))
            return -1;
        if (lo < 0xDC00 || lo > 0xDFFF)
            return fail(p, "high surrogate \\u%04x followed by \\u%04x", cp, lo);
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (cp == 0)
        return fail(p, "\\u0000 in a string (names cannot contain NUL)");
    unsigned char *u = (unsigned char *)*o;
    if (cp < 0x80) {
        *u++ = (unsigned char)cp;
    } else if (cp < 0x800) {
        *u++ = (unsigned char)(0xC0 | (cp >> 6));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        *u++ = (unsigned char)(0xE0 | (cp >> 12));
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    } else {
        *u++ = (unsigned char)(0xF0 | (cp >> 18));
        *u++ = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
        *u++ = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        *u++ = (unsigned char)(0x80 | (cp & 0x3F));
    }
    *o = (char *)u;
    return 0;
}

/* A string, decoded into the arena; *out is NUL-terminated valid UTF-8. */
static int parse_string(Parser *p, const char **out)
{
    if (peek(p) != '"')
        return fail(p, "expected a string");
    size_t start = ++p->i;
    char *o = p->sp;
    for (;;) {
        if (p->i >= p->n)
            return fail(p, "string starting at byte %zu is not closed", start + 7);
        unsigned char c = p->s[p->i];
        if (c == '"')
            break;
        if (c < 0x20)
            return fail(p, "control character 0x%02x in a string", c);
        if (c != '\\') {
            *o++ = (char)c;
            p->i++;
            continue;
        }
        if (++p->i >= p->n)
            return fail(p, "string starting at byte %zu is not closed", start + 7);
        c = p->s[p->i++];
        switch (c) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (unicode_escape(p, &o))
                return -1;
            break;
        default:
            p->i--;
            return fail(p, "unknown escape '\\%c'", c >= 0x20 && c < 0x7F ? c : '?');
        }
    }
    p->i++; /* the closing quote */
    *o = 0;
    if (!valid_utf8((const unsigned char *)p->sp, (size_t)(o - p->sp)))
        return fail(p, "string starting at byte %zu is not valid UTF-8", start + 7);
    *out = p->sp;
    p->sp = o + 1;
    return 0;
}

/* A non-negative integer that fits int64 (the format's usize, as fp8c reads it). */
static int parse_uint(Parser *p, int64_t *out)
{
    int c = peek(p);
    if (c == '-')
        return fail(p, "negative number where a size or offset belongs");
    if (c < '0' || c > '9')
        return fail(p, "expected a non-negative integer");
    if (c == '0' && p->i + 1 < p->n && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9')
        return fail(p, "number with a leading zero");
    int64_t v = 0;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        int d = p->s[p->i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return fail(p, "number too large");
        v = v * 10 + d;
        p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E'))
        return fail(p, "expected an integer, found a fraction or exponent");
    *out = v;
    return 0;
}

/* An array of non-negative integers; stores the first max, counts all. */
static int parse_uint_array(Parser *p, int64_t *vals, int max, int *count)
{
    *count = 0;
    if (expect(p, '['))
        return -1;
    if (peek(p) == ']') {
        p->i++;
        return 0;
    }
    for (;;) {
        int64_t v = 0;
        if (parse_uint(p, &v))
            return -1;
        if (*count < max)
            vals[*count] = v;
        if (*count == INT_MAX)
            return fail(p, "array too long");
        (*count)++;
        int c = peek(p);
        if (c == ']') {
            p->i++;
            return 0;
        }
        if (expect(p, ','))
            return -1;
    }
}

/* Calls item(p, ctx, key) for each key of an object; item parses the value. */
static int parse_object(Parser *p, int (*item)(Parser *, void *, const char *), void *ctx)
{
    if (expect(p, '{'))
        return -1;
    if (peek(p) == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        const char *key;
        if (parse_string(p, &key) || expect(p, ':') || item(p, ctx, key))
            return -1;
        if (peek(p) == '}') {
            p->i++;
            return 0;
        }
        if (expect(p, ','))
            return -1;
    }
}

static int meta_item(Parser *p, void *ctx, const char *key)
{
    (void)ctx;
    StFile *f = p->f;
    const char *value;
    if (peek(p) != '"')
        return fail(p, "metadata \"%s\": value must be a string", key);
    if (parse_string(p, &value))
        return -1;
    if (f->nmeta == p->mcap) {
        if (p->mcap > INT_MAX / 4)
            return fail(p, "too many metadata entries");
        int cap = p->mcap ? 2 * p->mcap : 8;
        StMeta *m = realloc(f->meta, (size_t)cap * sizeof *m);
        if (!m)
            return fail(p, "out of memory");
        f->meta = m, p->mcap = cap;
    }
    f->meta[f->nmeta++] = (StMeta){key, value};
    return 0;
}

/* What one tensor's object held; have_* say which fields were seen. */
typedef struct {
    const char *name;
    int dtype;            /* index into dtypes */
    int64_t shape[ST_MAX_DIMS];
    int ndim;
    int64_t off[2];
    int have_dtype, have_shape, have_offsets;
} TensorFields;

static int tensor_item(Parser *p, void *ctx, const char *key)
{
    TensorFields *tf = ctx;
    if (strcmp(key, "dtype") == 0) {
        const char *s;
        if (tf->have_dtype++)
            return fail(p, "tensor \"%s\": \"dtype\" given twice", tf->name);
        if (parse_string(p, &s))
            return -1;
        if ((tf->dtype = dtype_index(s)) < 0)
            return fail(p, "tensor \"%s\": unknown dtype \"%s\" (expected one of %s)", tf->name,
                        s, DTYPE_LIST);
    } else if (strcmp(key, "shape") == 0) {
        if (tf->have_shape++)
            return fail(p, "tensor \"%s\": \"shape\" given twice", tf->name);
        if (parse_uint_array(p, tf->shape, ST_MAX_DIMS, &tf->ndim))
            return -1;
        if (tf->ndim > ST_MAX_DIMS)
            return fail(p, "tensor \"%s\": shape has %d dimensions; fp8c supports at most %d",
                        tf->name, tf->ndim, ST_MAX_DIMS);
    } else if (strcmp(key, "data_offsets") == 0) {
        int n;
        if (tf->have_offsets++)
            return fail(p, "tensor \"%s\": \"data_offsets\" given twice", tf->name);
        if (parse_uint_array(p, tf->off, 2, &n))
            return -1;
        if (n != 2)
            return fail(p, "tensor \"%s\": data_offsets has %d numbers, expected [begin, end]",
                        tf->name, n);
    } else {
        return fail(p, "tensor \"%s\": unknown field \"%s\" (expected dtype, shape, data_offsets)",
                    tf->name, key);
    }
    return 0;
}

/* Tensor offsets before validation, kept apart from the StTensor so that no
 * pointer is formed from an unchecked offset. */
typedef struct {
    int64_t begin, end;
} Span;

typedef struct {
    Span *spans;
    int cap;
    int have_meta;
} TopCtx;

static int top_item(Parser *p, void *ctx, const char *key)
{
    TopCtx *top = ctx;
    StFile *f = p->f;
    if (strcmp(key, META_KEY) == 0) {
        if (top->have_meta++)
            return fail(p, "\"%s\" given twice", META_KEY);
        if (peek(p) != '{')
            return fail(p, "\"%s\" must be an object of strings", META_KEY);
        return parse_object(p, meta_item, NULL);
    }
    TensorFields tf = {.name = key};
    if (peek(p) != '{')
        return fail(p, "tensor \"%s\": expected an object {dtype, shape, data_offsets}", key);
    if (parse_object(p, tensor_item, &tf))
        return -1;
    if (!tf.have_dtype || !tf.have_shape || !tf.have_offsets)
        return fail(p, "tensor \"%s\": missing \"%s\"", key,
                    !tf.have_dtype ? "dtype" : !tf.have_shape ? "shape" : "data_offsets");
    if (f->nt == top->cap) {
        if (top->cap > INT_MAX / 4)
            return fail(p, "too many tensors");
        int cap = top->cap ? 2 * top->cap : 16;
        StTensor *t = realloc(f->t, (size_t)cap * sizeof *t);
        if (t)
            f->t = t;
        Span *s = t ? realloc(top->spans, (size_t)cap * sizeof *s) : NULL;
        if (!s)
            return fail(p, "out of memory");
        top->spans = s, top->cap = cap;
    }
    StTensor *t = &f->t[f->nt];
    memset(t, 0, sizeof *t);
    t->name = key;
    t->dtype = dtypes[tf.dtype].name;
    t->ndim = tf.ndim;
    memcpy(t->shape, tf.shape, sizeof tf.shape);
    top->spans[f->nt] = (Span){tf.off[0], tf.off[1]};
    f->nt++;
    return 0;
}

/* ---- layout checks ----------------------------------------------------------------- */

static int cmp_name(const void *a, const void *b)
{
    return strcmp((*(const StTensor *const *)a)->name, (*(const StTensor *const *)b)->name);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(((const StMeta *)a)->key, ((const StMeta *)b)->key);
}

typedef struct {
    Span s;
    int idx;
} SpanIdx;

static int cmp_span(const void *a, const void *b)
{
    const SpanIdx *x = a, *y = b;
    if (x->s.begin != y->s.begin)
        return x->s.begin < y->s.begin ? -1 : 1;
    if (x->s.end != y->s.end)
        return x->s.end < y->s.end ? -1 : 1;
    return x->idx - y->idx;
}

static void fmt_shape(char *out, size_t outlen, const StTensor *t)
{
    size_t n = (size_t)snprintf(out, outlen, "[");
    for (int d = 0; d < t->ndim && n < outlen; d++)
        n += (size_t)snprintf(out + n, outlen - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < outlen)
        snprintf(out + n, outlen - n, "]");
}

/* Every tensor's span is its size, the spans tile [0, data_size), names are
 * unique; then the data pointers are set. */
static int check_layout(StFile *f, const Span *spans, size_t data_off, const char *path,
                        char *err, size_t errlen)
{
    uint64_t data_size = f->size - data_off;
    int64_t max_end = 0;
    char shp[96];
    for (int i = 0; i < f->nt; i++) {
        StTensor *t = &f->t[i];
        Span s = spans[i];
        int64_t need = shape_bytes(t->shape, t->ndim, st_dtype_size(t->dtype));
        fmt_shape(shp, sizeof shp, t);
        if (need < 0) {
            set_err(err, errlen, "%s: tensor \"%s\": shape %s is too large", path, t->name, shp);
            return -1;
        }
        if (s.end < s.begin) {
            set_err(err, errlen, "%s: tensor \"%s\": data_offsets [%lld, %lld] end before they begin",
                    path, t->name, (long long)s.begin, (long long)s.end);
            return -1;
        }
        if (s.end - s.begin != need) {
            set_err(err, errlen,
                    "%s: tensor \"%s\": dtype %s and shape %s need %lld bytes, but data_offsets "
                    "[%lld, %lld] span %lld",
                    path, t->name, t->dtype, shp, (long long)need, (long long)s.begin,
                    (long long)s.end, (long long)(s.end - s.begin));
            return -1;
        }
        t->nbytes = (size_t)need;
        if (s.end > max_end)
            max_end = s.end;
    }
    if ((uint64_t)max_end > data_size) {
        set_err(err, errlen, "%s: truncated: header says %lld bytes of data, file has %llu", path,
                (long long)max_end, (unsigned long long)data_size);
        return -1;
    }
    SpanIdx *order = malloc(((size_t)f->nt + 1) * sizeof *order);
    if (!order) {
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < f->nt; i++)
        order[i] = (SpanIdx){spans[i], i};
    qsort(order, (size_t)f->nt, sizeof *order, cmp_span);
    int64_t covered = 0; /* the data below this byte belongs to a tensor */
    int prev = -1;
    for (int k = 0; k < f->nt; k++) {
        Span s = order[k].s;
        if (s.begin < covered) {
            set_err(err, errlen, "%s: tensors \"%s\" [%lld, %lld] and \"%s\" [%lld, %lld] overlap",
                    path, f->t[prev].name, (long long)spans[prev].begin,
                    (long long)spans[prev].end, f->t[order[k].idx].name, (long long)s.begin,
                    (long long)s.end);
            free(order);
            return -1;
        }
        if (s.begin > covered) {
            set_err(err, errlen, "%s: data bytes [%lld, %lld) belong to no tensor", path,
                    (long long)covered, (long long)s.begin);
            free(order);
            return -1;
        }
        covered = s.end;
        if (s.end > s.begin || prev < 0)
            prev = order[k].idx;
    }
    free(order);
    if ((uint64_t)covered != data_size) {
        set_err(err, errlen, "%s: %llu bytes after the last tensor (header says %lld bytes of data, "
                "file has %llu)", path, (unsigned long long)(data_size - (uint64_t)covered),
                (long long)covered, (unsigned long long)data_size);
        return -1;
    }
    for (int i = 0; i < f->nt; i++)
        f->t[i].data = f->header_only ? NULL : f->buf + data_off + spans[i].begin;

    f->by_name = malloc(((size_t)f->nt + 1) * sizeof *f->by_name);
    if (!f->by_name) {
        set_err(err, errlen, "%s: out of memory", path);
        return -1;
    }
    for (int i = 0; i < f->nt; i++)
        f->by_name[i] = &f->t[i];
    qsort(f->by_name, (size_t)f->nt, sizeof *f->by_name, cmp_name);
    for (int i = 1; i < f->nt; i++)
        if (strcmp(f->by_name[i - 1]->name, f->by_name[i]->name) == 0) {
            set_err(err, errlen, "%s: tensor name \"%s\" appears twice", path, f->by_name[i]->name);
            return -1;
        }
    if (f->nmeta > 1) {
        StMeta *sorted = malloc((size_t)f->nmeta * sizeof *sorted);
        if (!sorted) {
            set_err(err, errlen, "%s: out of memory", path);
            return -1;
        }
        memcpy(sorted, f->meta, (size_t)f->nmeta * sizeof *sorted);
        qsort(sorted, (size_t)f->nmeta, sizeof *sorted, cmp_key);
        for (int i = 1; i < f->nmeta; i++)
            if (strcmp(sorted[i - 1].key, sorted[i].key) == 0) {
                set_err(err, errlen, "%s: metadata key \"%s\" appears twice", path, sorted[i].key);
                free(sorted);
                return -1;
            }
        free(sorted);
    }
    return 0;
}

/* ---- reader ------------------------------------------------------------------------ */

/* The whole file into f->buf (io.c: opened without blocking, regular files only); 0 or -1. */
static int read_whole(StFile *f, const char *path, char *err, size_t errlen)
{
    char *data;
    if (io_read_all(path, SIZE_MAX / 2, &data, &f->size, err, errlen))
        return -1;
    f->buf = (unsigned char *)data;
    return 0;
}

static int parse_buf(StFile *f, const char *path, char *err, size_t errlen);

StFile *st_parse(const void *data, size_t size, const char *name, char *err, size_t errlen)
{
    StFile *f = calloc(1, sizeof *f);
    if (!f || !(f->buf = malloc(size ? size : 1))) {
        free(f);
        set_err(err, errlen, "%s: out of memory", name);
        return NULL;
    }
    if (size)
        memcpy(f->buf, data, size);
    f->size = size;
    if (parse_buf(f, name, err, errlen)) {
        st_free(f);
        return NULL;
    }
    return f;
}

/* The 8-byte length and the header JSON into f->buf; f->size is the file's size. */
static int read_header(StFile *f, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC); /* a FIFO must not block here */
    if (fd < 0) {
        set_err(err, errlen, "%s: cannot open: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    int rc = -1;
    unsigned char len8[8];
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, errlen, "%s: not a regular file", path);
        goto out;
    }
    f->size = (size_t)st.st_size;
    size_t want = f->size < 8 ? f->size : 8;
    if (pread(fd, len8, want, 0) != (ssize_t)want) {
        set_err(err, errlen, "%s: read failed: %s", path, strerror(errno));
        goto out;
    }
    uint64_t hlen = 0;
    for (size_t i = 0; i < want; i++)
        hlen |= (uint64_t)len8[i] << (8 * i);
    /* st_read's checks report a bad length; read no more than the file holds */
    size_t n = f->size < 8 ? f->size : 8 + (hlen < f->size - 8 ? (size_t)hlen : f->size - 8);
    if (!(f->buf = malloc(n ? n : 1))) {
        set_err(err, errlen, "%s: out of memory reading a %zu-byte header", path, n);
        goto out;
    }
    for (size_t got = 0; got < n;) {
        ssize_t r = pread(fd, f->buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            set_err(err, errlen, "%s: read failed: %s", path, r < 0 ? strerror(errno) : "file shrank");
            goto out;
        }
        got += (size_t)r;
    }
    rc = 0;
out:
    close(fd);
    return rc;
}

static StFile *open_file(const char *path, int header_only, char *err, size_t errlen)
{
    if (!path) {
        set_err(err, errlen, "st_read: no path");
        return NULL;
    }
    StFile *f = calloc(1, sizeof *f);
    if (!f) {
        set_err(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    f->header_only = header_only;
    if ((header_only ? read_header(f, path, err, errlen) : read_whole(f, path, err, errlen)) || parse_buf(f, path, err, errlen)) {
        st_free(f);
        return NULL;
    }
    return f;
}

static int parse_buf(StFile *f, const char *path, char *err, size_t errlen)
{
    if (f->size < 8) {
        set_err(err, errlen, "%s: truncated: %zu bytes, less than the 8-byte header length",
                path, f->size);
        goto bad;
    }
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)f->buf[i] << (8 * i);
    if (hlen > f->size - 8) {
        set_err(err, errlen, "%s: truncated: header says its JSON is %llu bytes, file has %zu after "
                "the length", path, (unsigned long long)hlen, f->size - 8);
        goto bad;
    }
    if (hlen < 2) {
        set_err(err, errlen, "%s: header length is %llu; not a safetensors file", path,
                (unsigned long long)hlen);
        goto bad;
    }
    f->strings = malloc((size_t)hlen + 1);
    if (!f->strings) {
        set_err(err, errlen, "%s: out of memory", path);
        goto bad;
    }
    Parser p = {.s = f->buf + 8, .n = (size_t)hlen, .sp = f->strings, .path = path,
                .err = err, .errlen = errlen, .f = f};
    TopCtx top = {0};
    if (peek(&p) != '{') {
        fail(&p, "expected '{': not a safetensors header");
    } else if (parse_object(&p, top_item, &top) == 0 && peek(&p) >= 0) {
        fail(&p, "unexpected bytes after the header's JSON object");
    }
    if (!p.failed && check_layout(f, top.spans, 8 + (size_t)hlen, path, err, errlen))
        p.failed = 1;
    free(top.spans);
    if (p.failed)
        goto bad;
    return 0;
bad:
    return -1;
}

StFile *st_read(const char *path, char *err, size_t errlen) { return open_file(path, 0, err, errlen); }

StFile *st_read_header(const char *path, char *err, size_t errlen) { return open_file(path, 1, err, errlen); }

const StTensor *st_find(const StFile *f, const char *name)
{
    if (!f || !name || f->nt == 0)
        return NULL;
    StTensor key = {.name = name};
    const StTensor *kp = &key;
    const StTensor **hit = bsearch(&kp, f->by_name, (size_t)f->nt, sizeof *f->by_name, cmp_name);
    return hit ? *hit : NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
    if (!f || !key)
        return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

int st_count(const StFile *f) { return f ? f->nt : 0; }

const StTensor *st_at(const StFile *f, int i)
{
    return f && i >= 0 && i < f->nt ? &f->t[i] : NULL;
}

int st_meta_count(const StFile *f) { return f ? f->nmeta : 0; }

const StMeta *st_meta_at(const StFile *f, int i)
{
    return f && i >= 0 && i < f->nmeta ? &f->meta[i] : NULL;
}

void st_free(StFile *f)
{
    if (!f)
        return;
    free(f->buf);
    free(f->strings);
    free(f->t);
    free(f->by_name);
    free(f->meta);
    free(f);
}
