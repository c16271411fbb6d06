/* safetensors.h: reading and writing checkpoint files in the safetensors
 * format (https://github.com/huggingface/safetensors), so that fp8c's
 * checkpoints load in PyTorch/NumPy and Hugging Face weights load in fp8c.
 *
 * Layout: 8-byte little-endian header length N; N bytes of JSON
 *   {"__metadata__": {"key": "value", ...},
 *    "NAME": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}, ...}
 * padded with spaces to a multiple of 8; then the data buffer. Offsets are
 * relative to the start of the data buffer; the tensors tile it exactly, with
 * no gaps, no overlaps and nothing after the last one.
 *
 * Owns: the file format only. Must not: know about models, plans or devices;
 * exit or print. Every function reports failure through its return value and
 * a message written into the caller's err buffer, prefixed with the path.
 */
#ifndef FP8C_RUNTIME_SAFETENSORS_H
#define FP8C_RUNTIME_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 4 /* fp8c tensors have at most 4 dimensions */

/* One tensor. dtype is one of "F32" "BF16" "F16" "U8" "I32" "I64" "F64"
 * "F8_E4M3" "F8_E5M2" "F8_E8M0" "I8" "I16" "U16" "U32" "U64" "BOOL"; data is nbytes of little-endian elements, row-major.
 * A tensor read by st_read points into the StFile's buffer: its data is
 * aligned to its element size only if its data_offsets begin is a multiple
 * of it (st_write keeps the caller's order, so order tensors by element size,
 * largest first, to get aligned data back; otherwise memcpy). */
typedef struct {
    const char *name;
    const char *dtype;
    int ndim;               /* 0..ST_MAX_DIMS; 0 is a scalar */
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;          /* product(shape) x element size */
} StTensor;

typedef struct {
    const char *key;
    const char *value;
} StMeta;

/* Bytes per element of a dtype name, or 0 if fp8c does not know it. */
size_t st_dtype_size(const char *dtype);

/* Write nt tensors, in the given order, and nmeta metadata entries (nmeta 0:
 * no "__metadata__" object) to path, atomically: the file is written to
 * PATH.tmp.PID.XXXXXX in the same directory, flushed, fsync'ed and renamed over
 * path. On any failure the temporary file is removed and path is untouched.
 * Names must be unique, valid UTF-8 and not "__metadata__".
 * Returns 0, or -1 with a message in err. */
int st_write(const char *path, const StTensor *t, int nt, const StMeta *meta, int nmeta,
             char *err, size_t errlen);

/* A file read whole into memory and validated; opaque. */
typedef struct StFile StFile;

/* Read and validate path: the header is strict JSON of the layout above,
 * every dtype is known, every shape has at most ST_MAX_DIMS non-negative
 * dimensions, every tensor's data_offsets span exactly product(shape) x
 * element size bytes, the tensors tile the data buffer, the file ends where
 * the data does, names and metadata keys are unique. Returns NULL with a
 * message in err on any problem; never reads outside the file's bytes. */
StFile *st_read(const char *path, char *err, size_t errlen);
/* The same checks on size bytes in memory (copied; name is used in messages). */
StFile *st_parse(const void *data, size_t size, const char *name, char *err, size_t errlen);

/* st_read's checks on the header alone (the 8-byte length and the JSON), with the file's size
 * standing for its data: instant on multi-GB shards. Tensors have data NULL. */
StFile *st_read_header(const char *path, char *err, size_t errlen);

const StTensor *st_find(const StFile *f, const char *name); /* NULL if absent */
const char *st_meta(const StFile *f, const char *key);      /* NULL if absent */
int st_count(const StFile *f);                             /* tensors, in header order */
const StTensor *st_at(const StFile *f, int i);             /* NULL if i out of range */
int st_meta_count(const StFile *f);
const StMeta *st_meta_at(const StFile *f, int i);          /* NULL if i out of range */
void st_free(StFile *f);                                   /* NULL is fine */

#endif
