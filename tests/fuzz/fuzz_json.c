/*
 * fuzz_json.c - the I-JSON parser and the exact printer (json.c).
 *
 * Invariants, for every input the parser accepts (at the printer's
 * nesting bound, CHORUS__JSON_MAX_DEPTH):
 *   print     compact printing succeeds; the text parses again and prints
 *             to the same bytes; the pretty form parses to the same compact
 *             text;
 *   limits    the decoded size it reports is chorus__json_decoded_size() of
 *             the tree, and that bound (not one byte less) is enough; the
 *             default depth (32) accepts it exactly when it nests no deeper;
 *   strings   every string and member name is text (chorus__json_text_ok);
 *   cJSON     cJSON_ParseWithLength() accepts it too and builds the same
 *             tree: types, member names and their order, strings byte for
 *             byte, numbers as the same doubles.
 * Refusals carry a code of the parser's list, a message, and an offset
 * within the input.
 *
 * One known limit of cJSON 1.7.15 is left out of the differential: it
 * copies at most 63 characters of a number before strtod(), so a longer
 * literal ("1.000...0", "0.000...1e5": I-JSON allows up to 1100
 * characters of at most 17 significant digits) is refused or misread by
 * cJSON.  chorus never parses message data with cJSON (json_int.h).
 */
#include "fuzz_common.h"

#include "json_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CJSON_NUMBER_TEXT_MAX 63

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    return 0;
}

static int depth_of(const cJSON *v) {
    int deepest = 0;
    /* containers nest; recursion is bounded by the parser's limit (1000) */
    for (const cJSON *c = v->child; c; c = c->next) {
        int d = depth_of(c);
        if (d > deepest)
            deepest = d;
    }
    return cJSON_IsArray(v) || cJSON_IsObject(v) ? deepest + 1 : 0;
}

static void check_strings(const cJSON *v) {
    for (; v; v = v->next) {
        if (v->string && !chorus__json_text_ok(v->string, strlen(v->string), NULL))
            fuzz_fail("a member name is not text");
        if (cJSON_IsString(v) && !chorus__json_text_ok(v->valuestring, strlen(v->valuestring),
                                                       NULL))
            fuzz_fail("a string is not text");
        if (cJSON_IsNumber(v) && !isfinite(v->valuedouble))
            fuzz_fail("a number is not finite");
        check_strings(v->child);
    }
}

/* The same tree: kinds, names in order, strings, numbers as doubles. */
static void same_tree(const cJSON *a, const cJSON *b, const char *path) {
    if ((a->type & 0xFF) != (b->type & 0xFF))
        fuzz_fail("cJSON differs at %s: type %d, cJSON %d", path, a->type & 0xFF,
                  b->type & 0xFF);
    if ((a->string == NULL) != (b->string == NULL) ||
        (a->string && strcmp(a->string, b->string) != 0))
        fuzz_fail("cJSON differs at %s: member name \"%.60s\", cJSON \"%.60s\"", path,
                  a->string ? a->string : "(none)", b->string ? b->string : "(none)");
    switch (a->type & 0xFF) {
    case cJSON_String:
        if (strcmp(a->valuestring, b->valuestring) != 0)
            fuzz_fail("cJSON differs at %s: string \"%.60s\", cJSON \"%.60s\"", path,
                      a->valuestring, b->valuestring);
        break;
    case cJSON_Number:
        if (a->valuedouble != b->valuedouble ||
            signbit(a->valuedouble) != signbit(b->valuedouble))
            fuzz_fail("cJSON differs at %s: number %.17g, cJSON %.17g", path, a->valuedouble,
                      b->valuedouble);
        break;
    default: break;
    }
    const cJSON *x = a->child, *y = b->child;
    for (int i = 0; x || y; i++, x = x->next, y = y->next) {
        if (!x || !y)
            fuzz_fail("cJSON differs at %s: %s children", path, x ? "fewer" : "more");
        char sub[128];
        snprintf(sub, sizeof(sub), "%.100s/%d", path, i);
        same_tree(x, y, sub);
    }
}

/* True when some number literal (outside strings) is longer than cJSON
 * reads. */
static bool long_number(const uint8_t *p, size_t n) {
    bool in_string = false;
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
            run = 0;
        } else if ((c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' ||
                   c == 'E') {
            if (++run > CJSON_NUMBER_TEXT_MAX)
                return true;
        } else {
            run = 0;
        }
    }
    return false;
}

static char *print(const cJSON *v, int flags, size_t *len, const char *what) {
    chorus_error_t *err = NULL;
    char *s = chorus__json_print(v, flags, len, &err);
    if (!s)
        fuzz_fail("%s: the printer refuses a parsed tree: %s", what, chorus_error_string(err));
    FUZZ_CHECK(strlen(s) == *len);
    return s;
}

static cJSON *parse_printed(const char *s, size_t len, const char *what) {
    chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
    chorus_error_t *err = NULL;
    cJSON *v = NULL;
    if (chorus__json_parse(s, len, &lim, &v, NULL, &err) != CHORUS_OK)
        fuzz_fail("%s: printed text does not parse: %s\n%.300s", what, chorus_error_string(err),
                  s);
    return v;
}

static void check_refusal(chorus_err_t rc, const chorus_error_t *err, size_t off, size_t size) {
    FUZZ_CHECK(rc == CHORUS_ERR_PARSE || rc == CHORUS_ERR_BAD_UTF8 || rc == CHORUS_ERR_NOT_IJSON ||
               rc == CHORUS_ERR_TOO_DEEP || rc == CHORUS_ERR_TOO_LARGE);
    FUZZ_CHECK(err && chorus_error_code(err) == rc);
    FUZZ_CHECK(fuzz_text_message_ok(chorus_error_string(err), 512));
    FUZZ_CHECK(off <= size);
}

static void check_limits(const char *buf, size_t size, const cJSON *tree, size_t decoded) {
    FUZZ_CHECK(chorus__json_decoded_size(tree) == decoded);
    chorus__json_limits_t exact = {.max_depth = CHORUS__JSON_MAX_DEPTH, .max_decoded = decoded};
    cJSON *v = NULL;
    chorus_err_t rc = chorus__json_parse(buf, size, &exact, &v, NULL, NULL);
    FUZZ_CHECK(rc == CHORUS_OK);
    cJSON_Delete(v);
    v = NULL;
    exact.max_decoded = decoded - 1;
    rc = chorus__json_parse(buf, size, &exact, &v, NULL, NULL);
    FUZZ_CHECK(decoded <= 1 || (rc == CHORUS_ERR_TOO_LARGE && v == NULL));

    rc = chorus_json_parse(buf, size, &v, NULL); /* the public face: depth 32 */
    FUZZ_CHECK((rc == CHORUS_OK) == (depth_of(tree) <= 32));
    FUZZ_CHECK(rc == CHORUS_OK || rc == CHORUS_ERR_TOO_DEEP);
    cJSON_Delete(v);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = fuzz_exact_copy(data, size);
    chorus__json_limits_t lim = {.max_depth = CHORUS__JSON_MAX_DEPTH};
    chorus_error_t *err = NULL;
    cJSON *tree = NULL;
    size_t decoded = 0, off = SIZE_MAX;
    chorus_err_t rc = chorus__json_parse_at(buf, size, &lim, &tree, &decoded, &off, &err);
    if (rc != CHORUS_OK) {
        FUZZ_CHECK(tree == NULL);
        check_refusal(rc, err, off, size);
        chorus_error_destroy(err);
        free(buf);
        return 0;
    }
    FUZZ_CHECK(tree != NULL && err == NULL);
    check_strings(tree);
    check_limits(buf, size, tree, decoded);

    size_t len, len2, plen;
    char *text = print(tree, 0, &len, "compact");
    cJSON *again = parse_printed(text, len, "compact");
    char *text2 = print(again, 0, &len2, "compact again");
    if (len != len2 || memcmp(text, text2, len) != 0)
        fuzz_fail("print -> parse -> print differs:\n  %.300s\n  %.300s", text, text2);
    same_tree(tree, again, "printed");

    char *pretty = print(tree, CHORUS__JSON_PRETTY, &plen, "pretty");
    cJSON *from_pretty = parse_printed(pretty, plen, "pretty");
    char *text3 = print(from_pretty, 0, &len2, "pretty, compact again");
    if (len != len2 || memcmp(text, text3, len) != 0)
        fuzz_fail("the pretty form parses to other compact text:\n  %.300s\n  %.300s", text,
                  text3);

    if (!long_number(data, size)) {
        cJSON *c = cJSON_ParseWithLength(buf, size);
        if (!c)
            fuzz_fail("cJSON refuses what the I-JSON parser accepts (near offset %td)",
                      cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - buf : -1);
        same_tree(tree, c, "");
        cJSON_Delete(c);
    }

    free(text3);
    cJSON_Delete(from_pretty);
    free(pretty);
    free(text2);
    cJSON_Delete(again);
    free(text);
    cJSON_Delete(tree);
    free(buf);
    return 0;
}
