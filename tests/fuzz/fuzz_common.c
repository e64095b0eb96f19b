/* fuzz_common.c - helpers of the libFuzzer harnesses (fuzz_common.h). */
#include "fuzz_common.h"

#include "json_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    fputs("chorus fuzz: invariant violated: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

char *fuzz_exact_copy(const uint8_t *data, size_t size) {
    char *p = malloc(size ? size : 1);
    if (!p)
        fuzz_fail("out of memory copying %zu bytes", size);
    if (size)
        memcpy(p, data, size);
    return p;
}

char *fuzz_cstring(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t n = nul ? (size_t)(nul - data) : size;
    char *p = malloc(n + 1);
    if (!p)
        fuzz_fail("out of memory copying %zu bytes", n);
    if (n)
        memcpy(p, data, n);
    p[n] = '\0';
    return p;
}

bool fuzz_message_ok(const char *s, size_t size) {
    return s && size > 0 && memchr(s, '\0', size) != NULL && s[0] != '\0';
}

bool fuzz_text_message_ok(const char *s, size_t size) {
    return fuzz_message_ok(s, size) && chorus__json_text_ok(s, strlen(s), NULL);
}
