/*
 * fuzz_common.h - what every libFuzzer harness of tests/fuzz shares.
 *
 * A harness checks invariants, not just "no crash": when one does not
 * hold it calls fuzz_fail(), which says which and why on stderr and
 * abort()s, so that libFuzzer records the input as a crash
 * (crash-<sha1>) like any sanitizer report.
 */
#ifndef CHORUS_FUZZ_COMMON_H
#define CHORUS_FUZZ_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chorus/chorus.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Prints "invariant violated: ..." on stderr and aborts. */
_Noreturn void fuzz_fail(const char *fmt, ...) CHORUS_PRINTF(1, 2);

/* fuzz_fail() unless @p cond, naming the condition and the line. */
#define FUZZ_CHECK(cond)                                                   \
    do {                                                                   \
        if (!(cond))                                                       \
            fuzz_fail("%s:%d: %s does not hold", __FILE__, __LINE__, #cond); \
    } while (0)

/* A heap copy of exactly @p size bytes (no terminator), so that ASan sees
 * any read past the end of the input. */
char *fuzz_exact_copy(const uint8_t *data, size_t size);
/* A NUL-terminated heap copy: the input up to its first NUL byte, as a C
 * string API sees it. */
char *fuzz_cstring(const uint8_t *data, size_t size);

/* An error message for people: NUL-terminated within @p size bytes and
 * not empty. */
bool fuzz_message_ok(const char *s, size_t size);
/* The same, and valid UTF-8 text (no NUL, no surrogate or noncharacter):
 * what messages that quote a decoded name must stay, however they cut it
 * (they end up in logs, in x-chorus-fault-error headers, in JSON). */
bool fuzz_text_message_ok(const char *s, size_t size);

#endif
