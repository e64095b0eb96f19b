/*
 * test_schema.c - the JSON Schema subset of lib/src/schema.c.
 *
 * Schemas and instances are written with single quotes for readability
 * (turned into double quotes before parsing; a real single quote is
 * \u0027) and parsed by chorus' own I-JSON parser, as a saga declaration
 * and an event's data are.  Every keyword is shown accepting and refusing,
 * with the exact message, and every compile-time refusal with its path.
 */
#include "cm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_int.h"
#include "schema_int.h"

static char err[512];

static cJSON *json(const char *text) {
    char *t = strdup(text);
    for (char *p = t; *p; p++)
        if (*p == '\'')
            *p = '"';
    chorus__json_limits_t lim = {.max_depth = 200};
    chorus_error_t *e = NULL;
    cJSON *v = NULL;
    if (chorus__json_parse(t, strlen(t), &lim, &v, NULL, &e) != CHORUS_OK)
        fail_msg("test JSON does not parse: %s: %s", text, chorus_error_string(e));
    free(t);
    return v;
}

static chorus__schema_t *compile(const char *schema) {
    cJSON *j = json(schema);
    chorus__schema_t *s = chorus__schema_compile(j, err, sizeof(err));
    cJSON_Delete(j); /* the compiled schema keeps its own copy */
    if (!s)
        fail_msg("schema %s refused: %s", schema, err);
    assert_string_equal(err, "");
    return s;
}

/* @p schema is refused with exactly @p want. */
static void refused(const char *schema, const char *want) {
    cJSON *j = json(schema);
    chorus__schema_t *s = chorus__schema_compile(j, err, sizeof(err));
    cJSON_Delete(j);
    if (s) {
        chorus__schema_free(s);
        fail_msg("schema %s compiled; want \"%s\"", schema, want);
    }
    if (strcmp(err, want) != 0)
        fail_msg("schema %s:\n  got  \"%s\"\n  want \"%s\"", schema, err, want);
    assert_true(chorus__json_text_ok(err, strlen(err), NULL));
}

/* @p instance against the compiled @p s: valid when @p want is NULL, else
 * invalid with exactly @p want (root "data"). */
static void check_with(const chorus__schema_t *s, const char *instance, const char *want) {
    cJSON *x = json(instance);
    bool ok = chorus__schema_validate(s, x, "data", err, sizeof(err));
    cJSON_Delete(x);
    if (ok && want)
        fail_msg("%s accepted; want \"%s\"", instance, want);
    if (!ok && !want)
        fail_msg("%s refused: %s", instance, err);
    if (want && strcmp(err, want) != 0)
        fail_msg("%s:\n  got  \"%s\"\n  want \"%s\"", instance, err, want);
    if (ok)
        assert_string_equal(err, "");
    assert_true(chorus__json_text_ok(err, strlen(err), NULL));
}

static void check(const char *schema, const char *instance, const char *want) {
    chorus__schema_t *s = compile(schema);
    check_with(s, instance, want);
    chorus__schema_free(s);
}

#define VALID NULL

/* ---- keywords ---------------------------------------------------------- */

static void test_type(void **state) {
    (void)state;
    static const char *const values[] = {"null", "true", "{}", "[]", "1.5", "7", "'s'"};
    static const char *const kinds[] = {"null",     "a boolean", "an object", "an array",
                                        "a number with a fractional part", "a number",
                                        "a string"};
    static const char *const types[] = {"null", "boolean", "object", "array", "number",
                                        "integer", "string"};
    static const char *const want[] = {"null", "a boolean", "an object", "an array",
                                       "a number", "an integer", "a string"};
    /* accepts[t][v]: does type t accept values[v] */
    static const bool accepts[7][7] = {
        {1, 0, 0, 0, 0, 0, 0}, {0, 1, 0, 0, 0, 0, 0}, {0, 0, 1, 0, 0, 0, 0},
        {0, 0, 0, 1, 0, 0, 0}, {0, 0, 0, 0, 1, 1, 0}, {0, 0, 0, 0, 0, 1, 0},
        {0, 0, 0, 0, 0, 0, 1}};
    for (int t = 0; t < 7; t++)
        for (int v = 0; v < 7; v++) {
            char schema[64], msg[128];
            snprintf(schema, sizeof(schema), "{'type':'%s'}", types[t]);
            snprintf(msg, sizeof(msg), "data: must be %s (is %s)", want[t], kinds[v]);
            check(schema, values[v], accepts[t][v] ? VALID : msg);
        }
    /* integer: an integral value, however written */
    check("{'type':'integer'}", "1.0", VALID);
    check("{'type':'integer'}", "-0", VALID);
    check("{'type':'integer'}", "1e300", VALID);
    check("{'type':'integer'}", "9007199254740991", VALID);
    check("{'type':'integer'}", "0.5", "data: must be an integer (is a number with a fractional part)");
    /* a list */
    check("{'type':['string','null']}", "null", VALID);
    check("{'type':['string','null']}", "'x'", VALID);
    check("{'type':['null','string']}", "3", "data: must be null or a string (is a number)");
    check("{'type':['boolean','array','object']}", "3",
          "data: must be a boolean, an object or an array (is a number)");
    check("{'type':['integer','number']}", "0.5", VALID); /* number covers integer */
    /* no type: anything */
    check("{}", "[1,{'a':null}]", VALID);
}

static void test_numbers(void **state) {
    (void)state;
    check("{'type':'integer','minimum':1}", "1", VALID);
    check("{'type':'integer','minimum':1}", "0", "data: must be an integer >= 1");
    check("{'type':'integer','minimum':1}", "'1'", "data: must be an integer >= 1 (is a string)");
    check("{'type':'number','maximum':2.5}", "2.5", VALID);
    check("{'type':'number','maximum':2.5}", "2.5000001", "data: must be a number <= 2.5");
    check("{'exclusiveMinimum':0}", "0.001", VALID);
    check("{'exclusiveMinimum':0}", "0", "data: must be a number > 0");
    check("{'exclusiveMaximum':10}", "9.99", VALID);
    check("{'exclusiveMaximum':10}", "10", "data: must be a number < 10");
    check("{'type':'integer','minimum':0,'maximum':1000000000000000}", "1000000000000001",
          "data: must be an integer >= 0 and <= 1000000000000000");
    check("{'minimum':-1.5,'exclusiveMaximum':1e-7}", "-2",
          "data: must be a number >= -1.5 and < 1e-07");
    /* bounds say nothing of other types */
    check("{'minimum':1}", "'text'", VALID);
    check("{'minimum':1}", "null", VALID);
}

static void test_strings(void **state) {
    (void)state;
    /* code points, not bytes: U+00E9 takes 2 bytes, U+1F600 takes 4 */
    const char *s = "{'type':'string','minLength':2,'maxLength':3}";
    check(s, "'ab'", VALID);
    check(s, "'\xc3\xa9\xc3\xa9\xc3\xa9'", VALID);
    check(s, "'\xf0\x9f\x98\x80\xf0\x9f\x98\x80'", VALID);
    check(s, "'\\u00e9\\u00e9\\u00e9\\u00e9'", "data: must be a string of 2 to 3 characters");
    check(s, "'\xf0\x9f\x98\x80'", "data: must be a string of 2 to 3 characters");
    check(s, "''", "data: must be a string of 2 to 3 characters");
    check("{'minLength':1}", "''", "data: must be a string of at least 1 character");
    check("{'maxLength':1}", "'ab'", "data: must be a string of at most 1 character");
    check("{'maxLength':0}", "'a'", "data: must be a string of at most 0 characters");
    check("{'minLength':36,'maxLength':36}", "'x'", "data: must be a string of exactly 36 characters");
    check("{'type':'string','maxLength':1000}", "7", "data: must be a string of at most 1000 characters (is a number)");
    check("{'maxLength':1}", "12345", VALID);
}

static void test_formats(void **state) {
    (void)state;
    const char *uuid = "{'type':'string','format':'uuid'}";
    check(uuid, "'0190f7d2-0000-7000-8000-00000000000a'", VALID);
    check(uuid, "'0190F7D2-ABCD-7000-8000-00000000000A'", VALID);
    check(uuid, "'00000000-0000-0000-0000-000000000000'", VALID);
    static const char *const bad_uuids[] = {
        "'0190f7d2-0000-7000-8000-00000000000'",   /* 35 */
        "'0190f7d2-0000-7000-8000-00000000000aa'", /* 37 */
        "'0190f7d200007000800000000000000a'",      /* no hyphens */
        "'0190f7d2-0000-7000-8000-00000000000g'",
        "'{0190f7d2-0000-7000-8000-00000000000a}'",
        "'0190f7d2_0000_7000_8000_00000000000a'",
        "''",
    };
    for (size_t i = 0; i < sizeof(bad_uuids) / sizeof(bad_uuids[0]); i++)
        check(uuid, bad_uuids[i], "data: must be a UUID (8-4-4-4-12 hex digits)");
    check(uuid, "5", "data: must be a UUID (is a number)");
    check("{'format':'uuid'}", "5", VALID); /* format: strings only */

    const char *dt = "{'type':'string','format':'date-time'}";
    check(dt, "'2024-05-01T12:00:00Z'", VALID);
    check(dt, "'2024-05-01T12:00:00.123456+02:00'", VALID);
    check(dt, "'2024-02-29T23:59:59-08:00'", VALID);
    const char *want = "data: must be an RFC 3339 date-time in the years 0001..9999, "
                       "e.g. 2024-05-01T12:00:00Z";
    check(dt, "'2024-05-01'", want);
    check(dt, "'2023-02-29T00:00:00Z'", want);
    check(dt, "'2024-05-01T12:00:00'", want); /* no offset */
    check(dt, "'2024-05-01 12:00'", want);
    check(dt, "'yesterday'", want);
}

static void test_objects(void **state) {
    (void)state;
    const char *order = "{'type':'object',"
                        " 'properties':{'order_id':{'type':'string','format':'uuid'},"
                        "               'total':{'type':'integer','minimum':0}},"
                        " 'required':['order_id','total'],"
                        " 'additionalProperties':false}";
    chorus__schema_t *s = compile(order);
    check_with(s, "{'order_id':'0190f7d2-0000-7000-8000-00000000000a','total':5}", VALID);
    check_with(s, "{'order_id':'0190f7d2-0000-7000-8000-00000000000a'}",
               "data: required member \"total\" is missing");
    check_with(s, "{}", "data: required member \"order_id\" is missing");
    check_with(s, "{'total':5,'order_id':'0190f7d2-0000-7000-8000-00000000000a','card':'4242'}",
               "data.card: unexpected member (additionalProperties is false)");
    check_with(s, "{'total':-1,'order_id':'x'}", "data.total: must be an integer >= 0");
    check_with(s, "{'order_id':'x','total':-1}", "data.order_id: must be a UUID (8-4-4-4-12 hex digits)");
    check_with(s, "[]", "data: must be an object (is an array)");
    chorus__schema_free(s);

    /* additionalProperties as a schema; properties alone allow others */
    check("{'properties':{'a':{'type':'string'}},'additionalProperties':{'type':'integer'}}",
          "{'a':'x','b':1,'c':2}", VALID);
    check("{'properties':{'a':{'type':'string'}},'additionalProperties':{'type':'integer'}}",
          "{'a':'x','b':1.5}", "data.b: must be an integer (is a number with a fractional part)");
    check("{'properties':{'a':{'type':'string'}}}", "{'b':[]}", VALID);
    check("{'additionalProperties':true}", "{'b':[]}", VALID);
    check("{'properties':{'secret':false}}", "{'secret':1}",
          "data.secret: no value is valid here (the schema is false)");
    check("{'properties':{'secret':false}}", "{}", VALID);
    check("{'required':['a']}", "'not an object'", VALID);
    check("{'required':[]}", "{}", VALID);
    check("{'properties':{}}", "{'a':1}", VALID); /* no member to look up (fuzz_schema) */
    check("{'properties':{},'additionalProperties':false}", "{'a':1}",
          "data.a: unexpected member (additionalProperties is false)");

    /* nested, and the first failure in document order */
    const char *nested = "{'properties':{'customer':{'type':'object','required':['id'],"
                         "  'properties':{'id':{'type':'string'},"
                         "    'address':{'type':'object','properties':{'zip':{'type':'string','maxLength':5}}}}}}}";
    check(nested, "{'customer':{'id':'c','address':{'zip':'12345'}}}", VALID);
    check(nested, "{'customer':{'id':'c','address':{'zip':'123456'}}}",
          "data.customer.address.zip: must be a string of at most 5 characters");
    check(nested, "{'customer':{'address':{'zip':'123456'}}}",
          "data.customer: required member \"id\" is missing");
}

static void test_arrays(void **state) {
    (void)state;
    const char *items = "{'type':'array','minItems':1,'maxItems':3,"
                        " 'items':{'type':'object','required':['sku','qty'],"
                        "   'properties':{'sku':{'type':'string','minLength':1},"
                        "                 'qty':{'type':'integer','minimum':1}}}}";
    chorus__schema_t *s = compile(items);
    check_with(s, "[{'sku':'A','qty':1}]", VALID);
    check_with(s, "[{'sku':'A','qty':0}]", "data[0].qty: must be an integer >= 1");
    check_with(s, "[{'sku':'A','qty':1},{'sku':'B','qty':2.5}]",
               "data[1].qty: must be an integer >= 1 (is a number with a fractional part)");
    check_with(s, "[{'sku':'A','qty':1},{'qty':2}]", "data[1]: required member \"sku\" is missing");
    check_with(s, "[]", "data: must be an array of 1 to 3 items");
    check_with(s, "[{'sku':'A','qty':1},{'sku':'A','qty':1},{'sku':'A','qty':1},{'sku':'A','qty':1}]",
               "data: must be an array of 1 to 3 items");
    check_with(s, "{}", "data: must be an array of 1 to 3 items (is an object)");
    chorus__schema_free(s);
    check("{'minItems':1}", "[]", "data: must be an array of at least 1 item");
    check("{'maxItems':2}", "[1,2,3]", "data: must be an array of at most 2 items");
    check("{'maxItems':2}", "'abc'", VALID);
    check("{'items':false}", "[]", VALID);
    check("{'items':false}", "[1]", "data[0]: no value is valid here (the schema is false)");
    check("{'items':{'items':{'type':'null'}}}", "[[null],[null,null,0]]",
          "data[1][2]: must be null (is a number)");
}

static void test_const_enum(void **state) {
    (void)state;
    check("{'const':1}", "1.0", VALID);
    check("{'const':1}", "1e0", VALID);
    check("{'const':0}", "-0", VALID);
    check("{'const':1}", "'1'", "data: must equal 1 (const)");
    check("{'const':1}", "true", "data: must equal 1 (const)");
    check("{'const':true}", "false", "data: must equal true (const)");
    check("{'const':null}", "null", VALID);
    check("{'const':null}", "0", "data: must equal null (const)");
    check("{'const':'PENDING'}", "'PENDING'", VALID);
    check("{'const':'PENDING'}", "'pending'", "data: must equal \"PENDING\" (const)");
    /* objects member by member, in any order; arrays in order */
    const char *obj = "{'const':{'a':1,'b':[1,{'c':null}]}}";
    check(obj, "{'b':[1.0,{'c':null}],'a':1}", VALID);
    check(obj, "{'a':1,'b':[{'c':null},1]}", "data: must equal {\"a\":1,\"b\":[1,{\"c\":null}]} (const)");
    check(obj, "{'a':1}", "data: must equal {\"a\":1,\"b\":[1,{\"c\":null}]} (const)");
    check(obj, "{'a':1,'b':[1,{'c':null}],'d':0}",
          "data: must equal {\"a\":1,\"b\":[1,{\"c\":null}]} (const)");
    check(obj, "{'a':1,'c':[1,{'c':null}]}",
          "data: must equal {\"a\":1,\"b\":[1,{\"c\":null}]} (const)");
    check("{'const':[1,2]}", "[1,2,3]", "data: must equal [1,2] (const)");
    check("{'const':[]}", "{}", "data: must equal [] (const)");
    check("{'const':{}}", "{}", VALID);

    const char *e = "{'enum':['card','cash',null,2]}";
    check(e, "'cash'", VALID);
    check(e, "null", VALID);
    check(e, "2.0", VALID);
    check(e, "'CASH'", "data: must be one of [\"card\",\"cash\",null,2] (enum)");
    check(e, "{}", "data: must be one of [\"card\",\"cash\",null,2] (enum)");
    check("{'enum':[{'x':[1]}]}", "{'x':[1]}", VALID);
    /* a long enum is shown cut, between characters */
    char big[2048] = "{'enum':[";
    for (int i = 0; i < 40; i++)
        strcat(big, i ? ",'\xc3\xa9t\xc3\xa9'" : "'\xc3\xa9t\xc3\xa9'");
    strcat(big, "]}");
    chorus__schema_t *s = compile(big);
    check_with(s, "'\xc3\xa9t\xc3\xa9'", VALID);
    cJSON *x = json("'ete'");
    assert_false(chorus__schema_validate(s, x, "data", err, sizeof(err)));
    assert_non_null(strstr(err, "... (enum)"));
    assert_true(strlen(err) < 200);
    assert_true(chorus__json_text_ok(err, strlen(err), NULL));
    cJSON_Delete(x);
    chorus__schema_free(s);
}

static void test_boolean_schemas(void **state) {
    (void)state;
    check("true", "{'anything':[1,2,3]}", VALID);
    check("false", "null", "data: no value is valid here (the schema is false)");
    check("{}", "false", VALID);
}

static void test_refs(void **state) {
    (void)state;
    const char *s = "{'$schema':'https://json-schema.org/draft/2020-12/schema',"
                    " '$id':'https://example.com/order.json',"
                    " 'type':'object',"
                    " 'properties':{'a':{'$ref':'#/$defs/uuid'},"
                    "               'b':{'$ref':'#/$defs/money','maximum':100}},"
                    " '$defs':{'uuid':{'type':'string','format':'uuid'},"
                    "          'money':{'$ref':'#/$defs/cents','description':'an amount'},"
                    "          'cents':{'type':'integer','minimum':0}}}";
    chorus__schema_t *c = compile(s);
    check_with(c, "{'a':'0190f7d2-0000-7000-8000-00000000000a','b':100}", VALID);
    check_with(c, "{'a':'nope'}", "data.a: must be a UUID (8-4-4-4-12 hex digits)");
    check_with(c, "{'b':-1}", "data.b: must be an integer >= 0");  /* through two $refs */
    check_with(c, "{'b':101}", "data.b: must be a number <= 100"); /* the $ref's sibling */
    chorus__schema_free(c);

    /* recursive through the instance: a tree, fine */
    const char *tree = "{'$ref':'#/$defs/node','$defs':{'node':{'type':'object',"
                       " 'required':['v'],'properties':{'v':{'type':'integer'},"
                       " 'kids':{'type':'array','items':{'$ref':'#/$defs/node'}}}}}}";
    check(tree, "{'v':1,'kids':[{'v':2},{'v':3,'kids':[{'v':4,'kids':[]}]}]}", VALID);
    check(tree, "{'v':1,'kids':[{'v':2},{'v':3,'kids':[{'kids':[]}]}]}",
          "data.kids[1].kids[0]: required member \"v\" is missing");

    /* JSON pointer escapes in NAME */
    check("{'$ref':'#/$defs/a~1b~0c','$defs':{'a/b~c':{'const':1}}}", "1", VALID);
    check("{'$ref':'#/$defs/a~1b~0c','$defs':{'a/b~c':{'const':1}}}", "2", "data: must equal 1 (const)");
    check("{'$defs':{'unused':{'type':'string'}}}", "1", VALID);
    check("{'$ref':'#/$defs/f','$defs':{'f':false}}", "1",
          "data: no value is valid here (the schema is false)");
}

/* A tree deeper than the validator follows (built by hand: the parser
 * stops at its own depth). */
static void test_instance_depth(void **state) {
    (void)state;
    chorus__schema_t *s = compile("{'$ref':'#/$defs/n','$defs':{'n':{'items':{'$ref':'#/$defs/n'}}}}");
    cJSON *root = cJSON_CreateArray(), *at = root;
    for (int i = 0; i < 100000; i++) {
        cJSON *next = cJSON_CreateArray();
        cJSON_AddItemToArray(at, next);
        at = next;
    }
    assert_false(chorus__schema_validate(s, root, "data", err, sizeof(err)));
    assert_non_null(strstr(err, ": nests deeper than 128 levels"));
    assert_true(strncmp(err, "data[0][0][0]", 13) == 0);
    assert_non_null(strstr(err, "...: "));
    assert_true(chorus__json_text_ok(err, strlen(err), NULL));
    /* a flat schema does not follow the instance down */
    chorus__schema_t *flat = compile("{'type':'array'}");
    assert_true(chorus__schema_validate(flat, root, "data", err, sizeof(err)));
    chorus__schema_free(flat);
    /* cJSON_Delete recurses: cut the chain before freeing it */
    while (root) {
        cJSON *next = cJSON_DetachItemFromArray(root, 0);
        cJSON_Delete(root);
        root = next;
    }
    chorus__schema_free(s);
}

static void test_annotations(void **state) {
    (void)state;
    check("{'title':'Order','description':'d','$comment':'c','examples':[{'x':1}],"
          "'default':{'deep':[[[]]]},'type':'object'}", "{}", VALID);
    refused("{'title':1}", "title: must be a string");
    refused("{'description':null}", "description: must be a string");
    refused("{'$comment':[]}", "$comment: must be a string");
    refused("{'examples':{}}", "examples: must be an array");
    refused("{'$id':5}", "$id: must be a string");
}

/* ---- compile-time refusals --------------------------------------------- */

static void test_refusals(void **state) {
    (void)state;
    const char *unknown = ": unknown keyword (not in chorus' subset of JSON Schema 2020-12)";
    char want[256];
    refused("{'requried':['a']}", "requried: unknown keyword (not in chorus' subset of JSON Schema 2020-12)");
    snprintf(want, sizeof(want), "properties.total.exclusivemaximum%s", unknown);
    refused("{'properties':{'total':{'type':'integer','exclusivemaximum':5}}}", want);
    static const char *const unsupported[] = {"oneOf", "anyOf", "allOf", "not", "pattern",
                                              "prefixItems", "if", "definitions", "uniqueItems",
                                              "patternProperties", "dependentRequired", "$anchor"};
    for (size_t i = 0; i < sizeof(unsupported) / sizeof(unsupported[0]); i++) {
        char schema[128];
        snprintf(schema, sizeof(schema), "{'items':{'%s':[]}}", unsupported[i]);
        snprintf(want, sizeof(want), "items.%s%s", unsupported[i], unknown);
        refused(schema, want);
    }
    snprintf(want, sizeof(want), "properties[\"ship to\"][\"x y\"]%s", unknown);
    refused("{'properties':{'ship to':{'x y':1}}}", want);

    /* not a schema */
    refused("3", "must be a schema (an object, true or false)");
    refused("null", "must be a schema (an object, true or false)");
    refused("{'properties':{'a':'string'}}", "properties.a: must be a schema (an object, true or false)");
    refused("{'items':[{}]}",
            "items: must be one schema (the array form is 2020-12's prefixItems, which is not supported)");
    refused("{'additionalProperties':'no'}",
            "additionalProperties: must be a schema (an object, true or false)");
    refused("{'properties':[]}", "properties: must be an object of schemas");

    /* type */
    refused("{'type':'str'}", "type: must be \"null\", \"boolean\", \"object\", \"array\", \"number\", "
                              "\"integer\" or \"string\", or an array of them");
    refused("{'type':['string','int']}", "type[1]: must be \"null\", \"boolean\", \"object\", "
                                         "\"array\", \"number\", \"integer\" or \"string\"");
    refused("{'type':['string','string']}", "type[1]: \"string\" is listed twice");
    refused("{'type':[]}", "type: must be a type name or a non-empty array of them");
    refused("{'type':1}", "type: must be a type name or a non-empty array of them");

    /* required */
    refused("{'required':'a'}", "required: must be an array of member names");
    refused("{'required':['a',1]}", "required[1]: must be a string");
    refused("{'required':['a','b','a']}", "required[2]: is listed twice");

    /* counts and bounds */
    refused("{'minItems':-1}", "minItems: must be a non-negative integer");
    refused("{'maxItems':1.5}", "maxItems: must be a non-negative integer");
    refused("{'minLength':'1'}", "minLength: must be a non-negative integer");
    refused("{'maxLength':null}", "maxLength: must be a non-negative integer");
    refused("{'properties':{'total':{'minimum':'0'}}}", "properties.total.minimum: must be a number");
    refused("{'maximum':[]}", "maximum: must be a number");
    refused("{'exclusiveMinimum':true}",
            "exclusiveMinimum: must be a number (in 2020-12 the bound itself; the boolean form is draft 4)");
    refused("{'exclusiveMaximum':'5'}", "exclusiveMaximum: must be a number");

    /* enum, const, format */
    refused("{'enum':[]}", "enum: must be a non-empty array");
    refused("{'enum':'a'}", "enum: must be a non-empty array");
    refused("{'format':'email'}", "format: \"email\" is not supported (only \"uuid\" and \"date-time\")");
    refused("{'format':'UUID'}", "format: \"UUID\" is not supported (only \"uuid\" and \"date-time\")");
    refused("{'format':1}", "format: must be \"uuid\" or \"date-time\"");

    /* top-only keywords */
    refused("{'$schema':'http://json-schema.org/draft-07/schema#'}",
            "$schema: must be \"https://json-schema.org/draft/2020-12/schema\" (the draft this validator implements)");
    refused("{'items':{'$schema':'https://json-schema.org/draft/2020-12/schema'}}",
            "items.$schema: only at the top of the schema");
    refused("{'items':{'$id':'x'}}", "items.$id: only at the top of the schema (a nested $id starts another document)");
    refused("{'items':{'$defs':{}}}", "items.$defs: only at the top of the schema");
    refused("{'$defs':[]}", "$defs: must be an object of schemas");
    refused("{'$defs':{'a':{'type':'void'}}}",
            "$defs.a.type: must be \"null\", \"boolean\", \"object\", \"array\", \"number\", "
            "\"integer\" or \"string\", or an array of them");
    check("{'$schema':'https://json-schema.org/draft/2020-12/schema#'}", "1", VALID);
}

static void test_ref_refusals(void **state) {
    (void)state;
    refused("{'$ref':'#/$defs/missing','$defs':{'there':{}}}",
            "$ref: \"#/$defs/missing\" names no member of the top-level $defs");
    refused("{'$ref':'#/$defs/a'}", "$ref: \"#/$defs/a\" names no member of the top-level $defs");
    refused("{'$ref':'#/definitions/a'}",
            "$ref: must be \"#/$defs/NAME\" (only references to the top-level $defs)");
    refused("{'$ref':'other.json#/$defs/a'}",
            "$ref: must be \"#/$defs/NAME\" (only references to the top-level $defs)");
    refused("{'$ref':'#'}", "$ref: must be \"#/$defs/NAME\" (only references to the top-level $defs)");
    refused("{'$ref':5}", "$ref: must be \"#/$defs/NAME\" (only references to the top-level $defs)");
    refused("{'$ref':'#/$defs/a/properties/b','$defs':{'a':{}}}",
            "$ref: \"#/$defs/a/properties/b\": must name a member of $defs, not a place inside one");
    refused("{'$ref':'#/$defs/a%20b','$defs':{'a b':{}}}",
            "$ref: \"#/$defs/a%20b\": percent-encoding is not supported");
    refused("{'$ref':'#/$defs/a~2','$defs':{'a~2':{}}}",
            "$ref: \"#/$defs/a~2\": '~' must be escaped as \"~0\"");
    refused("{'properties':{'x':{'$ref':'#/$defs/y'}}}",
            "properties.x.$ref: \"#/$defs/y\" names no member of the top-level $defs");

    /* loops of $refs that never look at the instance */
    refused("{'$defs':{'a':{'$ref':'#/$defs/a'}}}",
            "$defs.a.$ref: $ref cycle \"a\" -> \"a\" never reaches a schema to check");
    refused("{'$ref':'#/$defs/a','$defs':{'a':{'$ref':'#/$defs/b'},'b':{'type':'string','$ref':'#/$defs/a'}}}",
            "$defs.a.$ref: $ref cycle \"a\" -> \"b\" -> \"a\" never reaches a schema to check");
    refused("{'$defs':{'x':{'$ref':'#/$defs/a'},'a':{'$ref':'#/$defs/b'},'b':{'$ref':'#/$defs/c'},"
            "'c':{'$ref':'#/$defs/a'}}}",
            "$defs.a.$ref: $ref cycle \"a\" -> \"b\" -> \"c\" -> \"a\" never reaches a schema to check");
    /* a long one is shown cut */
    char big[2048] = "{'$defs':{";
    for (int i = 0; i < 20; i++) {
        char one[64];
        snprintf(one, sizeof(one), "%s'd%d':{'$ref':'#/$defs/d%d'}", i ? "," : "", i, (i + 1) % 20);
        strcat(big, one);
    }
    strcat(big, "}}");
    refused(big, "$defs.d0.$ref: $ref cycle \"d0\" -> \"d1\" -> \"d2\" -> \"d3\" -> \"d4\" -> \"d5\" -> "
                 "... -> \"d0\" never reaches a schema to check");
}

/* {'items':{'items': ... {}}} with @p levels objects in all. */
static char *nested_items(int levels) {
    char *s = calloc((size_t)levels * 10 + 8, 1);
    for (int i = 1; i < levels; i++)
        strcat(s, "{'items':");
    strcat(s, "{}");
    for (int i = 1; i < levels; i++)
        strcat(s, "}");
    return s;
}

static void test_schema_depth(void **state) {
    (void)state;
    char *s = nested_items(64);
    check(s, "[[[]]]", VALID);
    free(s);
    s = nested_items(65);
    refused(s, "the schema nests deeper than 64 levels");
    free(s);
    /* annotations count too: the whole document is copied */
    char def[256] = "{'default':";
    for (int i = 0; i < 64; i++)
        strcat(def, "[");
    for (int i = 0; i < 64; i++)
        strcat(def, "]");
    strcat(def, "}");
    refused(def, "the schema nests deeper than 64 levels");
    def[strlen(def) - 2] = '}';
    def[strlen(def) - 1] = '\0';
    memmove(def + 11, def + 12, strlen(def + 12) + 1); /* one '[' less */
    check(def, "1", VALID);
}

/* ---- messages ------------------------------------------------------------ */

static void test_paths(void **state) {
    (void)state;
    const char *s = "{'additionalProperties':{'type':'string'}}";
    check(s, "{'ship to':1}", "data[\"ship to\"]: must be a string (is a number)");
    check(s, "{'_ok$1':1}", "data._ok$1: must be a string (is a number)");
    check(s, "{'1st':1}", "data[\"1st\"]: must be a string (is a number)");
    check(s, "{'':1}", "data[\"\"]: must be a string (is a number)");
    check(s, "{'a\\\"b\\\\c\\n':1}", "data[\"a\\\"b\\\\c\\u000a\"]: must be a string (is a number)");
    check(s, "{'\xc3\xa9t\xc3\xa9':1}", "data[\"\xc3\xa9t\xc3\xa9\"]: must be a string (is a number)");
    /* a long name is cut between characters */
    char inst[512] = "{'";
    for (int i = 0; i < 100; i++)
        strcat(inst, "\xe2\x82\xac"); /* U+20AC, 3 bytes */
    strcat(inst, "':1}");
    chorus__schema_t *c = compile(s);
    cJSON *x = json(inst);
    assert_false(chorus__schema_validate(c, x, "data", err, sizeof(err)));
    assert_true(strncmp(err, "data[\"\xe2\x82\xac", 9) == 0);
    assert_non_null(strstr(err, "\xe2\x82\xac...\"]: must be a string (is a number)"));
    assert_true(chorus__json_text_ok(err, strlen(err), NULL));
    /* any err size: cut between characters, a prefix of the whole */
    char full[512];
    snprintf(full, sizeof(full), "%s", err);
    for (size_t n = 1; n < strlen(full) + 2; n++) {
        char small[512];
        memset(small, 'x', sizeof(small));
        assert_false(chorus__schema_validate(c, x, "data", small, n));
        assert_true(strlen(small) < n);
        assert_true(strncmp(small, full, strlen(small)) == 0);
        assert_true(strlen(small) + 3 >= (n - 1 < strlen(full) ? n - 1 : strlen(full)));
        assert_true(chorus__json_text_ok(small, strlen(small), NULL));
    }
    assert_false(chorus__schema_validate(c, x, "data", NULL, 0));
    cJSON_Delete(x);
    /* a name that is not UTF-8 (a tree built by hand) is shown escaped */
    x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "bad\xff\xc3", 1);
    assert_false(chorus__schema_validate(c, x, "data", err, sizeof(err)));
    assert_string_equal(err, "data[\"bad\\ufffd\\ufffd\"]: must be a string (is a number)");
    cJSON_Delete(x);
    chorus__schema_free(c);

    /* root names */
    c = compile("{'type':'string'}");
    x = json("1");
    assert_false(chorus__schema_validate(c, x, "", err, sizeof(err)));
    assert_string_equal(err, "must be a string (is a number)");
    assert_false(chorus__schema_validate(c, x, NULL, err, sizeof(err)));
    assert_string_equal(err, "must be a string (is a number)");
    assert_false(chorus__schema_validate(c, x, "OrderPlaced.data", err, sizeof(err)));
    assert_string_equal(err, "OrderPlaced.data: must be a string (is a number)");
    cJSON_Delete(x);
    chorus__schema_free(c);

    c = compile("{'additionalProperties':{'type':'string'}}");
    x = json("{'a':1}");
    assert_false(chorus__schema_validate(c, x, "", err, sizeof(err)));
    assert_string_equal(err, "a: must be a string (is a number)");
    cJSON_Delete(x);
    chorus__schema_free(c);

    /* a compile-time path through a name that is not an identifier */
    refused("{'properties':{'ship to':{'maxLength':-1}}}",
            "properties[\"ship to\"].maxLength: must be a non-negative integer");
}

/* A deep path keeps its beginning and says it was cut. */
static void test_long_path(void **state) {
    (void)state;
    chorus__schema_t *s = compile("{'$ref':'#/$defs/n','$defs':{'n':{'type':['object','integer'],"
                                  "'additionalProperties':{'$ref':'#/$defs/n'}}}}");
    char inst[4096] = "", tail[256] = "";
    for (int i = 0; i < 60; i++) {
        char one[64];
        snprintf(one, sizeof(one), "{'member_number_%02d':", i);
        strcat(inst, one);
        strcat(tail, "}");
    }
    strcat(inst, "'leaf'");
    strcat(inst, tail);
    cJSON *x = json(inst);
    assert_false(chorus__schema_validate(s, x, "data", err, sizeof(err)));
    assert_true(strncmp(err, "data.member_number_00.member_number_01.", 39) == 0);
    assert_non_null(strstr(err, "...: must be an object or an integer (is a string)"));
    assert_true(strlen(err) < 400);
    cJSON_Delete(x);
    chorus__schema_free(s);
}

/* Trees built by hand that are not JSON. */
static void test_not_json(void **state) {
    (void)state;
    chorus__schema_t *s = compile("{'properties':{'n':{'type':'number'},'r':{}}}");
    cJSON *x = cJSON_CreateObject();
    cJSON_AddNumberToObject(x, "n", NAN);
    assert_false(chorus__schema_validate(s, x, "data", err, sizeof(err)));
    assert_string_equal(err, "data.n: is not a JSON value (a raw, invalid or non-finite cJSON node)");
    cJSON_Delete(x);
    x = cJSON_CreateObject();
    cJSON_AddRawToObject(x, "r", "{not json");
    assert_false(chorus__schema_validate(s, x, "data", err, sizeof(err)));
    assert_string_equal(err, "data.r: is not a JSON value (a raw, invalid or non-finite cJSON node)");
    cJSON_Delete(x);
    assert_false(chorus__schema_validate(s, NULL, "data", err, sizeof(err)));
    assert_string_equal(err, "data: is missing");
    assert_false(chorus__schema_validate(NULL, NULL, "data", err, sizeof(err)));
    assert_string_equal(err, "data: no schema");
    chorus__schema_free(s);
    chorus__schema_free(NULL);

    assert_null(chorus__schema_compile(NULL, err, sizeof(err)));
    assert_string_equal(err, "no schema");
    /* a const that is not I-JSON cannot be compared, nor shown */
    cJSON *bad = cJSON_CreateObject();
    cJSON_AddNumberToObject(bad, "const", INFINITY);
    assert_null(chorus__schema_compile(bad, err, sizeof(err)));
    assert_string_equal(err, "const: must be I-JSON (text strings, finite numbers, unique member names)");
    cJSON_Delete(bad);
    bad = cJSON_CreateObject();
    cJSON_AddStringToObject(bad, "type", "string");
    cJSON_AddStringToObject(bad, "type", "number");
    assert_null(chorus__schema_compile(bad, err, sizeof(err)));
    assert_string_equal(err, "type: keyword appears twice");
    cJSON_Delete(bad);
    /* compile errors fit any err size */
    bad = json("{'properties':{'\xc3\xa9\xc3\xa9\xc3\xa9':{'type':'x'}}}");
    for (size_t n = 1; n < 40; n++) {
        char small[64];
        assert_null(chorus__schema_compile(bad, small, n));
        assert_true(strlen(small) < n);
        assert_true(chorus__json_text_ok(small, strlen(small), NULL));
    }
    assert_null(chorus__schema_compile(bad, NULL, 0));
    cJSON_Delete(bad);
}

/* The compiled schema outlives the tree it came from (ASan would see a
 * use after free), and one compiled schema serves many validations. */
static void test_ownership(void **state) {
    (void)state;
    cJSON *j = json("{'properties':{'status':{'enum':['a','b']},'k':{'const':{'x':[1]}}},"
                    "'required':['status']}");
    chorus__schema_t *s = chorus__schema_compile(j, err, sizeof(err));
    assert_non_null(s);
    cJSON_Delete(j);
    for (int i = 0; i < 3; i++) {
        check_with(s, "{'status':'a','k':{'x':[1]}}", VALID);
        check_with(s, "{'status':'c'}", "data.status: must be one of [\"a\",\"b\"] (enum)");
        check_with(s, "{'status':'b','k':{'x':[2]}}", "data.k: must equal {\"x\":[1]} (const)");
        check_with(s, "{'k':1}", "data: required member \"status\" is missing");
    }
    chorus__schema_free(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_type),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_formats),
        cmocka_unit_test(test_objects),
        cmocka_unit_test(test_arrays),
        cmocka_unit_test(test_const_enum),
        cmocka_unit_test(test_boolean_schemas),
        cmocka_unit_test(test_refs),
        cmocka_unit_test(test_instance_depth),
        cmocka_unit_test(test_annotations),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_ref_refusals),
        cmocka_unit_test(test_schema_depth),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_long_path),
        cmocka_unit_test(test_not_json),
        cmocka_unit_test(test_ownership),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
