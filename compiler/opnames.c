/* opnames.c: reads the op table's argument, int and float name lists (runtime/ops.h), shared
 * by the plan writer and the plan reader so both spell a step's fields the same way. */
#include "fp8c.h"

#include <string.h>

#define MARKS "+?&~"

/* The i-th comma-separated item of list (after removing '|'), stripped of its marks. */
static const char *item(const char *list, int i, char *buf, size_t n, int *count) {
    int k = 0;
    const char *p = list;
    const char *found = NULL;
    size_t flen = 0;
    while (*p) {
        while (*p == '|' || *p == ',') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != ',' && *p != '|') p++;
        if (k == i) {
            found = start;
            flen = (size_t)(p - start);
        }
        k++;
    }
    if (count) *count = k;
    if (!found || !buf) return NULL;
    while (flen && strchr(MARKS, *found)) found++, flen--;
    if (flen >= n) flen = n - 1;
    memcpy(buf, found, flen);
    buf[flen] = 0;
    return buf;
}

int op_arg_count(OpKind op) {
    int c;
    item(fp8c_op_info[op].args, -1, NULL, 0, &c);
    return c;
}
const char *op_arg_name(OpKind op, int i, char *buf, size_t n) { return item(fp8c_op_info[op].args, i, buf, n, NULL); }
int op_int_count(OpKind op) {
    int c;
    item(fp8c_op_info[op].ints, -1, NULL, 0, &c);
    return c;
}
const char *op_int_name(OpKind op, int i, char *buf, size_t n) { return item(fp8c_op_info[op].ints, i, buf, n, NULL); }
int op_float_count(OpKind op) {
    int c;
    item(fp8c_op_info[op].floats, -1, NULL, 0, &c);
    return c;
}
const char *op_float_name(OpKind op, int i, char *buf, size_t n) { return item(fp8c_op_info[op].floats, i, buf, n, NULL); }

/* The marks of argument i (the characters before its name), "" if none. */
static void marks_of(OpKind op, int i, char *out, size_t n) {
    const char *p = fp8c_op_info[op].args;
    int k = 0;
    out[0] = 0;
    while (*p) {
        while (*p == '|' || *p == ',') p++;
        if (!*p) break;
        const char *start = p;
        while (*p && *p != ',' && *p != '|') p++;
        if (k++ == i) {
            size_t m = 0;
            while (start + m < p && strchr(MARKS, start[m]) && m + 1 < n) out[m] = start[m], m++;
            out[m] = 0;
            return;
        }
    }
}

int op_out_count(OpKind op) {
    int n = 1;
    for (const char *c = fp8c_op_info[op].args; *c && *c != '|'; c++) n += *c == ',';
    return n;
}

int op_arg_writes(OpKind op, int i) { return i >= 0 && i < op_out_count(op); }

int op_arg_reads(OpKind op, int i, const int64_t *ints) {
    if (i < 0 || i >= op_arg_count(op)) return 0;
    if (!op_arg_writes(op, i)) return 1;
    char m[8];
    marks_of(op, i, m, sizeof m);
    if (strchr(m, '+') || strchr(m, '&')) return 1;
    if (strchr(m, '~')) {
        char nm[32];
        for (int k = 0; k < op_int_count(op); k++)
            if (!strcmp(op_int_name(op, k, nm, sizeof nm), "accumulate")) return ints ? ints[k] != 0 : 1;
        return 1;
    }
    return 0;
}
