/*
 * fuzz_schema.c - the JSON Schema validator (schema.c).
 *
 * An input is one JSON text: an array [schema, instance, ...] (up to 8
 * instances are checked), or any other value, taken as the schema and as
 * its own instance.  Invariants:
 *
 *   refusals    compiling refuses with a message that is UTF-8 text and
 *               fits; at any smaller err size the message is a prefix cut
 *               between characters; a validation that fails says so the
 *               same way, rooted at "data" ("data", then ':' '.' or '[');
 *               success leaves err "";
 *   exactness   the schema and the instances printed and parsed again
 *               compile and validate to the same verdicts and messages;
 *   equality    {"const": x} and {"enum": [x]} accept x; for two instances
 *               x and y, {"const": x} accepts y exactly when {"const": y}
 *               accepts x;
 *   booleans    true and {} accept every instance, false refuses each.
 */
#include "fuzz_common.h"

#include "json_int.h"
#include "schema_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INSTANCES 8
#define ERR_SIZE 512

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static cJSON *parse(const char *buf, size_t len) {
    chorus__json_limits_t lim = {.max_depth = 80}; /* past the schema's bound of 64 */
    cJSON *v = NULL;
    if (chorus__json_parse(buf, len, &lim, &v, NULL, NULL) != CHORUS_OK)
        return NULL;
    return v;
}

/* Printed and parsed again: the same tree for the validator. */
static cJSON *reparsed(const cJSON *v) {
    size_t len;
    char *text = chorus__json_print(v, 0, &len, NULL);
    if (!text)
        fuzz_fail("the printer refuses a parsed tree");
    cJSON *again = parse(text, len);
    if (!again)
        fuzz_fail("printed JSON does not parse again: %.200s", text);
    free(text);
    return again;
}

/* A message of @p size bytes or fewer that is a prefix of @p full, cut
 * between characters. */
static void check_cut(const char *small, size_t size, const char *full) {
    size_t n = strlen(small);
    FUZZ_CHECK(n < size);
    FUZZ_CHECK(strncmp(small, full, n) == 0);
    FUZZ_CHECK(chorus__json_text_ok(small, n, NULL));
    size_t want = strlen(full) < size - 1 ? strlen(full) : size - 1;
    FUZZ_CHECK(n + 3 >= want); /* at most one partial character dropped */
}

static chorus__schema_t *compile_checked(const cJSON *schema, size_t small_size, char *err) {
    memset(err, 'x', ERR_SIZE);
    chorus__schema_t *s = chorus__schema_compile(schema, err, ERR_SIZE);
    if (s) {
        FUZZ_CHECK(err[0] == '\0');
        return s;
    }
    if (!fuzz_text_message_ok(err, ERR_SIZE))
        fuzz_fail("compile: a refusal that is not text: %.200s", err);
    char small[ERR_SIZE];
    memset(small, 'x', sizeof(small));
    FUZZ_CHECK(chorus__schema_compile(schema, small, small_size) == NULL);
    check_cut(small, small_size, err);
    return NULL;
}

static bool validate_checked(const chorus__schema_t *s, const cJSON *x, size_t small_size,
                             char *err) {
    memset(err, 'x', ERR_SIZE);
    bool ok = chorus__schema_validate(s, x, "data", err, ERR_SIZE);
    if (ok) {
        FUZZ_CHECK(err[0] == '\0');
    } else {
        if (!fuzz_text_message_ok(err, ERR_SIZE))
            fuzz_fail("validate: a message that is not text: %.200s", err);
        FUZZ_CHECK(strncmp(err, "data", 4) == 0 && err[4] && strchr(":.[", err[4]));
    }
    char small[ERR_SIZE];
    memset(small, 'x', sizeof(small));
    FUZZ_CHECK(chorus__schema_validate(s, x, "data", small, small_size) == ok);
    if (!ok)
        check_cut(small, small_size, err);
    return ok;
}

static int depth_of(const cJSON *v) {
    int deepest = 0; /* bounded by the parser's limit */
    for (const cJSON *c = v->child; c; c = c->next) {
        int d = depth_of(c);
        if (d > deepest)
            deepest = d;
    }
    return cJSON_IsArray(v) || cJSON_IsObject(v) ? deepest + 1 : 0;
}

/* {"const": x} or {"enum": [x]}: NULL when x nests too deep for a schema. */
static chorus__schema_t *wrap(const cJSON *x, bool as_enum) {
    cJSON *w = cJSON_CreateObject(), *v = cJSON_Duplicate(x, true);
    if (as_enum) {
        cJSON *a = cJSON_CreateArray();
        cJSON_AddItemToArray(a, v);
        v = a;
    }
    cJSON_AddItemToObject(w, as_enum ? "enum" : "const", v);
    char err[ERR_SIZE];
    chorus__schema_t *s = chorus__schema_compile(w, err, sizeof(err));
    bool deep = depth_of(w) > CHORUS__SCHEMA_MAX_DEPTH;
    if (!s && !deep)
        fuzz_fail("{\"%s\": x} refused: %s", as_enum ? "enum" : "const", err);
    FUZZ_CHECK(!(s && deep));
    cJSON_Delete(w);
    return s;
}

static void check_booleans(const cJSON *x) {
    static const char *const schemas[] = {"true", "{}", "false"};
    char err[ERR_SIZE];
    for (int i = 0; i < 3; i++) {
        cJSON *j = parse(schemas[i], strlen(schemas[i]));
        chorus__schema_t *s = chorus__schema_compile(j, err, sizeof(err));
        FUZZ_CHECK(s != NULL);
        bool ok = chorus__schema_validate(s, x, "data", err, sizeof(err));
        FUZZ_CHECK(ok == (i < 2));
        FUZZ_CHECK(ok || strcmp(err, "data: no value is valid here (the schema is false)") == 0);
        chorus__schema_free(s);
        cJSON_Delete(j);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = fuzz_exact_copy(data, size);
    cJSON *root = parse(buf, size);
    free(buf);
    if (!root)
        return 0;
    const cJSON *schema = root, *inst[MAX_INSTANCES];
    int n = 0;
    if (cJSON_IsArray(root) && root->child) {
        schema = root->child;
        for (const cJSON *c = schema->next; c && n < MAX_INSTANCES; c = c->next)
            inst[n++] = c;
    } else {
        inst[n++] = root;
    }
    size_t small_size = 1 + size % 64;
    char err[ERR_SIZE], err2[ERR_SIZE];

    chorus__schema_t *s = compile_checked(schema, small_size, err);
    cJSON *schema2 = reparsed(schema);
    chorus__schema_t *s2 = compile_checked(schema2, small_size, err2);
    FUZZ_CHECK((s == NULL) == (s2 == NULL));
    if (!s && strcmp(err, err2) != 0)
        fuzz_fail("the reprinted schema is refused otherwise:\n  %s\n  %s", err, err2);

    for (int i = 0; s && i < n; i++) {
        bool ok = validate_checked(s, inst[i], small_size, err);
        cJSON *again = reparsed(inst[i]);
        bool ok2 = validate_checked(s2, again, small_size, err2);
        if (ok != ok2 || strcmp(err, err2) != 0)
            fuzz_fail("reprinted, validated otherwise:\n  %s\n  %s", err, err2);
        cJSON_Delete(again);
    }

    for (int i = 0; i < n; i++) {
        check_booleans(inst[i]);
        for (int e = 0; e < 2; e++) {
            chorus__schema_t *w = wrap(inst[i], e == 1);
            FUZZ_CHECK(!w || chorus__schema_validate(w, inst[i], "data", err, sizeof(err)));
            chorus__schema_free(w);
        }
        for (int k = i + 1; k < n && k < i + 3; k++) {
            chorus__schema_t *a = wrap(inst[i], false), *b = wrap(inst[k], false);
            if (a && b && chorus__schema_validate(a, inst[k], "data", NULL, 0) !=
                              chorus__schema_validate(b, inst[i], "data", NULL, 0))
                fuzz_fail("const equality is not symmetric (instances %d and %d)", i, k);
            chorus__schema_free(a);
            chorus__schema_free(b);
        }
    }

    chorus__schema_free(s2);
    chorus__schema_free(s);
    cJSON_Delete(schema2);
    cJSON_Delete(root);
    return 0;
}
