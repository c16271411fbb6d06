/* data.c: the token loaders, the synthetic corpus, the split and the batch
 * stream declared in data.h.
 *
 * Owns: the llm.c shard format as fp8c reads it, and the synthetic generator
 * below. Must not: trust a file's header (the token count is checked against
 * the file size before a token is read), exit or print.
 *
 * The synthetic corpus. From the seed (through rng.h's splitmix64):
 *   1. NPHRASE = 64 phrases, each of 4..12 tokens drawn uniformly from
 *      [0, vocab);
 *   2. for each phrase, two successor phrases drawn uniformly;
 *   3. the corpus starts with phrase 0; after each phrase comes its first
 *      successor with probability 3/4, its second with 1/4.
 * Inside a phrase every token after the first is fixed by the ones before it,
 * and a phrase's first token has two choices, so the entropy is about
 * 0.56 nats per phrase, ~0.07 nats per token, while a model starts at
 * log(vocab). It passes through stages a small model learns within a few
 * hundred steps: which ~500 tokens occur (log(500) = 6.2 nats, for a GPT-2
 * vocab), then bigrams (most contexts are unique for large vocabs), then
 * attention to the previous tokens where short contexts collide (small vocabs).
 * Tokens are emitted one at a time from this process, so a longer corpus
 * extends a shorter one with the same seed.
 */
#include "data.h"
#include "io.h"
#include "rng.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NPHRASE 64
#define PHRASE_MIN 4
#define PHRASE_MAX 12

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static uint32_t le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The whole file, malloc'ed (at least 1 byte); NULL with a message. io.c opens it without
 * blocking and refuses anything but a regular file (a FIFO as --data never hangs). */
static unsigned char *read_file(const char *path, size_t *size, char *err, size_t errlen)
{
    char *data;
    return io_read_all(path, SIZE_MAX / 8, &data, size, err, errlen) ? NULL : (unsigned char *)data;
}

/* An llm.c shard in buf (which starts with the magic) into d. */
static int load_shard(Dataset *d, const unsigned char *buf, size_t size, const char *path,
                      int vocab, char *err, size_t errlen)
{
    if (size < DATA_SHARD_HEADER_BYTES) {
        set_err(err, errlen, "%s: truncated llm.c token shard: %zu bytes, the header alone is %d",
                path, size, DATA_SHARD_HEADER_BYTES);
        return -1;
    }
    uint32_t version = le32(buf + 4);
    int32_t ntok = (int32_t)le32(buf + 8);
    if (version != DATA_SHARD_VERSION) {
        set_err(err, errlen, "%s: llm.c token shard version %u; fp8c reads version %d (uint16 "
                "tokens)", path, version, DATA_SHARD_VERSION);
        return -1;
    }
    size_t have = (size - DATA_SHARD_HEADER_BYTES) / 2;
    if (ntok <= 0) {
        set_err(err, errlen, "%s: llm.c token shard header says %d tokens", path, (int)ntok);
        return -1;
    }
    if ((uint64_t)size != DATA_SHARD_HEADER_BYTES + 2 * (uint64_t)ntok) {
        set_err(err, errlen, "%s: %s: header says %d tokens (%llu bytes), file has %zu bytes of "
                "tokens", path, (size_t)ntok > have ? "truncated" : "wrong size", (int)ntok,
                2 * (unsigned long long)ntok, size - DATA_SHARD_HEADER_BYTES);
        return -1;
    }
    int32_t *tok = malloc((size_t)ntok * sizeof *tok);
    if (!tok) {
        set_err(err, errlen, "%s: out of memory for %d tokens", path, (int)ntok);
        return -1;
    }
    const unsigned char *p = buf + DATA_SHARD_HEADER_BYTES;
    for (int32_t i = 0; i < ntok; i++) {
        tok[i] = (int32_t)(p[2 * i] | p[2 * i + 1] << 8);
        if (tok[i] >= vocab) {
            set_err(err, errlen, "%s: token %d at position %d is outside the model's vocab (%d)",
                    path, (int)tok[i], (int)i, vocab);
            free(tok);
            return -1;
        }
    }
    d->tokens = tok;
    d->n = ntok;
    return 0;
}

/* ---- token id arrays: .npy, and header-less .bin ---------------------------------------------- */

static int has_suffix(const char *s, const char *suf)
{
    size_t n = strlen(s), m = strlen(suf);
    return n >= m && !strcmp(s + n - m, suf);
}

/* n little-endian unsigned ids of `width` bytes at p into d->tokens, each below vocab; a bad id
 * names the file, its byte offset (data_off + k * width) and the id. */
static int load_ids(Dataset *d, const unsigned char *p, int64_t n, int width, size_t data_off, const char *path,
                    int vocab, char *err, size_t errlen)
{
    if (n < 1) {
        set_err(err, errlen, "%s: no tokens", path);
        return -1;
    }
    if (!(d->tokens = malloc((size_t)n * sizeof *d->tokens))) {
        set_err(err, errlen, "%s: out of memory for %lld tokens", path, (long long)n);
        return -1;
    }
    for (int64_t k = 0; k < n; k++) {
        const unsigned char *q = p + k * width;
        uint64_t v = width == 2 ? (uint64_t)(q[0] | q[1] << 8) : (uint64_t)le32(q);
        if (v >= (uint64_t)vocab) {
            set_err(err, errlen, "%s: token id %llu at byte offset %zu (token %lld) is >= the model's vocab_size %d", path,
                    (unsigned long long)v, data_off + (size_t)k * (size_t)width, (long long)k, vocab);
            free(d->tokens);
            d->tokens = NULL;
            return -1;
        }
        d->tokens[k] = (int32_t)v;
    }
    d->n = n;
    return 0;
}

/* A NumPy .npy of uint16 or uint32 ids (any C-order shape, read flat). */
static int load_npy(Dataset *d, const unsigned char *buf, size_t size, const char *path, int vocab, char *err,
                    size_t errlen)
{
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6)) {
        set_err(err, errlen, "%s: not a .npy file (no \\x93NUMPY magic)", path);
        return -1;
    }
    size_t hlen, off;
    if (buf[6] == 1) {
        hlen = (size_t)(buf[8] | buf[9] << 8), off = 10;
    } else if ((buf[6] == 2 || buf[6] == 3) && size >= 12) {
        hlen = (size_t)le32(buf + 8), off = 12;
    } else {
        set_err(err, errlen, "%s: .npy format version %d is not supported", path, buf[6]);
        return -1;
    }
    if (hlen > size - off) {
        set_err(err, errlen, "%s: truncated .npy header", path);
        return -1;
    }
    char h[1024];
    snprintf(h, sizeof h, "%.*s", (int)(hlen < sizeof h - 1 ? hlen : sizeof h - 1), (const char *)buf + off);
    const char *descr = strstr(h, "'descr':"), *shape = strstr(h, "'shape':");
    int width = 0;
    if (descr && (strstr(descr, "'<u2'") == descr + 9 || strstr(descr, "'<u2'") == descr + 8)) width = 2;
    if (descr && (strstr(descr, "'<u4'") == descr + 9 || strstr(descr, "'<u4'") == descr + 8)) width = 4;
    if (!width || !shape || strstr(h, "'fortran_order': True")) {
        set_err(err, errlen, "%s: a token .npy holds little-endian uint16 or uint32 ids in C order (header: %s)", path, h);
        return -1;
    }
    int64_t n = 1;
    const char *c = strchr(shape, '(');
    for (c = c ? c + 1 : ""; *c && *c != ')';) {
        char *end;
        long long v = strtoll(c, &end, 10);
        if (end == c) break;
        if (v < 0 || (v && n > INT64_MAX / v)) n = -1;
        else n *= v;
        c = end;
        while (*c == ',' || *c == ' ') c++;
    }
    size_t data = off + hlen;
    if (n < 0 || (uint64_t)n * (uint64_t)width != (uint64_t)(size - data)) {
        set_err(err, errlen, "%s: .npy shape holds %lld ids of %d bytes, but %zu data bytes follow the header", path,
                (long long)n, width, size - data);
        return -1;
    }
    return load_ids(d, buf + data, n, width, data, path, vocab, err, errlen);
}

int data_load(Dataset *d, const char *path, int vocab, char *err, size_t errlen)
{
    memset(d, 0, sizeof *d);
    if (!path || vocab < 1) {
        set_err(err, errlen, "%s: bad arguments (vocab %d)", path ? path : "data_load", vocab);
        return -1;
    }
    size_t size = 0;
    unsigned char *buf = read_file(path, &size, err, errlen);
    if (!buf)
        return -1;
    int rc = 0;
    if (size >= 4 && le32(buf) == DATA_SHARD_MAGIC) {
        rc = load_shard(d, buf, size, path, vocab, err, errlen);
    } else if (has_suffix(path, ".npy")) {
        rc = load_npy(d, buf, size, path, vocab, err, errlen);
    } else if (has_suffix(path, ".bin")) { /* header-less: uint16 ids (nanoGPT's train.bin), uint32 for *.u32.bin */
        int width = has_suffix(path, ".u32.bin") ? 4 : 2;
        if (size % (size_t)width) {
            set_err(err, errlen, "%s: %zu bytes is not a whole number of uint%d token ids", path, size, 8 * width);
            rc = -1;
        } else {
            rc = load_ids(d, buf, (int64_t)(size / (size_t)width), width, 0, path, vocab, err, errlen);
        }
    } else if (vocab != 256) {
        set_err(err, errlen, "%s is not an llm.c token shard (magic %d), a .npy or a .bin of token ids, and the model's vocab is %d, "
                "not 256 bytes", path, DATA_SHARD_MAGIC, vocab);
        rc = -1;
    } else if (size == 0) {
        set_err(err, errlen, "%s: empty file, no tokens", path);
        rc = -1;
    } else if (!(d->tokens = malloc(size * sizeof *d->tokens))) {
        set_err(err, errlen, "%s: out of memory for %zu tokens", path, size);
        rc = -1;
    } else {
        for (size_t i = 0; i < size; i++)
            d->tokens[i] = buf[i];
        d->n = (int64_t)size;
    }
    free(buf);
    if (rc) {
        memset(d, 0, sizeof *d);
        return -1;
    }
    d->vocab = vocab;
    snprintf(d->source, sizeof d->source, "%s", path);
    return 0;
}

void data_synthetic(Dataset *d, int64_t n, int vocab, uint64_t seed)
{
    memset(d, 0, sizeof *d);
    d->vocab = vocab;
    d->is_synthetic = 1;
    snprintf(d->source, sizeof d->source, "synthetic(seed=%llu)", (unsigned long long)seed);
    if (n < 1 || vocab < 1 || (uint64_t)n > SIZE_MAX / sizeof *d->tokens)
        return;
    if (!(d->tokens = malloc((size_t)n * sizeof *d->tokens)))
        return;
    d->n = n;

    uint64_t rng = seed ^ 0x5EED5EED5EED5EEDull; /* not the stream a same-seed init draws */
    int32_t phrase[NPHRASE][PHRASE_MAX];
    int len[NPHRASE], next[NPHRASE][2];
    for (int p = 0; p < NPHRASE; p++) {
        len[p] = PHRASE_MIN + (int)rng_below(&rng, PHRASE_MAX - PHRASE_MIN + 1);
        for (int k = 0; k < len[p]; k++)
            phrase[p][k] = (int32_t)rng_below(&rng, (uint32_t)vocab);
    }
    for (int p = 0; p < NPHRASE; p++) {
        next[p][0] = (int)rng_below(&rng, NPHRASE);
        next[p][1] = (int)rng_below(&rng, NPHRASE);
    }
    int cur = 0;
    for (int64_t i = 0; i < n;) {
        for (int k = 0; k < len[cur] && i < n; k++)
            d->tokens[i++] = phrase[cur][k];
        cur = next[cur][rng_below(&rng, 4) == 0];
    }
}

void data_free(Dataset *d)
{
    if (!d)
        return;
    free(d->tokens);
    memset(d, 0, sizeof *d);
}

/* Validation tokens for n tokens and sequence length T. */
static int64_t val_count(int64_t n, int T)
{
    int64_t v = n / 10;
    if (v < (int64_t)T + 1)
        v = (int64_t)T + 1;
    return v > n ? n : v;
}

void data_split(const Dataset *d, int T, DataStream *train, DataStream *val)
{
    int64_t n = d->tokens ? d->n : 0;
    int64_t nv = val_count(n, T < 1 ? 1 : T);
    *train = (DataStream){d->tokens, n - nv, 0};
    *val = (DataStream){d->tokens ? d->tokens + (n - nv) : NULL, nv, 0};
}

int data_check_split(const Dataset *d, int T, char *err, size_t errlen)
{
    int64_t need = 2 * ((int64_t)T + 1);
    if (T < 1) {
        set_err(err, errlen, "%s: sequence length %d must be at least 1", d->source, T);
        return -1;
    }
    if (!d->tokens || d->n < need) {
        set_err(err, errlen, "%s: %lld tokens; sequence length %d needs at least %lld (%d + 1 "
                "for training and as many for validation)", d->source, (long long)d->n, T,
                (long long)need, T);
        return -1;
    }
    return 0;
}

void data_next_batch(DataStream *s, int B, int T, int32_t *inputs, int32_t *targets)
{
    int64_t win = (int64_t)T + 1; /* tokens in one sequence window */
    int64_t p = s->pos;
    if (T < 1 || B < 1)
        return;
    for (int b = 0; b < B; b++) {
        int32_t *in = inputs + (size_t)b * (size_t)T;   /* (T) */
        int32_t *tg = targets + (size_t)b * (size_t)T;  /* (T) */
        if (p < 0 || p + win > s->n)
            p = 0;
        if (s->n >= win) {
            memcpy(in, s->tokens + p, (size_t)T * sizeof *in);
            memcpy(tg, s->tokens + p + 1, (size_t)T * sizeof *tg);
        } else { /* degenerate: fewer tokens than one window */
            for (int t = 0; t < T; t++) {
                in[t] = s->n > 0 ? s->tokens[t % s->n] : 0;
                tg[t] = s->n > 0 ? s->tokens[(t + 1) % s->n] : 0;
            }
        }
        p += T;
    }
    if (p + win > s->n)
        p = 0;
    s->pos = p;
}
