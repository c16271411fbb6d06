/* test_safetensors.c: pins runtime/safetensors.c: what st_write puts on disk,
 * byte for byte; that st_read gives it back; and that st_read refuses every
 * malformed file it is shown, with a message, without reading outside the
 * file (run under ASan to make "never crash" mean "never touch a wrong byte").
 *
 * Malformed files come three ways: every prefix of a good file (truncation),
 * every header byte of a good file flipped (corruption: a flip may still parse,
 * and then the result must be self-consistent), and hand-written headers, one
 * per rule, each with the part of the message it must produce.
 *
 * Files live in a fresh directory under $TMPDIR (or /tmp), removed at the end.
 */
#include "check.h"
#include "safetensors.h"

#include <dirent.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

/* The whole of a file, malloc'ed; NULL if it cannot be read. */
static unsigned char *read_bytes(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long len = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *p = malloc(len > 0 ? (size_t)len : 1);
    *n = p ? fread(p, 1, (size_t)len, fp) : 0;
    fclose(fp);
    return p;
}

/* A file made of a hand-written header and datalen bytes of data (0, 1, 2...). */
static int write_raw(const char *path, const char *json, size_t datalen)
{
    size_t hl = strlen(json);
    unsigned char *p = malloc(8 + hl + datalen);
    if (!p)
        return -1;
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(p + 8, json, hl);
    for (size_t i = 0; i < datalen; i++)
        p[8 + hl + i] = (unsigned char)i;
    int rc = write_bytes(path, p, 8 + hl + datalen);
    free(p);
    return rc;
}

/* Entries of tmpdir whose name contains ".tmp." (leftover temporary files). */
static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        if (strstr(e->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}

/* Whatever st_read accepted must hold together: known dtype, at most 4 dims,
 * nbytes = product(shape) x size, every data byte readable, st_find finds
 * each name. Returns 0 if so. */
static volatile unsigned sink; /* keeps the data reads from being optimised away */

static int self_consistent(const StFile *f)
{
    unsigned sum = 0;
    for (int i = 0; i < st_count(f); i++) {
        const StTensor *t = st_at(f, i);
        size_t elem = st_dtype_size(t->dtype);
        if (!elem || t->ndim < 0 || t->ndim > ST_MAX_DIMS)
            return -1;
        uint64_t n = elem;
        for (int d = 0; d < t->ndim; d++)
            n *= (uint64_t)t->shape[d];
        if (n != t->nbytes || st_find(f, t->name) != t)
            return -1;
        for (size_t k = 0; k < t->nbytes; k++)
            sum += ((const unsigned char *)t->data)[k]; /* ASan checks these reads */
    }
    for (int i = 0; i < st_meta_count(f); i++)
        if (!st_meta(f, st_meta_at(f, i)->key))
            return -1;
    sink += sum;
    return 0;
}

/* A small file with two tensors and metadata, the subject of the
 * truncation and corruption sweeps. */
static const float small_w[6] = {1, 2, 3, 4, 5, 6};
static const uint8_t small_b[3] = {7, 8, 9};

static int write_small(const char *path, char *err, size_t errlen)
{
    StTensor t[2] = {
        {.name = "w", .dtype = "F32", .ndim = 2, .shape = {2, 3}, .data = small_w, .nbytes = 24},
        {.name = "b", .dtype = "U8", .ndim = 1, .shape = {3}, .data = small_b, .nbytes = 3},
    };
    StMeta m[1] = {{"step", "12"}};
    return st_write(path, t, 2, m, 1, err, errlen);
}

/* ---- cases ------------------------------------------------------------------------- */

/* 1. Several dtypes, a scalar, an empty tensor, an odd-sized one, metadata
 * with characters that need escaping: everything comes back as written. */
static void round_trip(void)
{
    char path[512], err[512] = "";
    path_in(path, sizeof path, "rt.safetensors");
    float f32[6] = {1.5f, -2, 3, 4, 5, 6e-8f};
    uint16_t bf16[4] = {0x3F80, 0xBF80, 0x7F80, 0x0001};
    uint8_t u8[3] = {1, 2, 255};
    int64_t i64 = -42;
    uint8_t e4m3[4] = {0x38, 0xB8, 0x7E, 0x01};
    double f64[2] = {1e300, -0.25};
    int32_t i32[2] = {7, -7};
    StTensor t[] = {
        {.name = "blocks.0.attn.q_proj.weight", .dtype = "F32", .ndim = 2, .shape = {2, 3},
         .data = f32, .nbytes = sizeof f32},
        {.name = "bf", .dtype = "BF16", .ndim = 1, .shape = {4}, .data = bf16, .nbytes = 8},
        {.name = "bytes", .dtype = "U8", .ndim = 3, .shape = {1, 3, 1}, .data = u8, .nbytes = 3},
        {.name = "step", .dtype = "I64", .ndim = 0, .data = &i64, .nbytes = 8},
        {.name = "empty", .dtype = "F32", .ndim = 2, .shape = {0, 5}, .data = NULL, .nbytes = 0},
        {.name = "q8", .dtype = "F8_E4M3", .ndim = 4, .shape = {1, 1, 2, 2}, .data = e4m3,
         .nbytes = 4},
        {.name = "d", .dtype = "F64", .ndim = 1, .shape = {2}, .data = f64, .nbytes = 16},
        {.name = "n\u00e9\"q\\", .dtype = "I32", .ndim = 1, .shape = {2}, .data = i32, .nbytes = 8},
    };
    int nt = (int)(sizeof t / sizeof t[0]);
    StMeta m[] = {{"format", "pt"}, {"note", "tab\there \"quoted\" back\\slash\nnewline \x01 \u00fc"}};
    CHECKF(st_write(path, t, nt, m, 2, err, sizeof err) == 0, "%s", err);
    StFile *f = st_read(path, err, sizeof err);
    CHECKF(f != NULL, "%s", err);
    if (!f)
        return;
    CHECK(st_count(f) == nt);
    for (int i = 0; i < nt && i < st_count(f); i++) {
        const StTensor *r = st_at(f, i);
        CHECKF(strcmp(r->name, t[i].name) == 0, "tensor %d is named %s", i, r->name);
        CHECK(strcmp(r->dtype, t[i].dtype) == 0);
        CHECK(r->ndim == t[i].ndim);
        for (int d = 0; d < t[i].ndim; d++)
            CHECK(r->shape[d] == t[i].shape[d]);
        CHECK(r->nbytes == t[i].nbytes);
        CHECK(t[i].nbytes == 0 || memcmp(r->data, t[i].data, t[i].nbytes) == 0);
        CHECK(st_find(f, t[i].name) == r);
    }
    CHECK(st_find(f, "missing") == NULL);
    CHECK(st_at(f, nt) == NULL && st_at(f, -1) == NULL);
    CHECK(st_meta(f, "format") && strcmp(st_meta(f, "format"), "pt") == 0);
    CHECK(st_meta(f, "note") && strcmp(st_meta(f, "note"), m[1].value) == 0);
    CHECK(st_meta(f, "absent") == NULL);
    CHECK(st_meta_count(f) == 2);
    st_free(f);
    struct stat sb;
    CHECK(stat(path, &sb) == 0 && (sb.st_mode & 0777) == 0644);
    CHECK(count_temp_files(tmpdir) == 0);
}

/* 2. The exact bytes of a tiny file: compact JSON like serde_json writes it,
 * tensors in the order given, the header padded with spaces to 88 = 11 x 8. */
static void header_bytes_exact(void)
{
    char path[512], err[512] = "";
    path_in(path, sizeof path, "exact.safetensors");
    float a[2] = {1.0f, 2.0f};
    StTensor t = {.name = "a", .dtype = "F32", .ndim = 1, .shape = {2}, .data = a, .nbytes = 8};
    StMeta m = {"format", "pt"};
    static const char expect[] =
        "\x58" "\0\0\0\0\0\0\0" /* 88 */
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}   "
        "\0\0\x80\x3f" "\0\0\0\x40"; /* 1.0f 2.0f */
    CHECKF(st_write(path, &t, 1, &m, 1, err, sizeof err) == 0, "%s", err);
    size_t n = 0;
    unsigned char *got = read_bytes(path, &n);
    CHECK(got != NULL);
    CHECKF(n == sizeof expect - 1, "file is %zu bytes, expected %zu", n, sizeof expect - 1);
    CHECKF(got && n == sizeof expect - 1 && memcmp(got, expect, n) == 0, "bytes differ: %.*s",
           (int)(n > 8 ? n - 8 : 0), got ? (const char *)got + 8 : "");
    free(got);

    /* No metadata: no "__metadata__" key at all; a scalar has shape []. */
    int64_t s = 3;
    StTensor sc = {.name = "s", .dtype = "I64", .ndim = 0, .data = &s, .nbytes = 8};
    static const char expect2[] = "\x38" "\0\0\0\0\0\0\0" /* 56 */
                                  "{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}   "
                                  "\x03\0\0\0\0\0\0\0";
    CHECKF(st_write(path, &sc, 1, NULL, 0, err, sizeof err) == 0, "%s", err);
    got = read_bytes(path, &n);
    CHECK(got && n == sizeof expect2 - 1 && memcmp(got, expect2, n) == 0);
    free(got);
}

/* 3. Every proper prefix of a good file is refused with a message. */
static void truncated_every_length(void)
{
    char path[512], cut[512], err[512] = "";
    path_in(path, sizeof path, "small.safetensors");
    path_in(cut, sizeof cut, "cut.safetensors");
    CHECKF(write_small(path, err, sizeof err) == 0, "%s", err);
    size_t n = 0;
    unsigned char *all = read_bytes(path, &n);
    CHECK(all && n > 8);
    for (size_t len = 0; all && len < n; len++) {
        err[0] = 0;
        CHECK(write_bytes(cut, all, len) == 0);
        StFile *f = st_read(cut, err, sizeof err);
        CHECKF(f == NULL, "prefix of %zu bytes accepted", len);
        CHECKF(err[0] != 0, "prefix of %zu bytes refused without a message", len);
        st_free(f);
    }
    /* The message says what is missing. */
    if (all) {
        write_bytes(cut, all, n - 1);
        st_free(st_read(cut, err, sizeof err));
        CHECKF(strstr(err, "truncated: header says 27 bytes of data, file has 26"), "%s", err);
    }
    free(all);
    StFile *f = st_read(path, err, sizeof err);
    CHECKF(f && self_consistent(f) == 0, "%s", err);
    st_free(f);
}

/* 4. Each byte of the length and the header flipped with several masks: the
 * file is refused with a message or reads back self-consistent. */
static void corrupt_header_bytes(void)
{
    static const unsigned char masks[] = {0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xFF};
    char path[512], bad[512], err[512] = "";
    path_in(path, sizeof path, "small.safetensors");
    path_in(bad, sizeof bad, "bad.safetensors");
    CHECKF(write_small(path, err, sizeof err) == 0, "%s", err);
    size_t n = 0;
    unsigned char *all = read_bytes(path, &n);
    CHECK(all && n > 8);
    if (!all)
        return;
    size_t hdr_end = 8 + (size_t)all[0];
    int accepted = 0;
    for (size_t i = 0; i < hdr_end && i < n; i++) {
        for (size_t k = 0; k < sizeof masks; k++) {
            all[i] ^= masks[k];
            err[0] = 0;
            CHECK(write_bytes(bad, all, n) == 0);
            StFile *f = st_read(bad, err, sizeof err);
            if (f) {
                accepted++;
                CHECKF(self_consistent(f) == 0, "byte %zu ^ 0x%02x: inconsistent", i, masks[k]);
            } else {
                CHECKF(err[0] != 0, "byte %zu ^ 0x%02x: refused without a message", i, masks[k]);
            }
            st_free(f);
            all[i] ^= masks[k];
        }
    }
    /* Flips inside names and the metadata value still parse ("w" -> "v"). */
    CHECKF(accepted > 0, "no flip parsed; the sweep never exercised the accept path");
    free(all);
}

/* 5. One hand-written header per rule, with the message each must produce. */
static void bad_headers_refused(void)
{
    static const struct {
        const char *what, *json;
        size_t datalen;
        const char *msg;
    } cases[] = {
        {"overlap",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
         "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
         6, "\"a\" [0, 4] and \"b\" [2, 6] overlap"},
        {"past the end", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4,
         "truncated: header says 8 bytes of data, file has 4"},
        {"bad dtype", "{\"a\":{\"dtype\":\"F7\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
         "unknown dtype \"F7\""},
        {"shape/size mismatch", "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}",
         8, "dtype F32 and shape [3] need 12 bytes, but data_offsets [0, 8] span 8"},
        {"duplicate name",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
         "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
         2, "tensor name \"a\" appears twice"},
        {"gap",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4,
         "data bytes [0, 2) belong to no tensor"},
        {"trailing data", "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5,
         "3 bytes after the last tensor"},
        {"reversed offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,0]}}", 2,
         "end before they begin"},
        {"5 dims", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1],\"data_offsets\":[0,1]}}", 1,
         "shape has 5 dimensions"},
        {"negative dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}}", 1,
         "negative number"},
        {"fraction", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1.0],\"data_offsets\":[0,1]}}", 1,
         "fraction or exponent"},
        {"huge dim", "{\"a\":{\"dtype\":\"U8\",\"shape\":[99999999999999999999],"
                     "\"data_offsets\":[0,1]}}", 1, "number too large"},
        {"shape overflow",
         "{\"a\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,1]}}",
         1, "is too large"},
        {"leading zero", "{\"a\":{\"dtype\":\"U8\",\"shape\":[01],\"data_offsets\":[0,1]}}", 1,
         "leading zero"},
        {"missing field", "{\"a\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1,
         "missing \"shape\""},
        {"unknown field",
         "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":[]}}", 1,
         "unknown field \"x\""},
        {"three offsets", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,1]}}", 1,
         "data_offsets has 3 numbers"},
        {"junk after JSON", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}} x",
         1, "unexpected bytes after"},
        {"not an object", "[1,2]", 0, "expected '{'"},
        {"unclosed string", "{\"a", 0, "is not closed"},
        {"unclosed object", "{\"a\":{\"dtype\":\"U8\"", 0, "found the end of the header"},
        {"lone surrogate",
         "{\"\\ud800\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "without its low half"},
        {"NUL escape", "{\"a\\u0000\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
         1, "\\u0000"},
        {"bad UTF-8", "{\"a\xC0\xAF\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "not valid UTF-8"},
        {"raw control char", "{\"a\tb\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
         1, "control character 0x09"},
        {"bad escape", "{\"a\\q\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
         "unknown escape '\\q'"},
        {"metadata not string", "{\"__metadata__\":{\"k\":1}}", 0, "value must be a string"},
        {"metadata twice", "{\"__metadata__\":{},\"__metadata__\":{}}", 0, "given twice"},
        {"metadata key twice", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0,
         "metadata key \"k\" appears twice"},
        {"tensor not object", "{\"a\":[]}", 0, "expected an object"},
        {"trailing comma", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},}", 1,
         "expected a string"},
        {"true literal", "{\"a\":{\"dtype\":true}}", 0, "expected a string"},
        {"tiny header", "{", 0, "header length is 1"},
    };
    char path[512], err[512];
    path_in(path, sizeof path, "raw.safetensors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        CHECK(write_raw(path, cases[i].json, cases[i].datalen) == 0);
        StFile *f = st_read(path, err, sizeof err);
        CHECKF(f == NULL, "%s: accepted", cases[i].what);
        CHECKF(strstr(err, cases[i].msg) != NULL, "%s: message \"%s\" lacks \"%s\"", cases[i].what,
               err, cases[i].msg);
        CHECKF(strncmp(err, path, strlen(path)) == 0, "%s: message lacks the path: %s",
               cases[i].what, err);
        st_free(f);
    }
    /* The good versions of the same shapes are accepted: the rules are not over-strict. */
    static const char *good[] = {
        "{}",
        " {\"__metadata__\":{}}\n\t ",
        "{\"z\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[2,2]},"
        "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]},"
        "\"a\":{\"shape\":[2],\"data_offsets\":[0,2],\"dtype\":\"U8\"}}",
        "{\"\\u00e9\\ud83d\\ude00\\/\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
    };
    static const size_t good_len[] = {0, 0, 4, 1};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        CHECK(write_raw(path, good[i], good_len[i]) == 0);
        StFile *f = st_read(path, err, sizeof err);
        CHECKF(f != NULL, "good header %zu refused: %s", i, err);
        CHECK(!f || self_consistent(f) == 0);
        if (i == 2 && f) {
            CHECK(st_count(f) == 3 && strcmp(st_at(f, 0)->name, "z") == 0);
            CHECK(st_find(f, "a") && ((const unsigned char *)st_find(f, "a")->data)[1] == 1);
            CHECK(st_find(f, "b") && ((const unsigned char *)st_find(f, "b")->data)[0] == 2);
        }
        if (i == 3 && f)
            CHECK(strcmp(st_at(f, 0)->name, "\xC3\xA9\xF0\x9F\x98\x80/") == 0);
        st_free(f);
    }
    /* Not a file at all. */
    CHECK(st_read(tmpdir, err, sizeof err) == NULL && strstr(err, "not a regular file"));
    path_in(path, sizeof path, "does-not-exist");
    CHECK(st_read(path, err, sizeof err) == NULL && strstr(err, "cannot open"));
}

/* 6. st_write refuses what it could not write as a valid file. */
static void bad_write_args_refused(void)
{
    char path[512], err[512];
    path_in(path, sizeof path, "never.safetensors");
    float x[2] = {0};
    StTensor ok = {.name = "x", .dtype = "F32", .ndim = 1, .shape = {2}, .data = x, .nbytes = 8};
    StTensor t[2] = {ok, ok};
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "appears twice"));
    t[1].name = "__metadata__";
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "reserved"));
    t[1] = ok, t[1].name = "y", t[1].dtype = "F7";
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "unknown dtype"));
    t[1] = ok, t[1].name = "y", t[1].nbytes = 4;
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "need 8"));
    t[1] = ok, t[1].name = "y", t[1].ndim = 5;
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "ndim 5"));
    t[1] = ok, t[1].name = "\xFF";
    CHECK(st_write(path, t, 2, NULL, 0, err, sizeof err) == -1 && strstr(err, "UTF-8"));
    StMeta m[2] = {{"k", "1"}, {"k", "2"}};
    CHECK(st_write(path, &ok, 1, m, 2, err, sizeof err) == -1 && strstr(err, "appears twice"));
    CHECK(access(path, F_OK) != 0);
    CHECK(count_temp_files(tmpdir) == 0);
}

/* 7. Atomic write: no temp file is left behind, success replaces the target,
 * and a failure at any stage (cannot create, write fails midway, rename
 * fails) leaves an existing target exactly as it was. */
static void atomic_write(void)
{
    char path[512], dir[512], err[512];
    path_in(path, sizeof path, "atomic.safetensors");
    CHECKF(write_small(path, err, sizeof err) == 0, "%s", err);
    size_t n0 = 0, n1 = 0;
    unsigned char *before = read_bytes(path, &n0);
    float x[2] = {0};
    StTensor t = {.name = "x", .dtype = "F32", .ndim = 1, .shape = {2}, .data = x, .nbytes = 8};

    /* (a) the directory does not exist: refused, nothing created. */
    char nodir[600];
    snprintf(nodir, sizeof nodir, "%s/no/such/dir/x.safetensors", tmpdir);
    CHECK(st_write(nodir, &t, 1, NULL, 0, err, sizeof err) == -1);
    CHECKF(strstr(err, "cannot create temporary file") && strstr(err, "No such file"), "%s", err);

    /* (b) the write fails midway: a file size limit below the tensor's size
     * makes write() fail with EFBIG (SIGXFSZ ignored so it is an error, not
     * a signal). */
    static float big[4096];
    StTensor tb = {.name = "big", .dtype = "F32", .ndim = 1, .shape = {4096}, .data = big,
                   .nbytes = sizeof big};
    struct rlimit old, lim;
    void (*oldsig)(int) = signal(SIGXFSZ, SIG_IGN);
    if (getrlimit(RLIMIT_FSIZE, &old) == 0) {
        lim = old;
        lim.rlim_cur = 1000;
        if (setrlimit(RLIMIT_FSIZE, &lim) == 0) {
            int rc = st_write(path, &tb, 1, NULL, 0, err, sizeof err);
            setrlimit(RLIMIT_FSIZE, &old);
            CHECKF(rc == -1 && strstr(err, "left as it was"), "rc %d: %s", rc, err);
        }
    }
    signal(SIGXFSZ, oldsig);
    unsigned char *after = read_bytes(path, &n1);
    CHECK(before && after && n0 == n1 && memcmp(before, after, n0) == 0);
    free(after);
    CHECK(count_temp_files(tmpdir) == 0);

    /* (c) the rename fails: the target is a non-empty directory. */
    path_in(dir, sizeof dir, "adir");
    char inner[600];
    snprintf(inner, sizeof inner, "%s/keep", dir);
    CHECK(mkdir(dir, 0755) == 0 && write_bytes(inner, "k", 1) == 0);
    CHECK(st_write(dir, &t, 1, NULL, 0, err, sizeof err) == -1 && strstr(err, "rename"));
    CHECK(count_temp_files(tmpdir) == 0);
    unlink(inner);
    rmdir(dir);

    /* (d) success replaces the target and leaves only it. */
    CHECKF(st_write(path, &t, 1, NULL, 0, err, sizeof err) == 0, "%s", err);
    after = read_bytes(path, &n1);
    CHECK(after && n1 == 8 + 56 + 8);
    free(after);
    CHECK(count_temp_files(tmpdir) == 0);
    free(before);
}

int main(void)
{
    if (check_tmpdir_make(tmpdir, sizeof tmpdir, "test_safetensors"))
        return 1;
    RUN_CASE(round_trip);
    RUN_CASE(header_bytes_exact);
    RUN_CASE(truncated_every_length);
    RUN_CASE(corrupt_header_bytes);
    RUN_CASE(bad_headers_refused);
    RUN_CASE(bad_write_args_refused);
    RUN_CASE(atomic_write);
    check_tmpdir_remove(tmpdir);
    CHECK_EXIT();
}
