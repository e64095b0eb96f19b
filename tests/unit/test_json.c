/*
 * test_json.c - the I-JSON parser and the exact printer (lib/src/json.c).
 *
 * Every input is parsed from a heap block of exactly its length (no NUL
 * after it), so ASan and valgrind see any read past the end.  The cases
 * of issue 8 (duplicate names, "\u0000", lone surrogates, raw control
 * characters, integers beyond 2^53, inexact re-serialization) are here by
 * name; the round-trip tests check bit-exactness of doubles.
 */
#include "cm.h"

#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "json_int.h"

static char msg[512];

static chorus_err_t parse_n(const char *text, size_t len, const chorus__json_limits_t *lim,
                            cJSON **out, size_t *decoded) {
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    chorus_error_t *err = NULL;
    cJSON *j = NULL;
    chorus_err_t rc = chorus__json_parse(copy, len, lim, &j, decoded, &err);
    free(copy);
    snprintf(msg, sizeof(msg), "%s", err ? chorus_error_string(err) : "");
    if (rc) {
        assert_non_null(err);
        assert_int_equal(chorus_error_code(err), rc);
        assert_null(j);
    }
    chorus_error_destroy(err);
    if (out)
        *out = j;
    else
        cJSON_Delete(j);
    return rc;
}

static chorus_err_t parse(const char *text, cJSON **out) {
    return parse_n(text, strlen(text), NULL, out, NULL);
}

/* Parses, prints compactly; the printed text (malloc'd) or fails. */
static char *reprint(const char *text) {
    cJSON *j;
    if (parse(text, &j) != CHORUS_OK)
        fail_msg("'%s' refused: %s", text, msg);
    char *out = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(out);
    cJSON_Delete(j);
    return out;
}

static void expect(const char *text, chorus_err_t want, const char *in_msg) {
    chorus_err_t rc = parse(text, NULL);
    if (rc != want)
        fail_msg("'%s': got %s (%s), want %s", text, chorus_err_name(rc), msg,
                 chorus_err_name(want));
    if (in_msg && !strstr(msg, in_msg))
        fail_msg("'%s': '%s' not in '%s'", text, in_msg, msg);
}

/* ---- the defects of issue 8 ------------------------------------------- */

static void test_duplicates(void **state) {
    (void)state;
    expect("{\"sku\":\"SKU-B\",\"qty\":1,\"qty\":-5}", CHORUS_ERR_NOT_IJSON,
           "duplicate member name \"qty\"");
    expect("{\"a\":{\"b\":[{},{\"x\":1,\"y\":2,\"x\":3}]}}", CHORUS_ERR_NOT_IJSON,
           "a.b[1]: duplicate member name \"x\"");
    expect("{\"k\":1,\"\\u006b\":2}", CHORUS_ERR_NOT_IJSON, "duplicate member name \"k\"");
    expect("{\"k\":1,\"K\":2}", CHORUS_OK, NULL);
    expect("[{\"k\":1},{\"k\":2}]", CHORUS_OK, NULL); /* siblings, not one object */

    /* A large object: duplicates found by sorting, wherever they are. */
    for (int where = 0; where < 3; where++) {
        size_t n = 100000, cap = n * 16 + 64, o = 0;
        char *buf = malloc(cap);
        buf[o++] = '{';
        for (size_t i = 0; i < n; i++)
            o += (size_t)snprintf(buf + o, cap - o, "%s\"k%zu\":0", i ? "," : "", i);
        if (where == 0)
            o += (size_t)snprintf(buf + o, cap - o, ",\"k0\":1");
        else if (where == 1)
            o += (size_t)snprintf(buf + o, cap - o, ",\"k%zu\":1", n - 1);
        buf[o++] = '}';
        clock_t t0 = clock();
        chorus_err_t rc = parse_n(buf, o, &(chorus__json_limits_t){0}, NULL, NULL);
        double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
        assert_int_equal(rc, where < 2 ? CHORUS_ERR_NOT_IJSON : CHORUS_OK);
        assert_true(secs < 5); /* not quadratic: 10^10 comparisons would take minutes */
        free(buf);
    }
}

static void test_nul_escapes(void **state) {
    (void)state;
    expect("{\"event_type\":\"Order\\u0000Evil\"}", CHORUS_ERR_NOT_IJSON, "\\u0000");
    expect("\"0190f5e2-7c1a-7b3d-8e4f-1a2b3c4d5e6f\\u0000xyz\"", CHORUS_ERR_NOT_IJSON, NULL);
    expect("{\"a\\u0000b\":1}", CHORUS_ERR_NOT_IJSON, NULL);
    /* a raw NUL byte is a control character */
    assert_int_equal(parse_n("\"a\0b\"", 5, NULL, NULL, NULL), CHORUS_ERR_PARSE);
    assert_non_null(strstr(msg, "U+0000"));
    assert_int_equal(parse_n("[1]\0", 4, NULL, NULL, NULL), CHORUS_ERR_PARSE);
}

static void test_surrogates_and_noncharacters(void **state) {
    (void)state;
    expect("\"\\ud800\"", CHORUS_ERR_NOT_IJSON, "lone high surrogate");
    expect("\"\\udbff\\u0041\"", CHORUS_ERR_NOT_IJSON, "lone high surrogate");
    expect("\"\\ud800\\ud800\"", CHORUS_ERR_NOT_IJSON, "lone high surrogate");
    expect("\"\\udc00\"", CHORUS_ERR_NOT_IJSON, "lone low surrogate");
    expect("\"x\\udfff\"", CHORUS_ERR_NOT_IJSON, "lone low surrogate");
    expect("\"\\ud83d\"", CHORUS_ERR_NOT_IJSON, NULL); /* at the very end */
    expect("\"\\uFFFF\"", CHORUS_ERR_NOT_IJSON, "noncharacter");
    expect("\"\\ufdd0\"", CHORUS_ERR_NOT_IJSON, "noncharacter");
    expect("\"\\udbff\\udfff\"", CHORUS_ERR_NOT_IJSON, "noncharacter"); /* U+10FFFF */
    expect("\"\xed\xa0\x80\"", CHORUS_ERR_BAD_UTF8, NULL);                 /* raw surrogate */
    expect("\"\xef\xbf\xbe\"", CHORUS_ERR_NOT_IJSON, "noncharacter");    /* raw U+FFFE */
    char *s = reprint("\"\\ud83d\\ude00 \\u00e9\\u20ac\"");
    assert_string_equal(s, "\"\xf0\x9f\x98\x80 \xc3\xa9\xe2\x82\xac\"");
    free(s);
}

static void test_control_characters(void **state) {
    (void)state;
    for (int c = 1; c < 0x20; c++) {
        char buf[8] = {'"', 'a', (char)c, 'b', '"'};
        assert_int_equal(parse_n(buf, 5, NULL, NULL, NULL), CHORUS_ERR_PARSE);
        assert_non_null(strstr(msg, "must be escaped"));
    }
    /* escaped, they are fine, and print escaped again */
    char *s = reprint("\"\\t\\n\\r\\b\\f\\u0001\\u001f\\\"\\\\\\/\"");
    assert_string_equal(s, "\"\\t\\n\\r\\b\\f\\u0001\\u001f\\\"\\\\/\"");
    free(s);
    expect("\"\\x41\"", CHORUS_ERR_PARSE, "invalid escape");
    expect("\"\\u12\"", CHORUS_ERR_PARSE, "malformed \\u escape");
    expect("\"\\u12g4\"", CHORUS_ERR_PARSE, "malformed \\u escape");
}

static void test_integers(void **state) {
    (void)state;
    char *s = reprint("[9007199254740991,-9007199254740991,0,-0,1,123456789012345]");
    /* exact, where cJSON printed 9.00719925474099e+15 */
    assert_string_equal(s, "[9007199254740991,-9007199254740991,0,-0,1,123456789012345]");
    free(s);
    expect("9007199254740992", CHORUS_ERR_NOT_IJSON, "beyond");
    expect("-9007199254740992", CHORUS_ERR_NOT_IJSON, "beyond");
    expect("9007199254740993", CHORUS_ERR_NOT_IJSON, "beyond"); /* 2^53 + 1 */
    expect("18446744073709551616", CHORUS_ERR_NOT_IJSON, "beyond");
    expect("[01]", CHORUS_ERR_PARSE, "leading zero");
    expect("-01", CHORUS_ERR_PARSE, "leading zero");
    expect("+1", CHORUS_ERR_PARSE, NULL);
    expect("-", CHORUS_ERR_PARSE, NULL);
    expect("0x10", CHORUS_ERR_PARSE, "trailing");
    expect("1_000", CHORUS_ERR_PARSE, "trailing");
}

static void test_non_integers(void **state) {
    (void)state;
    char *s = reprint("[0.30000000000000004,0.1,1.5,-2.5e-3,1e20,1E+2,5e-324,1.7976931348623157e308]");
    assert_string_equal(s, "[0.30000000000000004,0.1,1.5,-0.0025,1e+20,100,4.94065645841247e-324,"
                           "1.7976931348623157e+308]");
    free(s);
    /* integral values beyond 2^53 - 1 come out with an exponent, so they
     * read back (an integer literal there would be refused) */
    s = reprint("[9007199254740992e0,1.8446744073709552e19,-1.2345678901234568E16]");
    assert_string_equal(s, "[9.007199254740992e+15,1.8446744073709552e+19,-1.2345678901234568e+16]");
    free(s);
    expect("1e400", CHORUS_ERR_NOT_IJSON, "overflows");
    expect("-1e400", CHORUS_ERR_NOT_IJSON, "overflows");
    expect("1e-400", CHORUS_ERR_NOT_IJSON, "underflows");
    expect("0.000e-999999", CHORUS_OK, NULL); /* zero is zero */
    expect("1.23456789012345678", CHORUS_ERR_NOT_IJSON, "18 significant digits");
    expect("1.00000000000000000000", CHORUS_OK, NULL); /* trailing zeros are not digits */
    expect("0.00000000000000000001", CHORUS_OK, NULL); /* nor leading ones */
    expect("1.", CHORUS_ERR_PARSE, NULL);
    expect(".5", CHORUS_ERR_PARSE, NULL);
    expect("1e", CHORUS_ERR_PARSE, NULL);
    expect("1e+", CHORUS_ERR_PARSE, NULL);
    expect("NaN", CHORUS_ERR_PARSE, NULL);
    expect("Infinity", CHORUS_ERR_PARSE, NULL);
    expect("-Infinity", CHORUS_ERR_PARSE, NULL);
}

/* Random doubles of every magnitude: printed, parsed, the same bits. */
static void test_double_round_trip(void **state) {
    (void)state;
    srand(7);
    for (int i = 0; i < 200000; i++) {
        uint64_t bits = 0;
        for (int k = 0; k < 4; k++)
            bits = bits << 16 | (uint64_t)(rand() & 0xFFFF);
        double d;
        memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d))
            continue;
        char text[48];
        assert_true(chorus__json_number(d, text, sizeof(text)));
        cJSON *j = NULL;
        if (parse(text, &j) != CHORUS_OK)
            fail_msg("%s (bits %016llx) refused: %s", text, (unsigned long long)bits, msg);
        uint64_t back;
        memcpy(&back, &j->valuedouble, sizeof(back));
        if (back != bits)
            fail_msg("%s: bits %016llx came back as %016llx", text, (unsigned long long)bits,
                     (unsigned long long)back);
        cJSON_Delete(j);
    }
    char t[48];
    assert_false(chorus__json_number(NAN, t, sizeof(t)));
    assert_false(chorus__json_number(INFINITY, t, sizeof(t)));
}

/* A process whose locale writes decimal commas still reads and writes JSON. */
static void test_locale(void **state) {
    (void)state;
    const char *names[] = {"de_DE.UTF-8", "fr_FR.UTF-8", "C.UTF-8"};
    const char *set = NULL;
    for (size_t i = 0; i < sizeof(names) / sizeof(*names) && !set; i++)
        set = setlocale(LC_NUMERIC, names[i]);
    char *s = reprint("[1.5,0.30000000000000004]");
    assert_string_equal(s, "[1.5,0.30000000000000004]");
    free(s);
    setlocale(LC_NUMERIC, "C");
}

/* ---- grammar ---------------------------------------------------------- */

static void test_grammar(void **state) {
    (void)state;
    const char *bad[] = {"", " ", "{", "}", "[", "]", "{\"a\":}", "{\"a\" 1}", "{'a':1}",
                         "{\"a\":1,}", "[1,]", "[,1]", "{,}", "{\"a\"}", "{1:2}", "[1 2]",
                         "tru", "nul", "falsey", "\"x", "[\"x]", "/*c*/1", "1 // c",
                         "\xef\xbb\xbf{}" /* BOM */, "{\"a\":1}}", "[1]]", "\"\\\"", "{\"a\":[}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        chorus_err_t rc = parse(bad[i], NULL);
        if (rc != CHORUS_ERR_PARSE)
            fail_msg("'%s': got %s (%s)", bad[i], chorus_err_name(rc), msg);
    }
    const char *good[] = {"{}", "[]", "0", "\"\"", "true", "false", "null", " [ ] ",
                          "\t{\n\"a\" :\r[ 1 , { } , [ ] , \"\" ]\n}\t", "[[[[]]]]"};
    for (size_t i = 0; i < sizeof(good) / sizeof(*good); i++)
        if (parse(good[i], NULL) != CHORUS_OK)
            fail_msg("'%s' refused: %s", good[i], msg);
    char *s = reprint(" { \"b\" : [ true , false , null , { } , [ ] ] , \"a\" : \"\" } ");
    assert_string_equal(s, "{\"b\":[true,false,null,{},[]],\"a\":\"\"}");
    free(s);
    /* every prefix of a document is refused, reading within its bounds */
    const char *doc = "{\"a\":[1,2.5,\"x\\u00e9\",{\"b\":null}],\"c\":true}";
    for (size_t n = 0; n < strlen(doc); n++)
        assert_int_not_equal(parse_n(doc, n, NULL, NULL, NULL), CHORUS_OK);
    assert_int_equal(parse_n(doc, strlen(doc), NULL, NULL, NULL), CHORUS_OK);
}

static void test_error_places(void **state) {
    (void)state;
    /* names are quoted cut on a character boundary: the message stays UTF-8 */
    char doc[256];
    snprintf(doc, sizeof(doc), "{\"%s\xc3\xa9\":01}", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    expect(doc, CHORUS_ERR_PARSE, "leading zero");
    assert_true(chorus__json_text_ok(msg, strlen(msg), NULL));
    snprintf(doc, sizeof(doc), "{\"%s\xe2\x82\xac\":1,\"%s\xe2\x82\xac\":2}",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
             "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb");
    expect(doc, CHORUS_ERR_NOT_IJSON, "duplicate member name");
    assert_true(chorus__json_text_ok(msg, strlen(msg), NULL));
    expect("{\"a\":[1,{\"b\":01}]}", CHORUS_ERR_PARSE, "a[1].b: number with a leading zero (offset 13)");
    expect("[1,2,\"\\ud800\"]", CHORUS_ERR_NOT_IJSON, "[2]: lone high surrogate");
    expect("{\"x\":{\"y\":1e999}}", CHORUS_ERR_NOT_IJSON, "x.y: number overflows");
}

/* The path before a message ("a.b[1].c: ...") is cut at its 200 bytes
 * between characters too, wherever that falls in a name (found by
 * tests/fuzz/fuzz_json: a path cut inside a character). */
static void test_error_path_cut_between_characters(void **state) {
    (void)state;
    for (int shift = 0; shift < 40; shift++) {
        char doc[1024];
        size_t o = (size_t)snprintf(doc, sizeof(doc), "{\"%.*s\":", shift,
                                    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
        for (int i = 0; i < 8; i++) /* names of 30 bytes and a 2-byte character */
            o += (size_t)snprintf(doc + o, sizeof(doc) - o, "{\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9\":");
        o += (size_t)snprintf(doc + o, sizeof(doc) - o, "01");
        assert_int_equal(parse(doc, NULL), CHORUS_ERR_PARSE);
        if (!chorus__json_text_ok(msg, strlen(msg), NULL))
            fail_msg("shift %d: not UTF-8 text: %s", shift, msg);
        assert_non_null(strstr(msg, "number with a leading zero"));
    }
}

/* ---- limits ----------------------------------------------------------- */

static void test_depth(void **state) {
    (void)state;
    chorus__json_limits_t lim = {.max_depth = 3};
    assert_int_equal(parse_n("[[[1]]]", 7, &lim, NULL, NULL), CHORUS_OK);
    assert_int_equal(parse_n("[[[[1]]]]", 9, &lim, NULL, NULL), CHORUS_ERR_TOO_DEEP);
    assert_int_equal(parse_n("{\"a\":{\"b\":{\"c\":{}}}}", 20, &lim, NULL, NULL),
                     CHORUS_ERR_TOO_DEEP);
    /* a million brackets: refused without recursing (ASan would see a
     * stack overflow) */
    size_t n = 1000000;
    char *b = malloc(n);
    memset(b, '[', n);
    lim.max_depth = 1000;
    assert_int_equal(parse_n(b, n, &lim, NULL, NULL), CHORUS_ERR_TOO_DEEP);
    /* and a thousand levels are fine, and print */
    size_t m = 1000;
    memset(b + m, ']', m);
    cJSON *j;
    assert_int_equal(parse_n(b, 2 * m, &lim, &j, NULL), CHORUS_OK);
    char *s = chorus__json_print(j, 0, NULL, NULL);
    assert_non_null(s);
    assert_int_equal(strlen(s), 2 * m);
    free(s);
    cJSON_Delete(j);
    free(b);
}

static void test_decoded_size(void **state) {
    (void)state;
    /* one MiB of small numbers: the amplification of issue 8 (about 40x) */
    size_t n = (size_t)1 << 20, o = 0;
    char *b = malloc(n + 2);
    b[o++] = '[';
    while (o + 2 < n)
        b[o++] = '1', b[o++] = ',';
    b[o++] = '1';
    b[o++] = ']';
    size_t decoded = 0;
    cJSON *j;
    assert_int_equal(parse_n(b, o, &(chorus__json_limits_t){0}, &j, &decoded), CHORUS_OK);
    assert_true(decoded > 30 * n); /* the amplification is real ... */
    assert_int_equal(decoded, chorus__json_decoded_size(j));
    cJSON_Delete(j);
    chorus__json_limits_t lim = {.max_decoded = 16 * n};
    assert_int_equal(parse_n(b, o, &lim, NULL, NULL), CHORUS_ERR_TOO_LARGE); /* ... and bounded */
    assert_non_null(strstr(msg, "decoded message exceeds"));
    free(b);
    /* strings count their bytes */
    lim.max_decoded = 1000;
    char big[2000];
    memset(big, 'x', sizeof(big));
    big[0] = '"';
    big[sizeof(big) - 1] = '"';
    assert_int_equal(parse_n(big, sizeof(big), &lim, NULL, NULL), CHORUS_ERR_TOO_LARGE);
}

/* ---- the printer ------------------------------------------------------ */

static void test_print_refuses(void **state) {
    (void)state;
    chorus_error_t *err = NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "n", NAN);
    assert_null(chorus__json_print(o, 0, NULL, &err));
    assert_int_equal(chorus_error_code(err), CHORUS_ERR_NOT_IJSON);
    chorus_error_destroy(err);
    cJSON_Delete(o);

    o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "a", 1);
    cJSON_AddNumberToObject(o, "a", 2);
    err = NULL;
    assert_null(chorus__json_print(o, 0, NULL, &err));
    assert_non_null(strstr(chorus_error_string(err), "duplicate member name \"a\""));
    chorus_error_destroy(err);
    cJSON_Delete(o);

    o = cJSON_CreateObject();
    cJSON_AddRawToObject(o, "r", "{\"x\":1,\"x\":2}");
    assert_null(chorus__json_print(o, 0, NULL, NULL));
    cJSON_Delete(o);

    o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "s", "bad \xff byte");
    assert_null(chorus__json_print(o, 0, NULL, NULL));
    cJSON_Delete(o);

    o = cJSON_CreateArray();
    cJSON_AddItemToArray(o, cJSON_CreateString("\xef\xbf\xbf"));
    assert_null(chorus__json_print(o, 0, NULL, NULL));
    cJSON_Delete(o);

    /* too deep to print */
    cJSON *root = cJSON_CreateArray(), *cur = root;
    for (int i = 0; i < CHORUS__JSON_MAX_DEPTH + 5; i++) {
        cJSON *n = cJSON_CreateArray();
        cJSON_AddItemToArray(cur, n);
        cur = n;
    }
    assert_null(chorus__json_print(root, 0, NULL, NULL));
    cJSON_Delete(root);
}

static void test_pretty(void **state) {
    (void)state;
    cJSON *j;
    assert_int_equal(parse("{\"a\":[1,{}],\"b\":{\"c\":\"d\"},\"e\":[]}", &j), CHORUS_OK);
    char *s = chorus__json_print(j, CHORUS__JSON_PRETTY, NULL, NULL);
    assert_string_equal(s, "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": {\n    \"c\": \"d\"\n  },\n"
                           "  \"e\": []\n}");
    /* pretty text is JSON too, and the same value */
    cJSON *back;
    assert_int_equal(parse(s, &back), CHORUS_OK);
    char *a = chorus__json_print(j, 0, NULL, NULL), *b2 = chorus__json_print(back, 0, NULL, NULL);
    assert_string_equal(a, b2);
    free(a);
    free(b2);
    free(s);
    cJSON_Delete(back);
    cJSON_Delete(j);
}

static void test_text_ok(void **state) {
    (void)state;
    size_t bad = 99;
    assert_true(chorus__json_text_ok("plain \xc3\xa9", 8, &bad));
    assert_false(chorus__json_text_ok("ab\xc3", 3, &bad));
    assert_int_equal(bad, 2);
    assert_false(chorus__json_text_ok("a\0b", 3, &bad));
    assert_int_equal(bad, 1);
    assert_false(chorus__json_text_ok("\xef\xb7\x90", 3, &bad)); /* U+FDD0 */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_nul_escapes),
        cmocka_unit_test(test_surrogates_and_noncharacters),
        cmocka_unit_test(test_control_characters),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_non_integers),
        cmocka_unit_test(test_double_round_trip),
        cmocka_unit_test(test_locale),
        cmocka_unit_test(test_grammar),
        cmocka_unit_test(test_error_places),
        cmocka_unit_test(test_error_path_cut_between_characters),
        cmocka_unit_test(test_depth),
        cmocka_unit_test(test_decoded_size),
        cmocka_unit_test(test_print_refuses),
        cmocka_unit_test(test_pretty),
        cmocka_unit_test(test_text_ok),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
