/*
 * error.c - error codes and error objects.
 *
 * The codes come from the one list CHORUS_ERRNO_MAP in chorus.h; the tables
 * here are generated from it, so a new code needs one line, there.  Error
 * objects add what a code cannot: the exact cause ("field 'version' must be
 * an integer") and whether retrying may help.
 */
#include "common_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const err_msgs[] = {
#define CHORUS__ERR_MSG(name, msg) msg,
    CHORUS_ERRNO_MAP(CHORUS__ERR_MSG)
#undef CHORUS__ERR_MSG
};

static const char *const err_names[] = {
#define CHORUS__ERR_NAME(name, msg) #name,
    CHORUS_ERRNO_MAP(CHORUS__ERR_NAME)
#undef CHORUS__ERR_NAME
};

const char *chorus_version(void) { return CHORUS_VERSION_STR; }

const char *chorus_strerror(chorus_err_t err) {
    if ((int)err < 0 || err >= CHORUS_ERR__END)
        return "unknown error";
    return err_msgs[err];
}

const char *chorus_err_name(chorus_err_t err) {
    if ((int)err < 0 || err >= CHORUS_ERR__END)
        return "UNKNOWN";
    return err_names[err];
}

static chorus_error_t *error_vnew(chorus_err_t code, bool retriable,
                                  const char *fmt, va_list ap) {
    chorus_error_t *e = calloc(1, sizeof(*e));
    if (!e)
        return NULL;
    e->code = code;
    e->retriable = retriable;
    if (fmt)
        vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    else
        snprintf(e->msg, sizeof(e->msg), "%s", chorus_strerror(code));
    return e;
}

chorus_error_t *chorus__error_new(chorus_err_t code, bool retriable,
                                  const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    chorus_error_t *e = error_vnew(code, retriable, fmt, ap);
    va_end(ap);
    return e;
}

chorus_err_t chorus__error_set(chorus_error_t **errp, chorus_err_t code,
                               const char *fmt, ...) {
    if (errp) {
        va_list ap;
        va_start(ap, fmt);
        *errp = error_vnew(code, false, fmt, ap);
        va_end(ap);
    }
    return code;
}

chorus_err_t chorus_error_code(const chorus_error_t *e) {
    return e ? e->code : CHORUS_OK;
}

const char *chorus_error_string(const chorus_error_t *e) {
    return e ? e->msg : chorus_strerror(CHORUS_OK);
}

int chorus_error_is_retriable(const chorus_error_t *e) {
    return e && e->retriable;
}

void chorus_error_destroy(chorus_error_t *e) { free(e); }

void chorus__errstr(char *errstr, size_t size, const char *fmt, ...) {
    if (!errstr || size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, size, fmt, ap);
    va_end(ap);
}

char *chorus__strdup(const char *s) {
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
