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
    } else if (vocab != 256) {
        set_err(err, errlen, "%s is not an llm.c token shard (magic %d) and the model's vocab is %d, "
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
