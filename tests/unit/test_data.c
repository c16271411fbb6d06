/* test_data.c: pins runtime/data.c and runtime/rng.h: the two file formats
 * and their refusals, the split sizes, the exact tokens of each batch window
 * (worked out by hand on a corpus whose token i is 100 + i, so a window's
 * start can be read off its first token), wrap-around, the synthetic corpus's
 * determinism and learnability, and the RNG's ranges and moments.
 *
 * Files live in a fresh directory under $TMPDIR (or /tmp), removed at the end.
 */
#include "check.h"
#include "data.h"
#include "rng.h"

#include <dirent.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char tmpdir[256]; /* this run's scratch directory */

static void path_in(char *out, size_t outlen, const char *name)
{
    snprintf(out, outlen, "%s/%s", tmpdir, name);
}

static int write_bytes(const char *path, const void *p, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    size_t w = n ? fwrite(p, 1, n, fp) : 0;
    return (fclose(fp) == 0 && w == n) ? 0 : -1;
}

/* An llm.c shard image: header {magic, version, count} then the uint16 tokens,
 * little-endian, as dev/data/data_common.py writes it. *size gets its length;
 * ntok_written is what goes in the header, ntok the tokens actually present. */
static unsigned char *make_shard(const uint16_t *tok, int ntok, int ntok_written, uint32_t magic,
                                 uint32_t version, size_t *size)
{
    *size = 1024 + 2 * (size_t)ntok;
    unsigned char *p = calloc(1, *size);
    uint32_t h[3] = {magic, version, (uint32_t)ntok_written};
    for (int k = 0; k < 3; k++)
        for (int b = 0; b < 4; b++)
            p[4 * k + b] = (unsigned char)(h[k] >> (8 * b));
    for (int i = 0; i < ntok; i++) {
        p[1024 + 2 * i] = (unsigned char)(tok[i] & 0xFF);
        p[1024 + 2 * i + 1] = (unsigned char)(tok[i] >> 8);
    }
    return p;
}

/* A dataset whose token i is 100 + i. */
static Dataset counting(int64_t n)
{
    Dataset d = {0};
    d.tokens = malloc((size_t)n * sizeof *d.tokens);
    for (int64_t i = 0; d.tokens && i < n; i++)
        d.tokens[i] = (int32_t)(100 + i);
    d.n = d.tokens ? n : 0;
    d.vocab = 1000;
    snprintf(d.source, sizeof d.source, "counting");
    return d;
}

/* ---- cases ------------------------------------------------------------------------- */

/* 1. A text file is its bytes, for a 256-token vocab. */
static void text_file_as_bytes(void)
{
    char path[512], err[512] = "";
    path_in(path, sizeof path, "text.txt");
    const char text[] = "Hi!\n\xC3\xA9\xFF";
    CHECK(write_bytes(path, text, sizeof text - 1) == 0);
    Dataset d;
    CHECKF(data_load(&d, path, 256, err, sizeof err) == 0, "%s", err);
    static const int32_t expect[] = {'H', 'i', '!', '\n', 0xC3, 0xA9, 0xFF};
    CHECK(d.n == 7 && d.vocab == 256 && !d.is_synthetic && strcmp(d.source, path) == 0);
    for (int i = 0; i < 7 && i < d.n; i++)
        CHECK(d.tokens[i] == expect[i]);
    data_free(&d);
    CHECK(d.tokens == NULL && d.n == 0);

    CHECK(write_bytes(path, "", 0) == 0);
    CHECK(data_load(&d, path, 256, err, sizeof err) == -1 && strstr(err, "empty file"));
    path_in(path, sizeof path, "missing.txt");
    CHECK(data_load(&d, path, 256, err, sizeof err) == -1 && strstr(err, "cannot open"));
    CHECK(d.tokens == NULL && d.n == 0);
}

/* 2. An llm.c shard is read as its uint16 tokens, whatever the vocab. */
static void shard_read_back(void)
{
    char path[512], err[512] = "";
    path_in(path, sizeof path, "good.bin");
    static const uint16_t tok[] = {50256, 0, 1, 258, 50000, 12345};
    size_t size;
    unsigned char *img = make_shard(tok, 6, 6, 20240520, 1, &size);
    CHECK(img && write_bytes(path, img, size) == 0);
    Dataset d;
    CHECKF(data_load(&d, path, 50257, err, sizeof err) == 0, "%s", err);
    CHECK(d.n == 6 && d.vocab == 50257);
    for (int i = 0; i < 6 && i < d.n; i++)
        CHECKF(d.tokens[i] == tok[i], "token %d is %d, expected %d", i, d.tokens[i], tok[i]);
    data_free(&d);
    /* A shard is a shard even for a 256 vocab: its tokens must then be bytes. */
    CHECK(data_load(&d, path, 256, err, sizeof err) == -1);
    CHECKF(strstr(err, "token 50256 at position 0 is outside the model's vocab (256)"), "%s", err);
    free(img);
}

/* 3. Shards that lie about themselves are refused, each with its reason. */
static void bad_shards_refused(void)
{
    char path[512], err[512];
    path_in(path, sizeof path, "bad.bin");
    static const uint16_t tok[] = {1, 2, 3, 4};
    size_t size;
    Dataset d;
    unsigned char *img;

    img = make_shard(tok, 4, 5, 20240520, 1, &size); /* header says 5, file has 4 */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1);
    CHECKF(strstr(err, "truncated: header says 5 tokens (10 bytes), file has 8 bytes"), "%s", err);
    free(img);

    img = make_shard(tok, 4, 3, 20240520, 1, &size); /* header says 3, file has 4 */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "wrong size"));
    free(img);

    img = make_shard(tok, 4, 4, 20240520, 1, &size); /* cut in the middle of a token */
    write_bytes(path, img, size - 1);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "truncated"));
    write_bytes(path, img, 100); /* cut inside the header */
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "header alone"));
    write_bytes(path, img, 4); /* nothing but the magic */
    CHECK(data_load(&d, path, 256, err, sizeof err) == -1 && strstr(err, "header alone"));
    free(img);

    img = make_shard(tok, 4, 4, 20240520, 1, &size); /* token 4 >= vocab 4 */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 4, err, sizeof err) == -1);
    CHECKF(strstr(err, "token 4 at position 3 is outside the model's vocab (4)"), "%s", err);
    CHECK(data_load(&d, path, 5, err, sizeof err) == 0 && d.n == 4);
    data_free(&d);
    free(img);

    img = make_shard(tok, 4, 4, 20240520, 7, &size); /* llama-3 style version */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "version 7"));
    free(img);

    img = make_shard(tok, 0, 0, 20240520, 1, &size); /* no tokens */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "says 0 tokens"));
    free(img);

    img = make_shard(tok, 4, -4, 20240520, 1, &size); /* negative count */
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "says -4 tokens"));
    free(img);
    CHECK(d.tokens == NULL && d.n == 0);
}

/* 4. A text file for a model whose vocab is not bytes is refused, saying why. */
static void text_needs_byte_vocab(void)
{
    char path[512], err[512], expect[700];
    path_in(path, sizeof path, "text.txt");
    CHECK(write_bytes(path, "hello", 5) == 0);
    Dataset d;
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1);
    snprintf(expect, sizeof expect, "%s is not an llm.c token shard (magic 20240520), a .npy or a .bin of "
             "token ids, and the model's vocab is 50257, not 256 bytes", path);
    CHECKF(strcmp(err, expect) == 0, "%s", err);
    /* A shard with a different magic (llama-3's 20240801) is not a shard either. */
    static const uint16_t tok[] = {1};
    size_t size;
    unsigned char *img = make_shard(tok, 1, 1, 20240801, 7, &size);
    write_bytes(path, img, size);
    CHECK(data_load(&d, path, 50257, err, sizeof err) == -1 && strstr(err, "not an llm.c"));
    free(img);
}

/* 5. The split: 10% validation, at least T+1, at most everything. */
static void split_sizes(void)
{
    Dataset d = counting(1000);
    DataStream tr, va;
    data_split(&d, 8, &tr, &va);
    CHECK(tr.n == 900 && va.n == 100 && tr.pos == 0 && va.pos == 0);
    CHECK(tr.tokens == d.tokens && va.tokens == d.tokens + 900 && va.tokens[0] == 1000);
    data_split(&d, 127, &tr, &va); /* 10% = 100 < 128 */
    CHECK(tr.n == 872 && va.n == 128);
    char err[512];
    CHECK(data_check_split(&d, 127, err, sizeof err) == 0);
    CHECK(data_check_split(&d, 499, err, sizeof err) == 0); /* exactly 2 x 500 */
    CHECK(data_check_split(&d, 500, err, sizeof err) == -1);
    CHECKF(strstr(err, "counting: 1000 tokens; sequence length 500 needs at least 1002"), "%s",
           err);
    data_split(&d, 2000, &tr, &va); /* more than everything: all validation, no crash */
    CHECK(tr.n == 0 && va.n == 1000);
    data_free(&d);
    d = counting(25);
    data_split(&d, 1, &tr, &va); /* 10% = 2 = T+1 */
    CHECK(tr.n == 23 && va.n == 2);
    data_free(&d);
}

/* 6. Batch windows: B=2, T=3 on tokens 100..119 (n=20). Each sequence is 4
 * consecutive tokens, the next sequence starts 3 later:
 *   batch 1: 100 101 102 | 103 104 105   targets 101 102 103 | 104 105 106  pos -> 6
 *   batch 2: 106 107 108 | 109 110 111   targets 107 .. 109 | 110 .. 112   pos -> 12
 *   batch 3: 112 113 114 | 115 116 117   targets 113 .. 115 | 116 .. 118   pos -> 18,
 *            but [18, 22) runs past 20, so pos -> 0
 *   batch 4 = batch 1. */
static void batch_windows(void)
{
    Dataset d = counting(20);
    DataStream s = {d.tokens, d.n, 0};
    static const int32_t in_expect[3][6] = {{100, 101, 102, 103, 104, 105},
                                            {106, 107, 108, 109, 110, 111},
                                            {112, 113, 114, 115, 116, 117}};
    static const int64_t pos_expect[3] = {6, 12, 0};
    int32_t in[6], tg[6];
    for (int k = 0; k < 4; k++) {
        data_next_batch(&s, 2, 3, in, tg);
        for (int i = 0; i < 6; i++) {
            CHECKF(in[i] == in_expect[k % 3][i], "batch %d input %d is %d", k + 1, i, in[i]);
            CHECKF(tg[i] == in_expect[k % 3][i] + 1, "batch %d target %d is %d", k + 1, i, tg[i]);
        }
        if (k < 3)
            CHECKF(s.pos == pos_expect[k], "after batch %d pos is %lld", k + 1, (long long)s.pos);
    }
    /* Resuming from a saved pos gives the same batch as running on. */
    DataStream r = {d.tokens, d.n, 12};
    int32_t in2[6], tg2[6];
    data_next_batch(&r, 2, 3, in2, tg2);
    CHECK(memcmp(in2, in_expect[2], sizeof in2) == 0 && r.pos == 0);
    data_free(&d);
}

/* 7. Wrap inside a batch: B=2, T=3 on tokens 100..110 (n=11).
 *   batch 1 from 0: [0,4) [3,7)          -> pos 6 ([6,10) fits)
 *   batch 2 from 6: [6,10), then [9,13) runs past 11, so the second sequence
 *            is [0,4)                     -> pos 3
 *   batch 3 from 3: [3,7) [6,10)         -> pos 9, [9,13) does not fit -> 0
 * A stream shorter than one window repeats its tokens instead of reading
 * past them; an empty one gives zeros. */
static void batch_wrap_inside(void)
{
    Dataset d = counting(11);
    DataStream s = {d.tokens, d.n, 0};
    int32_t in[6], tg[6];
    data_next_batch(&s, 2, 3, in, tg);
    CHECK(s.pos == 6);
    data_next_batch(&s, 2, 3, in, tg);
    static const int32_t e2[6] = {106, 107, 108, 100, 101, 102};
    static const int32_t t2[6] = {107, 108, 109, 101, 102, 103};
    CHECK(memcmp(in, e2, sizeof in) == 0 && memcmp(tg, t2, sizeof tg) == 0);
    CHECKF(s.pos == 3, "pos %lld", (long long)s.pos);
    data_next_batch(&s, 2, 3, in, tg);
    static const int32_t e3[6] = {103, 104, 105, 106, 107, 108};
    CHECK(memcmp(in, e3, sizeof in) == 0 && tg[5] == 109 && s.pos == 0);
    /* A corrupt saved pos (past the end, negative) restarts at 0. */
    s.pos = 1000;
    data_next_batch(&s, 1, 3, in, tg);
    CHECK(in[0] == 100 && s.pos == 3);
    s.pos = -5;
    data_next_batch(&s, 1, 3, in, tg);
    CHECK(in[0] == 100 && s.pos == 3);
    /* Degenerate streams. */
    DataStream tiny = {d.tokens, 2, 0};
    data_next_batch(&tiny, 1, 3, in, tg);
    CHECK(in[0] == 100 && in[1] == 101 && in[2] == 100 && tg[2] == 101 && tiny.pos == 0);
    DataStream none = {NULL, 0, 0};
    data_next_batch(&none, 2, 3, in, tg);
    CHECK(in[0] == 0 && tg[5] == 0 && none.pos == 0);
    data_free(&d);
}

/* Cross-entropy (nats/token) on the last 10% of d of a bigram model counted on
 * the first 90%, add-alpha smoothed: what a model that has only learned
 * "which token follows which" would score. */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static size_t lower_bound(const uint64_t *k, size_t n, uint64_t v)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (k[mid] < v)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static double heldout_bigram_nats(const Dataset *d)
{
    int64_t ntr = d->n * 9 / 10;
    uint64_t *k = malloc((size_t)ntr * sizeof *k);
    if (!k)
        return 1e9;
    for (int64_t i = 0; i + 1 < ntr; i++)
        k[i] = (uint64_t)d->tokens[i] << 32 | (uint32_t)d->tokens[i + 1];
    size_t nk = (size_t)ntr - 1;
    qsort(k, nk, sizeof *k, cmp_u64);
    double alpha = 0.01, total = 0;
    for (int64_t i = ntr; i + 1 < d->n; i++) {
        uint64_t prev = (uint64_t)d->tokens[i] << 32;
        uint64_t pair = prev | (uint32_t)d->tokens[i + 1];
        double c_pair = (double)(lower_bound(k, nk, pair + 1) - lower_bound(k, nk, pair));
        double c_prev = (double)(lower_bound(k, nk, prev + (1ull << 32)) - lower_bound(k, nk, prev));
        total -= log((c_pair + alpha) / (c_prev + alpha * d->vocab));
    }
    free(k);
    return total / (double)(d->n - 1 - ntr);
}

/* 8. The synthetic corpus: same seed same tokens, another seed other tokens,
 * every token below vocab, a longer corpus extends a shorter one. */
static void synthetic_deterministic(void)
{
    Dataset a, b, c, e;
    data_synthetic(&a, 5000, 50257, 42);
    data_synthetic(&b, 5000, 50257, 42);
    data_synthetic(&c, 5000, 50257, 43);
    data_synthetic(&e, 1234, 50257, 42);
    CHECK(a.n == 5000 && a.is_synthetic && a.vocab == 50257);
    CHECK(strcmp(a.source, "synthetic(seed=42)") == 0);
    CHECK(memcmp(a.tokens, b.tokens, 5000 * sizeof *a.tokens) == 0);
    int differ = 0;
    for (int i = 0; i < 5000; i++)
        differ += a.tokens[i] != c.tokens[i];
    CHECKF(differ > 4000, "seeds 42 and 43 share %d of 5000 tokens", 5000 - differ);
    CHECK(memcmp(a.tokens, e.tokens, 1234 * sizeof *a.tokens) == 0);
    int below = 1;
    for (int i = 0; i < 5000; i++)
        below &= a.tokens[i] >= 0 && a.tokens[i] < 50257;
    CHECK(below);
    data_free(&a), data_free(&b), data_free(&c), data_free(&e);
    data_synthetic(&a, 100, 1, 0); /* a 1-token vocab is all zeros */
    CHECK(a.n == 100 && a.tokens[0] == 0 && a.tokens[99] == 0);
    data_free(&a);
    data_synthetic(&a, 0, 256, 0);
    CHECK(a.n == 0 && a.tokens == NULL);
}

/* 9. The synthetic corpus is learnable: a bigram model fitted on 90% of it
 * scores under a third of log(vocab) on the rest, for a byte vocab and a
 * GPT-2 vocab; uniform random tokens, the control, stay near log(vocab).
 * (A transformer also learns the in-phrase contexts a bigram cannot see, so
 * this bounds how far its loss falls from above.) */
static void synthetic_learnable(void)
{
    static const int vocabs[2] = {256, 50257};
    for (int v = 0; v < 2; v++) {
        Dataset d;
        data_synthetic(&d, 200000, vocabs[v], 1);
        double h = heldout_bigram_nats(&d), logv = log((double)vocabs[v]);
        CHECKF(h < logv / 3, "vocab %d: held-out bigram loss %.3f nats, log(V) = %.3f", vocabs[v], h,
               logv);
        uint64_t st = 7;
        for (int64_t i = 0; i < d.n; i++)
            d.tokens[i] = (int32_t)rng_below(&st, (uint32_t)vocabs[v]);
        double hr = heldout_bigram_nats(&d);
        CHECKF(hr > 0.9 * logv, "vocab %d: random control scores %.3f nats", vocabs[v], hr);
        data_free(&d);
    }
}

/* 10. The RNG: a fixed first value (splitmix64 from 0 is a published
 * constant), uniform in [0,1), normal with mean ~0 and variance ~1 (10^5
 * draws: standard errors 0.003 and 0.0045; bounds are ~6 sigma). */
static void rng_ranges(void)
{
    uint64_t s = 0;
    CHECK(rng_next(&s) == 0xE220A8397B1DCDAFull);
    s = 123;
    double sum = 0, sq = 0, umin = 1, umax = 0;
    for (int i = 0; i < 100000; i++) {
        float u = rng_uniform(&s);
        umin = u < umin ? u : umin;
        umax = u > umax ? u : umax;
        CHECK(u >= 0.0f && u < 1.0f);
        float z = rng_normal(&s);
        CHECK(isfinite(z));
        sum += z, sq += (double)z * z;
    }
    CHECK(umin < 0.001 && umax > 0.999);
    double mean = sum / 100000, var = sq / 100000 - mean * mean;
    CHECKF(fabs(mean) < 0.02 && fabs(var - 1) < 0.03, "mean %.4f var %.4f", mean, var);
    uint64_t t = 5;
    int hist[10] = {0}, ok = 1;
    for (int i = 0; i < 100000; i++)
        hist[rng_below(&t, 10)]++;
    for (int i = 0; i < 10; i++)
        ok &= hist[i] > 9500 && hist[i] < 10500; /* 10000 +- 5.3 sigma */
    CHECK(ok);
}

int main(void)
{
    if (check_tmpdir_make(tmpdir, sizeof tmpdir, "test_data"))
        return 1;
    RUN_CASE(text_file_as_bytes);
    RUN_CASE(shard_read_back);
    RUN_CASE(bad_shards_refused);
    RUN_CASE(text_needs_byte_vocab);
    RUN_CASE(split_sizes);
    RUN_CASE(batch_windows);
    RUN_CASE(batch_wrap_inside);
    RUN_CASE(synthetic_deterministic);
    RUN_CASE(synthetic_learnable);
    RUN_CASE(rng_ranges);
    check_tmpdir_remove(tmpdir);
    CHECK_EXIT();
}
