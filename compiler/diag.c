/* diag.c: positioned diagnostics. Owns the table of source files so that every message can
 * print "file:line:col: error: ...", the offending source line and a caret under the column.
 * It prints to the FILE the caller chose and never exits. */
#include "fp8c.h"

#include <string.h>

void diag_init(Diag *d, FILE *out) {
    memset(d, 0, sizeof *d);
    d->out = out;
    d->max_errors = 20;
}

int diag_add_file(Diag *d, const char *name, const char *text, size_t len) {
    FP8C_ASSERT(d->nfiles < DIAG_MAX_FILES);
    d->files[d->nfiles] = (SrcFile){name, text, len};
    return d->nfiles++;
}

const char *diag_loc(const Diag *d, Mark m, int with_col, char *out, size_t n) {
    if (m.file < 0 || m.file >= d->nfiles) {
        out[0] = 0;
        return out;
    }
    if (with_col)
        snprintf(out, n, "%s:%d:%d", d->files[m.file].name, m.line, m.col);
    else
        snprintf(out, n, "%s:%d", d->files[m.file].name, m.line);
    return out;
}

/* Print the source line of m and a caret under its column. Tabs are kept so the caret lines up. */
static void show_line(Diag *d, Mark m) {
    if (m.file < 0 || m.file >= d->nfiles || m.line < 1) return;
    const SrcFile *f = &d->files[m.file];
    const char *p = f->text, *end = f->text + f->len;
    for (int line = 1; line < m.line && p < end; p++)
        if (*p == '\n') line++;
    if (p >= end && m.line > 1) return;
    const char *eol = p;
    while (eol < end && *eol != '\n' && *eol != '\r') eol++;
    int width = (int)(eol - p);
    if (width > 200) width = 200;
    fprintf(d->out, "  %.*s\n  ", width, p);
    for (int c = 1; c < m.col && c <= width; c++) fputc(p[c - 1] == '\t' ? '\t' : ' ', d->out);
    fputs("^\n", d->out);
}

static void vreport(Diag *d, Mark m, const char *kind, const char *hint, const char *fmt,
                    va_list ap) {
    char loc[512];
    diag_loc(d, m, 1, loc, sizeof loc);
    if (loc[0])
        fprintf(d->out, "%s: %s: ", loc, kind);
    else
        fprintf(d->out, "fp8c: %s: ", kind);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    show_line(d, m);
    if (hint) fprintf(d->out, "  hint: %s\n", hint);
}

void diag_error(Diag *d, Mark m, const char *hint, const char *fmt, ...) {
    d->errors++;
    if (d->errors > d->max_errors) {
        if (d->errors == d->max_errors + 1) fprintf(d->out, "fp8c: too many errors, stopping\n");
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vreport(d, m, "error", hint, fmt, ap);
    va_end(ap);
}

void diag_warn(Diag *d, Mark m, int strict_promotes, const char *hint, const char *fmt, ...) {
    int as_error = strict_promotes && d->strict;
    if (as_error)
        d->errors++;
    else
        d->warnings++;
    va_list ap;
    va_start(ap, fmt);
    vreport(d, m, as_error ? "error" : "warning", hint, fmt, ap);
    va_end(ap);
}

void diag_note(Diag *d, Mark m, const char *fmt, ...) {
    if (d->errors > d->max_errors) return;
    va_list ap;
    va_start(ap, fmt);
    vreport(d, m, "note", NULL, fmt, ap);
    va_end(ap);
}

void diag_plain(Diag *d, const char *fmt, ...) {
    d->errors++;
    va_list ap;
    va_start(ap, fmt);
    fputs("fp8c: error: ", d->out);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    va_end(ap);
}

void diag_warning_plain(Diag *d, const char *fmt, ...) {
    d->warnings++;
    va_list ap;
    va_start(ap, fmt);
    fputs("fp8c: warning: ", d->out);
    vfprintf(d->out, fmt, ap);
    fputc('\n', d->out);
    va_end(ap);
}
