/* data.h: training data for the fp8c runtime: token files, a synthetic
 * corpus, the train/validation split and the batch stream.
 *
 * Owns: turning a file (or a seed) into one int32 token array, and the rule
 * that picks each batch's windows from it. The stream's position is one
 * integer, which checkpoints save so that a resumed run sees exactly the
 * batches an uninterrupted one would have.
 *
 * Must not: exit or print (errors are return codes plus a message in the
 * caller's buffer), or keep hidden state: every result is a function of the
 * file, the seed and the stream position.
 */
#ifndef FP8C_RUNTIME_DATA_H
#define FP8C_RUNTIME_DATA_H

#include <stddef.h>
#include <stdint.h>

#define DATA_SHARD_MAGIC 20240520 /* llm.c's GPT-2 token shard (dev/data/data_common.py) */
#define DATA_SHARD_VERSION 1      /* uint16 tokens after a 256 x int32 header */
#define DATA_SHARD_HEADER_BYTES 1024

typedef struct {
    int32_t *tokens;  /* (n) every token < vocab; owned, freed by data_free */
    int64_t n;
    int vocab;
    int is_synthetic; /* made by data_synthetic, not read from a file */
    char source[256]; /* the path, or "synthetic(seed=S)", for messages */
} Dataset;

/* Load path as tokens for a model with the given vocab:
 *   - a file starting with the llm.c shard magic must be a valid shard:
 *     header int32[256] little-endian = {20240520, 1, ntok, 0...}, then ntok
 *     uint16 tokens, the file exactly 1024 + 2 * ntok bytes, every token < vocab;
 *   - any other file is read as bytes (one token per byte) if vocab == 256;
 *   - otherwise it is refused.
 * An empty token list is refused too. Returns 0, or -1 with a message in err
 * and *d zeroed. */
int data_load(Dataset *d, const char *path, int vocab, char *err, size_t errlen);

/* A deterministic corpus of n tokens below vocab, from seed; the first k
 * tokens do not depend on n. The generator (see data.c) strings together 64
 * random phrases of 4..12 tokens, each phrase followed by one of two fixed
 * successors (3:1), so that a model learns it fast: unigram, then bigram,
 * then in-phrase copying take the loss from log(vocab) to ~0.1 nats/token.
 * vocab < 1 or n < 1, or an allocation failure, gives an empty dataset
 * (tokens NULL, n 0). */
void data_synthetic(Dataset *d, int64_t n, int vocab, uint64_t seed);

void data_free(Dataset *d); /* frees the tokens and zeroes *d */

/* A view of a range of a Dataset's tokens and the next batch's position. */
typedef struct {
    const int32_t *tokens; /* (n) not owned */
    int64_t n;
    int64_t pos;           /* where the next batch starts; saved in checkpoints */
} DataStream;

/* The last 10% of the tokens, but at least T+1 (one sequence) and at most
 * all of them, is validation; the rest is training. Both start at pos 0.
 * data_check_split says whether both halves hold a whole sequence. */
void data_split(const Dataset *d, int T, DataStream *train, DataStream *val);

/* 0 if d has at least 2 * (T+1) tokens (a training and a validation
 * sequence), else -1 with a message naming the source. */
int data_check_split(const Dataset *d, int T, char *err, size_t errlen);

/* The next batch: B sequences of T+1 tokens each, inputs (B,T) the first T
 * and targets (B,T) the last T (inputs shifted by one). Sequence b is the
 * window [p, p+T+1) with p = pos + b*T, except that a window that would run
 * past the end starts at 0 instead (and the following ones go on from there).
 * Afterwards pos has advanced by B*T (or past the wrap), and is itself reset
 * to 0 if the next window would not fit, so a saved pos always names a
 * window that fits. A stream shorter than T+1 (see data_check_split) does not
 * crash: its tokens are repeated cyclically, or zeros if it is empty. */
void data_next_batch(DataStream *s, int B, int T, int32_t *inputs, int32_t *targets);

#endif
