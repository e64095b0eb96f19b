/*
 * upcast.c - old events read as the current schema version.
 *
 * An upcaster rewrites one event type's data from schema version n to
 * n + 1.  chorus__upcast() chains them until no step is registered for the
 * envelope's version, on every event a handler or an aggregate sees: from
 * the broker before the handler, from the event store before apply().  The
 * stored original (a row, a message) is never changed: the envelope being
 * upcast is the reader's copy.
 */
#include "chorus_int.h"

#include <stdlib.h>
#include <string.h>

chorus_err_t chorus_register_upcaster(chorus_t *ch, const char *event_type, int from_version,
                                      chorus_upcast_fn *fn, void *opaque) {
    if (!ch || !event_type || !fn || from_version < 1)
        return CHORUS_ERR_INVALID_ARG;
    if (ch->started)
        return CHORUS_ERR_STATE;
    for (size_t i = 0; i < ch->nupcasters; i++)
        if (ch->upcasters[i].from == from_version &&
            strcmp(ch->upcasters[i].event_type, event_type) == 0)
            return CHORUS_ERR_INVALID_ARG;
    chorus__upcaster_t *n = realloc(ch->upcasters, (ch->nupcasters + 1) * sizeof(*n));
    if (!n)
        return CHORUS_ERR_NOMEM;
    ch->upcasters = n;
    chorus__upcaster_t *u = &n[ch->nupcasters];
    if (!(u->event_type = chorus__strdup(event_type)))
        return CHORUS_ERR_NOMEM;
    u->from = from_version;
    u->fn = fn;
    u->opaque = opaque;
    ch->nupcasters++;
    return CHORUS_OK;
}

static const chorus__upcaster_t *find(const chorus_t *ch, const char *type, int from) {
    for (size_t i = 0; i < ch->nupcasters; i++)
        if (ch->upcasters[i].from == from && strcmp(ch->upcasters[i].event_type, type) == 0)
            return &ch->upcasters[i];
    return NULL;
}

chorus_err_t chorus__upcast(const chorus_t *ch, chorus_envelope_t *env, chorus_error_t **errp) {
    const chorus__upcaster_t *u;
    while ((u = find(ch, env->event_type, env->schema_version)) != NULL) {
        chorus_err_t rc = u->fn(env->data, u->from, u->opaque);
        /* The data changed in place: its cached text is stale. */
        free(env->data_json);
        env->data_json = NULL;
        if (rc)
            return chorus__error_set(errp, rc, "upcasting %s from schema version %d failed: %s",
                                     env->event_type, u->from, chorus_strerror(rc));
        if (!cJSON_IsObject(env->data))
            return chorus__error_set(errp, CHORUS_ERR_SCHEMA,
                                     "upcaster of %s from version %d left data that is not an "
                                     "object", env->event_type, u->from);
        env->schema_version++;
    }
    return CHORUS_OK;
}

void chorus__upcasters_free(chorus_t *ch) {
    for (size_t i = 0; i < ch->nupcasters; i++)
        free(ch->upcasters[i].event_type);
    free(ch->upcasters);
    ch->upcasters = NULL;
    ch->nupcasters = 0;
}

int chorus__upcast_newest(const chorus_t *ch, const char *event_type) {
    int newest = 1;
    for (size_t i = 0; i < ch->nupcasters; i++)
        if (strcmp(ch->upcasters[i].event_type, event_type) == 0 &&
            ch->upcasters[i].from + 1 > newest)
            newest = ch->upcasters[i].from + 1;
    return newest;
}
