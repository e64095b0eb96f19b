/*
 * chorus-dlq: inspect and repair dead-lettered messages (scripts/dlq).
 *
 *   chorus-dlq [--json] [--namespace NS] [--saga FILE] list [SERVICE]
 *   chorus-dlq [--json] show SERVICE [--id EVENT_ID | --limit N]
 *   chorus-dlq [--json] requeue SERVICE (--id ID | --reason R | --event-type T | --all)
 *   chorus-dlq [--json] purge SERVICE (--id ID | --reason R | --event-type T | --all) --yes
 *   chorus-dlq export SERVICE > file.jsonl
 *   chorus-dlq import SERVICE < file.jsonl
 *
 * Every command holds the DLQ's messages without removing them (see
 * lib/src/dlq.c) and gives back whatever it does not move, in order.
 */
#include "chorus/chorus.h"
#include "chorus/chorus_json.h"

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    bool json, yes, all;
    const char *ns, *saga, *id, *reason, *type;
    long limit;
} opts_t;

static void usage(FILE *f) {
    fprintf(f,
        "usage: dlq [--json] [--namespace NS] [--saga FILE] COMMAND ...\n"
        "  list [SERVICE]                 depth of each DLQ by fault reason and event type\n"
        "  show SERVICE [--id EVENT_ID | --limit N]\n"
        "                                 decoded envelope, fault headers, x-death history\n"
        "  requeue SERVICE FILTER         back to the original queue (confirmed, then removed)\n"
        "  purge SERVICE FILTER --yes     delete the matching dead letters\n"
        "  export SERVICE                 JSON lines on stdout (nothing is removed)\n"
        "  import SERVICE                 JSON lines from stdin into SERVICE's DLQ; a line\n"
        "                                 that cannot be rebuilt exactly is refused, the\n"
        "                                 others go on\n"
        "FILTER is one of --id EVENT_ID, --reason REASON, --event-type TYPE, --all.\n"
        "The broker is CHORUS_AMQP_URL (for amqps://, the CA is CHORUS_AMQP_TLS_CA_FILE,\n"
        "else the system's; a client certificate CHORUS_AMQP_TLS_CERT_FILE and _KEY_FILE);\n"
        "the namespace CHORUS_NAMESPACE (default chorus);\n"
        "list without SERVICE covers every service of the saga (CHORUS_SAGA_FILE, default\n"
        "sagas/order_fulfillment.json). Exit status: 0 done, 1 failed, 2 usage or refused.\n");
}

static int bad(const char *msg) {
    fprintf(stderr, "dlq: %s\n", msg);
    usage(stderr);
    return 2;
}

/* @p quiet_missing: a DLQ that does not exist (yet) is no error. */
static chorus_dlq_t *open_dlq(const opts_t *o, const char *service, bool quiet_missing) {
    const char *url = getenv("CHORUS_AMQP_URL");
    char err[512];
    if (!url || !*url) {
        fprintf(stderr, "dlq: CHORUS_AMQP_URL is not set (source .chorus/env.sh)\n");
        return NULL;
    }
    chorus_dlq_t *q = chorus_dlq_open(url, o->ns, service, err, sizeof(err));
    if (!q && !(quiet_missing && strstr(err, "no dead-letter queue")))
        fprintf(stderr, "dlq: %s\n", err);
    return q;
}

static bool matches(const opts_t *o, const chorus_dead_letter_t *dl) {
    if (o->all)
        return true;
    if (o->id)
        return strcmp(chorus_dead_letter_event_id(dl), o->id) == 0;
    if (o->reason) {
        const char *r = chorus_dead_letter_fault(dl, "reason");
        return r && strcmp(r, o->reason) == 0;
    }
    if (o->type)
        return strcmp(chorus_dead_letter_event_type(dl), o->type) == 0;
    return true; /* show without a filter */
}

/* Prints @p v as exact JSON (chorus_json_print) and a newline; false when
 * it cannot be printed (then nothing is). */
static bool print_json(const cJSON *v) {
    chorus_error_t *err = NULL;
    char *t = chorus_json_print(v, &err);
    if (!t) {
        fprintf(stderr, "dlq: cannot print the result: %s\n", chorus_error_string(err));
        chorus_error_destroy(err);
        return false;
    }
    printf("%s\n", t);
    free(t);
    return true;
}

/* ---- list --------------------------------------------------------------- */

typedef struct {
    char *reason, *type, *oldest, *newest;
    long count;
} group_t;

static char *dup(const char *s) { return strdup(s ? s : ""); }

static cJSON *list_one(const opts_t *o, const char *service, bool quiet_missing, int *rc) {
    chorus_dlq_t *q = open_dlq(o, service, quiet_missing);
    if (!q) {
        if (!quiet_missing)
            *rc = 1;
        return NULL;
    }
    group_t *g = NULL;
    size_t ng = 0;
    if (chorus_dlq_fetch(q, 0) != CHORUS_OK) {
        fprintf(stderr, "dlq: reading %s failed\n", chorus_dlq_queue(q));
        *rc = 1;
    }
    size_t n = chorus_dlq_count(q);
    for (size_t i = 0; i < n; i++) {
        const chorus_dead_letter_t *dl = chorus_dlq_at(q, i);
        const char *r = chorus_dead_letter_fault(dl, "reason");
        const char *t = chorus_dead_letter_event_type(dl);
        const char *when = chorus_dead_letter_fault(dl, "time");
        r = r ? r : "(none)";
        when = when ? when : "";
        size_t k = 0;
        while (k < ng && (strcmp(g[k].reason, r) || strcmp(g[k].type, t)))
            k++;
        if (k == ng) {
            group_t *ngs = realloc(g, sizeof(*g) * (ng + 1));
            if (!ngs) {
                fprintf(stderr, "dlq: out of memory\n");
                *rc = 1;
                break;
            }
            g = ngs;
            g[ng++] = (group_t){.reason = dup(r), .type = dup(t), .oldest = dup(when),
                                .newest = dup(when)};
        }
        g[k].count++;
        if (*when && (!*g[k].oldest || strcmp(when, g[k].oldest) < 0)) {
            free(g[k].oldest);
            g[k].oldest = dup(when);
        }
        if (strcmp(when, g[k].newest) > 0) {
            free(g[k].newest);
            g[k].newest = dup(when);
        }
    }
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "service", service);
    cJSON_AddStringToObject(s, "queue", chorus_dlq_queue(q));
    cJSON_AddNumberToObject(s, "total", (double)n);
    cJSON *groups = cJSON_AddArrayToObject(s, "groups");
    for (size_t k = 0; k < ng; k++) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "reason", g[k].reason ? g[k].reason : "");
        cJSON_AddStringToObject(x, "event_type", g[k].type ? g[k].type : "");
        cJSON_AddNumberToObject(x, "count", (double)g[k].count);
        cJSON_AddStringToObject(x, "oldest", g[k].oldest ? g[k].oldest : "");
        cJSON_AddStringToObject(x, "newest", g[k].newest ? g[k].newest : "");
        cJSON_AddItemToArray(groups, x);
        free(g[k].reason);
        free(g[k].type);
        free(g[k].oldest);
        free(g[k].newest);
    }
    free(g);
    chorus_dlq_close(q); /* everything goes back, in order */
    return s;
}

static void print_list(const cJSON *svc) {
    int total = (int)cJSON_GetObjectItem(svc, "total")->valuedouble;
    printf("%s: %d dead letter%s\n", cJSON_GetObjectItem(svc, "queue")->valuestring, total,
           total == 1 ? "" : "s");
    const cJSON *g;
    cJSON_ArrayForEach(g, cJSON_GetObjectItem(svc, "groups")) {
        printf("  %5d  %-18s %-22s %s .. %s\n", (int)cJSON_GetObjectItem(g, "count")->valuedouble,
               cJSON_GetObjectItem(g, "reason")->valuestring,
               cJSON_GetObjectItem(g, "event_type")->valuestring,
               cJSON_GetObjectItem(g, "oldest")->valuestring,
               cJSON_GetObjectItem(g, "newest")->valuestring);
    }
}

static int cmd_list(const opts_t *o, const char *service) {
    const char *const *names = NULL;
    size_t n = 1;
    chorus_saga_t *saga = NULL;
    if (!service) {
        char err[512];
        saga = chorus_saga_load(o->saga, err, sizeof(err));
        if (!saga) {
            fprintf(stderr, "dlq: %s\n", err);
            return 1;
        }
        n = chorus_saga_services(saga, &names);
    }
    int rc = 0;
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, "services");
    for (size_t i = 0; i < n; i++) {
        cJSON *s = list_one(o, service ? service : names[i], !service, &rc);
        if (!s) {
            if (!service && !o->json)
                printf("%s.%s.dlq: not declared yet (the service has not run)\n", o->ns, names[i]);
            continue;
        }
        if (!o->json)
            print_list(s);
        cJSON_AddItemToArray(arr, s);
    }
    if (o->json && !print_json(out))
        rc = 1;
    cJSON_Delete(out);
    chorus_saga_destroy(saga);
    return rc;
}

/* ---- show, requeue, purge, export ----------------------------------------- */

/* A string as itself when it is plain printable text, else JSON-quoted (so
 * that control characters in a header cannot drive the terminal). */
static void put_text(const char *s) {
    bool plain = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        plain = *p >= 0x20 && *p != 0x7f;
    if (plain) {
        fputs(s, stdout);
        return;
    }
    cJSON *j = cJSON_CreateString(s);
    char *t = j ? chorus_json_print(j, NULL) : NULL;
    fputs(t ? t : "?", stdout);
    free(t);
    cJSON_Delete(j);
}

/* A value for a one-line field: strings as text, the rest as JSON, "-"
 * for null or absent. */
static void put_field(const cJSON *v) {
    if (!v || cJSON_IsNull(v)) {
        fputs("-", stdout);
    } else if (cJSON_IsString(v)) {
        put_text(v->valuestring);
    } else {
        char *t = chorus_json_print(v, NULL);
        fputs(t ? t : "?", stdout);
        free(t);
    }
}

/* @p v as indented JSON, two spaces a level, every scalar and name
 * printed by chorus_json_print (exact numbers, escaped strings). */
static void put_pretty(const cJSON *v, int indent) {
    bool obj = cJSON_IsObject(v);
    if (!obj && !cJSON_IsArray(v)) {
        char *t = chorus_json_print(v, NULL);
        fputs(t ? t : "?", stdout);
        free(t);
        return;
    }
    if (!v->child) {
        fputs(obj ? "{}" : "[]", stdout);
        return;
    }
    putchar(obj ? '{' : '[');
    for (const cJSON *c = v->child; c; c = c->next) {
        printf("\n%*s", 2 * (indent + 1), "");
        if (obj) {
            cJSON *name = cJSON_CreateString(c->string);
            char *t = name ? chorus_json_print(name, NULL) : NULL;
            printf("%s: ", t ? t : "?");
            free(t);
            cJSON_Delete(name);
        }
        put_pretty(c, indent + 1);
        if (c->next)
            putchar(',');
    }
    printf("\n%*s%c", 2 * indent, "", obj ? '}' : ']');
}

static void put_block(const char *title, const cJSON *v) {
    printf("  %s:\n    ", title);
    put_pretty(v, 2);
    putchar('\n');
}

/* Headers already shown as fields above them. */
static bool shown_as_field(const char *name) {
    static const char *const names[] = {
        "x-chorus-fault-reason", "x-chorus-fault-error", "x-chorus-original-queue",
        "x-chorus-original-routing-key", "x-chorus-fault-time", "x-chorus-fault-service",
        "x-chorus-fault-attempts", "x-chorus-requeue-count", "x-chorus-dropped-headers",
        "x-death", NULL};
    for (int i = 0; names[i]; i++)
        if (strcmp(name, names[i]) == 0)
            return true;
    return false;
}

static void print_message(const cJSON *m) {
    const char *keys[] = {"event_type", "reason", "error", "original_queue",
                          "original_routing_key", "time", "fault_service", "attempts",
                          "requeues", "dropped_headers"};
    printf("--- #");
    put_field(cJSON_GetObjectItem(m, "position"));
    printf("  event ");
    put_field(cJSON_GetObjectItem(m, "event_id"));
    putchar('\n');
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const cJSON *v = cJSON_GetObjectItem(m, keys[i]);
        if (!v && strcmp(keys[i], "dropped_headers") == 0)
            continue; /* only there when headers were left out */
        printf("  %-21s ", keys[i]);
        put_field(v);
        putchar('\n');
    }
    const cJSON *d;
    cJSON_ArrayForEach(d, cJSON_GetObjectItem(m, "x_death")) {
        printf("  x-death               ");
        put_field(cJSON_GetObjectItem(d, "reason"));
        printf(" x");
        put_field(cJSON_GetObjectItem(d, "count"));
        printf(" from ");
        put_field(cJSON_GetObjectItem(d, "queue"));
        printf(" at ");
        put_field(cJSON_GetObjectItem(d, "time"));
        putchar('\n');
    }
    const cJSON *env = cJSON_GetObjectItem(m, "envelope");
    const cJSON *body = cJSON_GetObjectItem(m, "body");
    const cJSON *body64 = cJSON_GetObjectItem(m, "body_base64");
    if (cJSON_IsObject(env)) {
        put_block("envelope", env);
    } else if (cJSON_IsString(body)) {
        printf("  body (not an envelope): ");
        put_text(body->valuestring);
        putchar('\n');
    } else {
        printf("  body (not an envelope, not text), base64: ");
        put_field(body64);
        putchar('\n');
    }
    cJSON *other = cJSON_CreateObject();
    const cJSON *h;
    cJSON_ArrayForEach(h, cJSON_GetObjectItem(m, "headers")) {
        if (other && !shown_as_field(h->string))
            cJSON_AddItemReferenceToObject(other, h->string, (cJSON *)h);
    }
    if (other && other->child)
        put_block("headers", other);
    cJSON_Delete(other);
    const cJSON *n;
    cJSON_ArrayForEach(n, cJSON_GetObjectItem(m, "notes")) {
        printf("  note: ");
        put_field(n);
        putchar('\n');
    }
}

typedef enum { SHOW, REQUEUE, PURGE, EXPORT } action_t;

static int cmd_each(const opts_t *o, const char *service, action_t act) {
    chorus_dlq_t *q = open_dlq(o, service, false);
    if (!q)
        return 1;
    int rc = 0;
    size_t matched = 0, done = 0;
    if (chorus_dlq_fetch(q, 0) != CHORUS_OK) {
        fprintf(stderr, "dlq: reading %s failed\n", chorus_dlq_queue(q));
        rc = 1;
    }
    cJSON *out = cJSON_CreateObject(), *msgs = NULL;
    if (act == SHOW) {
        cJSON_AddStringToObject(out, "service", service);
        cJSON_AddStringToObject(out, "queue", chorus_dlq_queue(q));
        msgs = cJSON_AddArrayToObject(out, "messages");
    }
    size_t n = chorus_dlq_count(q);
    for (size_t i = 0; i < n && rc == 0; i++) {
        const chorus_dead_letter_t *dl = chorus_dlq_at(q, i);
        if (!matches(o, dl) || (o->limit && (long)matched >= o->limit))
            continue;
        matched++;
        if (act == SHOW) {
            cJSON *m = chorus_dead_letter_object(dl);
            if (!m || !cJSON_AddNumberToObject(m, "position", (double)(i + 1))) {
                fprintf(stderr, "dlq: message #%zu: out of memory\n", i + 1);
                cJSON_Delete(m);
                rc = 1;
                continue;
            }
            if (!o->json) {
                print_message(m);
                cJSON_Delete(m);
            } else {
                cJSON_AddItemToArray(msgs, m);
            }
        } else if (act == EXPORT) {
            char *line = chorus_dead_letter_export(dl);
            if (line) {
                printf("%s\n", line);
                done++;
            } else {
                /* said, never skipped silently: the rest still goes out */
                fprintf(stderr, "dlq: message #%zu (%s) cannot be exported (out of memory)\n",
                        i + 1, chorus_dead_letter_event_id(dl));
            }
            free(line);
        } else {
            chorus_err_t e = act == REQUEUE ? chorus_dlq_requeue(q, i) : chorus_dlq_remove(q, i);
            if (e) {
                fprintf(stderr, "dlq: message #%zu (%s): %s; it stays in the DLQ\n", i + 1,
                        chorus_dead_letter_event_id(dl),
                        act == REQUEUE ? chorus_dlq_last_error(q) : chorus_strerror(e));
                rc = 1;
            } else {
                done++;
            }
        }
    }
    if (act == EXPORT && done < matched)
        rc = 1;
    if (chorus_dlq_finish(q) != CHORUS_OK)
        rc = 1;
    chorus_dlq_close(q);
    if (act == REQUEUE || act == PURGE) {
        cJSON_AddNumberToObject(out, "matched", (double)matched);
        cJSON_AddNumberToObject(out, act == REQUEUE ? "moved" : "purged", (double)done);
        cJSON_AddNumberToObject(out, "remaining", (double)(n - done));
        if (!o->json)
            printf("%s %zu of %zu matching dead letters%s; %zu remain in the DLQ\n",
                   act == REQUEUE ? "requeued" : "purged", done, matched,
                   act == REQUEUE ? " to their original queue" : "", n - done);
    }
    if (o->json && act != EXPORT) {
        if (!print_json(out))
            rc = 1;
    } else if (act == SHOW && !o->json && matched == 0) {
        printf("no matching dead letters in %s (%zu in all)\n", service, n);
    }
    cJSON_Delete(out);
    return rc;
}

static int cmd_import(const opts_t *o, const char *service) {
    chorus_dlq_t *q = open_dlq(o, service, false);
    if (!q)
        return 1;
    char *line = NULL;
    size_t cap = 0, imported = 0, refused = 0, lineno = 0;
    ssize_t len;
    bool broken = false;
    while (!broken && (len = getline(&line, &cap, stdin)) > 0) {
        lineno++;
        if (len <= 1)
            continue;
        char err[1024];
        chorus_err_t e = CHORUS_ERR_PARSE;
        if (strlen(line) != (size_t)len)
            snprintf(err, sizeof(err), "the line holds a NUL byte (not JSON)");
        else
            e = chorus_dlq_import(q, line, err, sizeof(err));
        if (e == CHORUS_OK) {
            imported++;
            continue;
        }
        fprintf(stderr, "dlq: line %zu: %s\n", lineno, err);
        /* a line that is refused is that line's problem: go on with the
         * rest; a broken connection ends the import */
        if (e == CHORUS_ERR_PARSE || e == CHORUS_ERR_TOO_LARGE)
            refused++;
        else
            broken = true;
    }
    free(line);
    chorus_dlq_close(q);
    if (o->json)
        printf("{\"imported\":%zu,\"refused\":%zu}\n", imported, refused);
    else
        printf("imported %zu dead letter%s into %s's DLQ%s\n", imported, imported == 1 ? "" : "s",
               service, refused ? "; some lines were refused (see above)" : "");
    return refused || broken ? 1 : 0;
}

static bool parse_long(const char *s, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 1 || v > 1000000)
        return false;
    *out = v;
    return true;
}

int main(int argc, char **argv) {
    opts_t o = {.ns = getenv("CHORUS_NAMESPACE"), .saga = getenv("CHORUS_SAGA_FILE")};
    if (!o.ns || !*o.ns)
        o.ns = "chorus";
    if (!o.saga || !*o.saga)
        o.saga = "sagas/order_fulfillment.json";
    static const struct option lo[] = {
        {"json", no_argument, NULL, 'j'},        {"namespace", required_argument, NULL, 'n'},
        {"saga", required_argument, NULL, 's'},  {"id", required_argument, NULL, 'i'},
        {"reason", required_argument, NULL, 'r'}, {"event-type", required_argument, NULL, 't'},
        {"all", no_argument, NULL, 'a'},         {"limit", required_argument, NULL, 'l'},
        {"yes", no_argument, NULL, 'y'},         {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int c, filters = 0;
    while ((c = getopt_long(argc, argv, "+", lo, NULL)) != -1) {
        switch (c) {
        case 'j': o.json = true; break;
        case 'n': o.ns = optarg; break;
        case 's': o.saga = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind >= argc)
        return bad("a command is required");
    const char *cmd = argv[optind++];
    const char *service = optind < argc && argv[optind][0] != '-' ? argv[optind++] : NULL;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'j': o.json = true; break;
        case 'i': o.id = optarg; filters++; break;
        case 'r': o.reason = optarg; filters++; break;
        case 't': o.type = optarg; filters++; break;
        case 'a': o.all = true; filters++; break;
        case 'l': if (!parse_long(optarg, &o.limit)) return bad("--limit takes a number from 1 to 1000000"); break;
        case 'y': o.yes = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc)
        return bad("unexpected argument");
    static const char *const known[] = {"list", "show", "requeue", "purge", "export", "import"};
    bool ok = false;
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        ok = ok || strcmp(cmd, known[i]) == 0;
    if (!ok)
        return bad("unknown command");
    if (strcmp(cmd, "list") == 0)
        return filters || o.limit ? bad("list takes no filter") : cmd_list(&o, service);
    if (!service)
        return bad("this command needs a SERVICE");
    if (strcmp(cmd, "show") == 0) {
        if (filters > 1 || o.reason || o.type || o.all)
            return bad("show takes --id or --limit");
        return cmd_each(&o, service, SHOW);
    }
    if (strcmp(cmd, "requeue") == 0 || strcmp(cmd, "purge") == 0) {
        if (filters != 1 || o.limit)
            return bad("exactly one of --id, --reason, --event-type, --all is required");
        if (strcmp(cmd, "purge") == 0 && !o.yes) {
            fprintf(stderr, "dlq: purge deletes dead letters for good; add --yes to confirm "
                            "(nothing was removed)\n");
            return 2;
        }
        return cmd_each(&o, service, cmd[0] == 'r' ? REQUEUE : PURGE);
    }
    if (strcmp(cmd, "export") == 0)
        return filters || o.limit ? bad("export takes no filter") : cmd_each(&o, service, EXPORT);
    if (strcmp(cmd, "import") == 0)
        return filters || o.limit ? bad("import takes no filter") : cmd_import(&o, service);
    return bad("unknown command");
}
