/* opnames.c: reads the op table's argument, int and float name lists (runtime/ops.h), shared
 * by the plan writer and the plan reader so both spell a step's fields the same way. */
#include "fp8c.h"

#include <string.h>

/* The i-th comma-separated item of list (after removing '|'), stripped of '+' and '?'. */
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
    while (flen && (*found == '+' || *found == '?')) found++, flen--;
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
