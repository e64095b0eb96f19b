/*
 * chorus-saga: checks a saga declaration and shows what chorus derives from
 * it (the picture, each service's bindings and RabbitMQ permissions).
 *
 *   chorus-saga check FILE                          ok, or the refusal (exit 1)
 *   chorus-saga graph FILE                          Graphviz DOT to stdout
 *   chorus-saga services FILE                       one service a line
 *   chorus-saga bindings FILE SERVICE               one routing key a line
 *   chorus-saga permissions FILE SERVICE [NAMESPACE]
 *   chorus-saga topology FILE SERVICE [NAMESPACE]   RabbitMQ definitions (JSON)
 *
 * Exit status: 0 done, 1 the declaration (or the service) was refused,
 * 2 bad arguments.
 */
#include "chorus/chorus.h"

#include <cjson/cJSON.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "Usage: chorus-saga check FILE\n"
            "       chorus-saga graph FILE\n"
            "       chorus-saga services FILE\n"
            "       chorus-saga bindings FILE SERVICE\n"
            "       chorus-saga permissions FILE SERVICE [NAMESPACE]\n"
            "       chorus-saga topology FILE SERVICE [NAMESPACE]\n"
            "       chorus-saga --help\n"
            "\n"
            "Loads and checks a saga declaration (format: sagas/README.md).\n"
            "  check        prints a summary, or why the declaration is refused (exit 1)\n"
            "  graph        writes the choreography as Graphviz DOT to stdout\n"
            "  services     the services taking part, in order of appearance\n"
            "  bindings     the routing keys SERVICE's queue binds to\n"
            "  permissions  SERVICE's RabbitMQ permissions (configure, write, read,\n"
            "               topic write on the events exchange); NAMESPACE defaults to\n"
            "               the declaration's \"namespace\"\n"
            "  topology     the exchanges, queues and bindings SERVICE's participant\n"
            "               declares, as a RabbitMQ definitions document (JSON) to import\n"
            "               before it starts; configuration keys that shape them\n"
            "               (topology.*, retry.*) come from CHORUS_CONF (key=value;...)\n"
            "Exit status: 0 ok, 1 refused, 2 bad arguments.\n");
}

/* The summary counts steps and events, which the API does not expose:
 * they are read from the file again, which the library has just accepted,
 * so every field used below is present and well typed. */
static void add_event(const cJSON *e, const char **seen, size_t *n, size_t max) {
    if (!cJSON_IsString(e))
        return;
    for (size_t i = 0; i < *n; i++)
        if (strcmp(seen[i], e->valuestring) == 0)
            return;
    if (*n < max)
        seen[(*n)++] = e->valuestring;
}

static void add_events(const cJSON *obj, const char **seen, size_t *n, size_t max) {
    const cJSON *e;
    add_event(cJSON_GetObjectItemCaseSensitive(obj, "emits"), seen, n, max);
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(obj, "failures"))
        add_event(e, seen, n, max);
}

/* Steps and distinct produced events (every consumed one is produced). */
static int count(const char *file, size_t *nsteps, size_t *nevents) {
    FILE *f = fopen(file, "rb");
    static char text[1 << 20];
    size_t len = f ? fread(text, 1, sizeof(text) - 1, f) : 0;
    if (f)
        fclose(f);
    text[len] = '\0';
    cJSON *root = cJSON_Parse(text), *st;
    if (!root)
        return -1;
    const char *seen[1024];
    size_t n = 0, max = sizeof(seen) / sizeof(seen[0]);
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(root, "steps");
    *nsteps = (size_t)cJSON_GetArraySize(steps);
    cJSON_ArrayForEach(st, steps) {
        add_events(st, seen, &n, max);
        add_events(cJSON_GetObjectItemCaseSensitive(st, "compensation"), seen, &n, max);
    }
    add_events(cJSON_GetObjectItemCaseSensitive(root, "completion"), seen, &n, max);
    add_events(cJSON_GetObjectItemCaseSensitive(root, "deadline"), seen, &n, max);
    const cJSON *cancel = cJSON_GetObjectItemCaseSensitive(root, "cancellation");
    add_event(cJSON_GetObjectItemCaseSensitive(cancel, "request"), seen, &n, max);
    add_event(cJSON_GetObjectItemCaseSensitive(cancel, "accepted"), seen, &n, max);
    add_event(cJSON_GetObjectItemCaseSensitive(cancel, "refused"), seen, &n, max);
    *nevents = n;
    cJSON_Delete(root);
    return 0;
}

static int cmd_check(const chorus_saga_t *saga, const char *file) {
    const char *const *names;
    size_t nsvc = chorus_saga_services(saga, &names), nsteps = 0, nevents = 0;
    if (count(file, &nsteps, &nevents) != 0) {
        fprintf(stderr, "chorus-saga: %s: cannot read it again\n", file);
        return 1;
    }
    printf("ok: saga '%s': %zu step%s, %zu service%s, %zu event%s\n", chorus_saga_name(saga),
           nsteps, nsteps == 1 ? "" : "s", nsvc, nsvc == 1 ? "" : "s", nevents,
           nevents == 1 ? "" : "s");
    return 0;
}

static int cmd_list(size_t n, const char *const *items) {
    for (size_t i = 0; i < n; i++)
        printf("%s\n", items[i]);
    return 0;
}

static int cmd_bindings(const chorus_saga_t *saga, const char *service) {
    const char *const *keys;
    size_t n = chorus_saga_bindings(saga, service, &keys);
    const char *const *svcs;
    size_t nsvc = chorus_saga_services(saga, &svcs);
    for (size_t i = 0; i < nsvc; i++)
        if (strcmp(svcs[i], service) == 0)
            return cmd_list(n, keys);
    fprintf(stderr, "chorus-saga: service '%s' takes no part in saga '%s'\n", service,
            chorus_saga_name(saga));
    return 1;
}

static int cmd_permissions(const chorus_saga_t *saga, const char *service, const char *ns) {
    char conf[512], wr[512], rd[512], topic[512];
    chorus_err_t rc = chorus_saga_permissions(saga, service, ns, conf, wr, rd, topic, 512);
    if (rc == CHORUS_ERR_NOT_FOUND) {
        fprintf(stderr, "chorus-saga: service '%s' takes no part in saga '%s'\n", service,
                chorus_saga_name(saga));
        return 1;
    }
    if (rc) {
        fprintf(stderr, "chorus-saga: permissions: %s\n", chorus_strerror(rc));
        return 1;
    }
    printf("configure %s\nwrite %s\nread %s\ntopic %s\n", conf, wr, rd, topic);
    return 0;
}

static int cmd_topology(const char *file, const char *service, const char *ns) {
    char err[1024];
    const char *extra = getenv("CHORUS_CONF");
    chorus_conf_t *conf = chorus_conf_new();
    /* nothing connects: the URL only satisfies chorus_new */
    if (!conf || chorus_conf_set(conf, "service.name", service, err, sizeof(err)) ||
        chorus_conf_set(conf, "amqp.url", "amqp://127.0.0.1/", err, sizeof(err)) ||
        chorus_conf_set(conf, "saga.file", file, err, sizeof(err)) ||
        (ns && chorus_conf_set(conf, "topology.namespace", ns, err, sizeof(err))) ||
        (extra && chorus_conf_set_list(conf, extra, err, sizeof(err)))) {
        fprintf(stderr, "chorus-saga: topology: %s\n", conf ? err : "out of memory");
        chorus_conf_destroy(conf);
        return 1;
    }
    chorus_t *ch = chorus_new(conf, err, sizeof(err));
    if (!ch) {
        fprintf(stderr, "chorus-saga: topology: %s\n", err);
        chorus_conf_destroy(conf);
        return 1;
    }
    char *json = NULL;
    chorus_err_t rc = chorus_topology_definitions(ch, "/", &json);
    if (rc)
        fprintf(stderr, "chorus-saga: topology: %s\n", chorus_strerror(rc));
    else
        printf("%s\n", json);
    free(json);
    chorus_destroy(ch);
    return rc ? 1 : 0;
}

static int bad_args(void) {
    usage(stderr);
    return 2;
}

/* Runs a command whose arguments known() has accepted. */
static int run(const char *cmd, const chorus_saga_t *saga, int argc, char **argv) {
    const char *const *names;
    if (strcmp(cmd, "check") == 0 && argc == 3)
        return cmd_check(saga, argv[2]);
    if (strcmp(cmd, "graph") == 0 && argc == 3) {
        chorus_saga_write_dot(saga, stdout);
        return 0;
    }
    if (strcmp(cmd, "services") == 0 && argc == 3) {
        size_t n = chorus_saga_services(saga, &names);
        return cmd_list(n, names);
    }
    if (strcmp(cmd, "bindings") == 0 && argc == 4)
        return cmd_bindings(saga, argv[3]);
    if (strcmp(cmd, "permissions") == 0 && (argc == 4 || argc == 5))
        return cmd_permissions(saga, argv[3], argc == 5 ? argv[4] : NULL);
    if (strcmp(cmd, "topology") == 0 && (argc == 4 || argc == 5)) {
        char c[512], w[512], r[512], t[512];
        if (chorus_saga_permissions(saga, argv[3], NULL, c, w, r, t, 512) == CHORUS_ERR_NOT_FOUND) {
            fprintf(stderr, "chorus-saga: service '%s' takes no part in saga '%s'\n", argv[3],
                    chorus_saga_name(saga));
            return 1;
        }
        return cmd_topology(argv[2], argv[3], argc == 5 ? argv[4] : NULL);
    }
    return bad_args();
}

/* Whether @p cmd exists and takes @p argc arguments (argv[0] included). */
static bool known(const char *cmd, int argc) {
    static const struct {
        const char *name;
        int min, max;
    } cmds[] = {{"check", 3, 3},    {"graph", 3, 3},       {"services", 3, 3},
                {"bindings", 4, 4}, {"permissions", 4, 5}, {"topology", 4, 5}};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmds[i].name, cmd) == 0)
            return argc >= cmds[i].min && argc <= cmds[i].max;
    return false;
}

int main(int argc, char **argv) {
    if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc < 3 || !known(argv[1], argc))
        return bad_args();
    char err[1024];
    chorus_saga_t *saga = chorus_saga_load(argv[2], err, sizeof(err));
    if (!saga) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = run(argv[1], saga, argc, argv);
    chorus_saga_destroy(saga);
    fflush(stdout);
    return ferror(stdout) ? 1 : rc;
}
