/*
 * log.c - the library's log lines.
 *
 * Every line carries the service; lines about an event also carry its
 * type, id and correlation id, so one saga can be followed with grep.  The
 * default writer prints "<time> <service> <level> <text>" to stderr; the
 * application may install its own (chorus_conf_set_log_cb).  Credentials are
 * never formatted into a line: URLs are logged as host:port/vhost only.
 */
#include "chorus_int.h"

#include <stdarg.h>

#include <stdio.h>
#include <string.h>

static const char *level_name(int level) {
    switch (level) {
    case CHORUS_LOG_ERR: return "ERROR";
    case CHORUS_LOG_WARNING: return "WARN";
    case CHORUS_LOG_NOTICE: return "NOTICE";
    case CHORUS_LOG_INFO: return "INFO";
    default: return "DEBUG";
    }
}

static int threshold(const chorus_t *ch) {
    static const char *const names[] = {"err", "warning", "notice", "info", "debug"};
    const char *v = chorus__conf_str(ch->conf, "log.level");
    for (int i = 0; i < 5; i++)
        if (strcmp(v, names[i]) == 0)
            return CHORUS_LOG_ERR + i;
    return CHORUS_LOG_INFO;
}

static void emit(const chorus_t *ch, int level, const char *line) {
    if (ch->conf->log_cb) {
        ch->conf->log_cb(level, ch->service, line, ch->conf->log_opaque);
        return;
    }
    char ts[25];
    chorus_format_timestamp(chorus_now_ms(), ts);
    fprintf(stderr, "%s %s %s %s\n", ts, ch->service, level_name(level), line);
}

void chorus__log(const chorus_t *ch, int level, const char *fmt, ...) {
    if (level > threshold(ch))
        return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    emit(ch, level, line);
}

void chorus__log_env(const chorus_t *ch, int level, const chorus_envelope_t *env,
                     const char *fmt, ...) {
    if (level > threshold(ch))
        return;
    char text[768], line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    if (env) {
        const char *corr = chorus_envelope_correlation_id(env);
        snprintf(line, sizeof(line), "%s [event_type=%s event_id=%s correlation_id=%s]",
                 text, chorus_envelope_event_type(env), chorus_envelope_event_id(env),
                 corr ? corr : "-");
    } else {
        snprintf(line, sizeof(line), "%s", text);
    }
    emit(ch, level, line);
}

/* Why something failed, kept for chorus_last_error(). */
void chorus__fail(chorus_t *ch, const char *sqlstate, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ch->last_error, sizeof(ch->last_error), fmt, ap);
    va_end(ap);
    snprintf(ch->last_sqlstate, sizeof(ch->last_sqlstate), "%s", sqlstate ? sqlstate : "");
}
