/* Saga declarations: the real order-fulfillment saga, what each service
 * derives from it, and the declarations chorus must refuse (and why). */
#include "cm.h"
#include "chorus/chorus.h"
#include "json_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static chorus_saga_t *load_real(void) {
    const char *root = getenv("CHORUS_SOURCE_ROOT");
    char path[1024], err[1024] = "";
    snprintf(path, sizeof(path), "%s/sagas/order_fulfillment.json", root ? root : ".");
    chorus_saga_t *saga = chorus_saga_load(path, err, sizeof(err));
    if (!saga)
        fail_msg("%s", err);
    return saga;
}

/* @p n strings, in this order, and no others. */
static void assert_list(size_t n, const char *const *got, const char *const *want,
                        size_t nwant) {
    assert_int_equal(n, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(got[i], want[i]);
}

#define LIST(...) (const char *const[]){__VA_ARGS__}, \
    sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *)

static void check_consumes(const chorus_saga_t *s, const char *svc, const char *const *want,
                           size_t nwant) {
    const char *const *got;
    size_t n = chorus_saga_consumes(s, svc, &got);
    assert_list(n, got, want, nwant);
}

static void check_bindings(const chorus_saga_t *s, const char *svc, const char *const *want,
                           size_t nwant) {
    const char *const *got;
    size_t n = chorus_saga_bindings(s, svc, &got);
    assert_list(n, got, want, nwant);
}

static void real_saga_basics(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    assert_string_equal(chorus_saga_name(s), "order_fulfillment");
    assert_int_equal(chorus_saga_deadline_ms(s), 8000);
    assert_string_equal(chorus_saga_deadline_owner(s), "order");
    assert_true(chorus_saga_is_terminal(s, "OrderCompleted"));
    assert_true(chorus_saga_is_terminal(s, "OrderCancelled"));
    assert_false(chorus_saga_is_terminal(s, "OrderPlaced"));
    assert_false(chorus_saga_is_terminal(s, "PaymentFailed"));
    const char *const *names;
    size_t n = chorus_saga_services(s, &names);
    assert_list(n, names,
                LIST("order", "payment", "inventory", "shipping", "monitor"));
    chorus_saga_destroy(s);
    chorus_saga_destroy(NULL);
}

static void real_saga_consumes(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    check_consumes(s, "order", LIST("PaymentFailed", "PaymentRefunded", "ShipmentCancelled",
                                    "ShipmentScheduled"));
    check_consumes(s, "payment",
                   LIST("InsufficientStock", "InventoryReleased", "OrderCancelled", "OrderPlaced"));
    check_consumes(s, "inventory", LIST("OrderCancelled", "PaymentSucceeded", "ShippingFailed"));
    /* the pivot hears the cancellation request, nobody else does */
    check_consumes(s, "shipping", LIST("CancellationRequested", "InventoryReserved"));
    check_consumes(s, "monitor",
                   LIST("CancellationRefused", "CancellationRequested", "InsufficientStock",
                        "InventoryReleased", "InventoryReserved", "OrderCancelled",
                        "OrderCompleted", "OrderPlaced", "PaymentFailed", "PaymentRefunded",
                        "PaymentSucceeded", "ShipmentCancelled", "ShipmentScheduled",
                        "ShippingFailed"));
    const char *const *got = NULL;
    assert_int_equal(chorus_saga_consumes(s, "billing", &got), 0);
    assert_non_null(got);
    chorus_saga_destroy(s);
}

static void real_saga_bindings(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    check_bindings(s, "order",
                   LIST("payment.PaymentFailed", "payment.PaymentRefunded",
                        "shipping.ShipmentCancelled", "shipping.ShipmentScheduled"));
    check_bindings(s, "payment",
                   LIST("inventory.InsufficientStock", "inventory.InventoryReleased",
                        "order.OrderCancelled", "order.OrderPlaced"));
    check_bindings(s, "inventory",
                   LIST("order.OrderCancelled", "payment.PaymentSucceeded",
                        "shipping.ShippingFailed"));
    check_bindings(s, "shipping",
                   LIST("inventory.InventoryReserved", "order.CancellationRequested"));
    check_bindings(s, "monitor",
                   LIST("inventory.InsufficientStock", "inventory.InventoryReleased",
                        "inventory.InventoryReserved", "order.CancellationRequested",
                        "order.OrderCancelled", "order.OrderCompleted", "order.OrderPlaced",
                        "payment.PaymentFailed", "payment.PaymentRefunded",
                        "payment.PaymentSucceeded", "shipping.CancellationRefused",
                        "shipping.ShipmentCancelled", "shipping.ShipmentScheduled",
                        "shipping.ShippingFailed"));
    const char *const *got;
    assert_int_equal(chorus_saga_bindings(s, "billing", &got), 0);
    chorus_saga_destroy(s);
}

static void real_saga_permissions(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char c[512], w[512], r[512], t[512];
    assert_int_equal(chorus_saga_permissions(s, "payment", NULL, c, w, r, t, sizeof(c)),
                     CHORUS_OK);
    assert_string_equal(c, "^(chorus\\.payment(\\..+)?|chorus\\.events|chorus\\.events\\.unrouted"
                           "|chorus\\.unrouted)$");
    /* no amq.default: the default exchange reaches every queue by name */
    assert_string_equal(w, "^(chorus\\.payment(\\..+)?|chorus\\.events|chorus\\.events\\.unrouted"
                           "|chorus\\.unrouted)$");
    assert_string_equal(r, "^(chorus\\.payment(\\..+)?|chorus\\.events|chorus\\.events\\.unrouted"
                           ")$");
    assert_string_equal(t, "^payment\\.");
    assert_int_equal(chorus_saga_permissions(s, "shipping", "shop-test", c, w, r, t, sizeof(c)),
                     CHORUS_OK);
    assert_string_equal(r, "^(shop-test\\.shipping(\\..+)?|shop-test\\.events"
                           "|shop-test\\.events\\.unrouted)$");
    assert_string_equal(t, "^shipping\\.");
    /* metacharacters in a namespace match themselves only */
    assert_int_equal(chorus_saga_permissions(s, "order", "a.b", c, w, r, t, sizeof(c)), CHORUS_OK);
    assert_non_null(strstr(c, "^(a\\.b\\.order(\\..+)?|"));
    assert_int_equal(chorus_saga_permissions(s, "billing", NULL, c, w, r, t, sizeof(c)),
                     CHORUS_ERR_NOT_FOUND);
    assert_int_equal(chorus_saga_permissions(s, "payment", NULL, c, w, r, t, 20),
                     CHORUS_ERR_INVALID_ARG);
    chorus_saga_destroy(s);
}

/* The picture: one edge per produced -> consumed event, styled by kind. */
static void real_saga_dot(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    assert_non_null(f);
    chorus_saga_write_dot(s, f);
    fclose(f);
    assert_non_null(strstr(buf, "digraph \"order_fulfillment\" {"));
    assert_non_null(strstr(buf, "\"cmd:PlaceOrder\" -> \"order\""));
    assert_non_null(strstr(buf, "\"order\" -> \"payment\" [label=\"OrderPlaced\", style=bold, "
                                "color=black"));
    assert_non_null(strstr(buf, "\"payment\" -> \"order\" [label=\"PaymentFailed\", style=bold, "
                                "color=red"));
    assert_non_null(strstr(buf, "\"inventory\" -> \"payment\" [label=\"InventoryReleased\", "
                                "style=dashed, color=darkorange"));
    assert_non_null(strstr(buf, "\"order\" -> \"inventory\" [label=\"OrderCancelled\", "
                                "style=dashed, color=\"darkorange:invis:darkorange\""));
    assert_non_null(strstr(buf, "\"order\" -> \"shipping\" [label=\"CancellationRequested\", "
                                "style=dashed"));
    assert_non_null(strstr(buf, "\"shipping\" -> \"order\" [label=\"ShipmentCancelled\", "
                                "style=dashed"));
    assert_non_null(strstr(buf, "\"deadline\" -> \"order\" [style=dotted"));
    assert_non_null(strstr(buf, "\"order\" -> \"end:OrderCompleted\""));
    assert_int_equal(buf[len - 2], '}');
    free(buf);
    chorus_saga_destroy(s);
}

/* ------------------------------------------------------------------------
 * Refusals.  Declarations are written with ' for " to stay readable.
 * --------------------------------------------------------------------- */
static chorus_saga_t *parse_q(const char *quoted, char *err, size_t size) {
    char *json = strdup(quoted);
    for (char *p = json; *p; p++)
        if (*p == '\'')
            *p = '"';
    chorus_saga_t *s = chorus_saga_parse(json, "sagas/test.json", err, size);
    free(json);
    return s;
}

/* Refused, and the message holds every phrase. */
static void refused(const char *quoted, const char *const *phrases, size_t n) {
    char err[1024] = "";
    chorus_saga_t *s = parse_q(quoted, err, sizeof(err));
    if (s)
        chorus_saga_destroy(s);
    assert_null(s);
    assert_non_null(strstr(err, "sagas/test.json: "));
    for (size_t i = 0; i < n; i++)
        if (!strstr(err, phrases[i]))
            fail_msg("message \"%s\" lacks \"%s\"", err, phrases[i]);
}

#define HEAD "{'saga':'mini',"
#define STEP1 "{'name':'one','service':'a','command':'Start','emits':'Started','failures':[]," \
              "'compensation':{'on':['Failed'],'emits':'Cancelled'}}"
#define TAIL "],'terminal':['Done','Cancelled']}"

static void minimal_is_accepted(void **state) {
    (void)state;
    char err[512] = "";
    chorus_saga_t *s = parse_q(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b',"
                               "'trigger':'Started','emits':'Done','failures':['Failed']}" TAIL,
                               err, sizeof(err));
    if (!s)
        fail_msg("%s", err);
    check_consumes(s, "a", LIST("Failed"));
    check_bindings(s, "a", LIST("b.Failed"));
    check_bindings(s, "b", LIST("a.Started"));
    const char *const *names;
    size_t n = chorus_saga_services(s, &names);
    assert_list(n, names, LIST("a", "b"));
    chorus_saga_destroy(s);
}

/* compensatable, pivot, retriable */
static void pivot_and_retriable_accepted(void **state) {
    (void)state;
    char err[512] = "";
    chorus_saga_t *s = parse_q(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b',"
                               "'trigger':'Started','emits':'Middle','failures':['Failed']},"
                               "{'name':'three','service':'c','trigger':'Middle','emits':'Done',"
                               "'failures':[]}" TAIL, err, sizeof(err));
    if (!s)
        fail_msg("%s", err);
    assert_int_equal(chorus_saga_pivot(s), 1);
    assert_int_equal(chorus_saga_step_count(s), 3);
    assert_string_equal(chorus_saga_step_name(s, 2), "three");
    assert_string_equal(chorus_saga_step_service(s, 2), "c");
    assert_null(chorus_saga_step_name(s, 3));
    chorus_saga_destroy(s);
}

static void refuses_bad_pivot_split(void **state) {
    (void)state;
    /* a step after the pivot that can fail: nothing could undo the pivot */
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Middle','failures':['Failed']},{'name':'three','service':'c',"
                 "'trigger':'Middle','emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'three' (c) comes after step 'two' (b), which has no compensation (the "
                 "pivot), so it must be retriable"));
    /* a declared pivot before a step without compensation */
    refused("{'saga':'mini','cancellation':{'requested_by':'a','request':'Stop','pivot':'one',"
            "'accepted':'Stopped','refused':'Kept'},'steps':[{'name':'one','service':'a',"
            "'command':'Start','emits':'Started','failures':[]},{'name':'two','service':'b',"
            "'trigger':'Started','emits':'Done','failures':[],"
            "'compensation':{'on':['Stopped'],'emits':'Undone'}}" TAIL,
            LIST("step 'two' (b) comes after step 'one' (a), which has no compensation"));
    refused("{'saga':'mini','cancellation':{'requested_by':'a','request':'Stop','pivot':'zwei',"
            "'accepted':'Stopped','refused':'Kept'},'steps':[" STEP1 "]" ",'terminal':['Started']}",
            LIST("cancellation: field \"pivot\": no step is named 'zwei'"));
}

/* The cancellation protocol: what may start a compensation before the pivot. */
#define CANCEL "'deadline':{'ms':1000,'owner':'a','emits':'Stop'}," \
               "'cancellation':{'requested_by':'a','request':'Stop','pivot':'two'," \
               "'accepted':'Stopped','refused':'Kept'},"
#define STEP1C "{'name':'one','service':'a','command':'Start','emits':'Started','failures':[]," \
               "'compensation':{'on':['Failed','Stopped'],'emits':'Cancelled'}}"
#define STEP2 "{'name':'two','service':'b','trigger':'Started','emits':'Done','failures':['Failed']}"

static void cancellation_accepted(void **state) {
    (void)state;
    char err[512] = "";
    chorus_saga_t *s = parse_q(HEAD CANCEL "'steps':[" STEP1C "," STEP2 TAIL, err, sizeof(err));
    if (!s)
        fail_msg("%s", err);
    assert_int_equal(chorus_saga_pivot(s), 1);
    check_consumes(s, "b", LIST("Started", "Stop"));
    check_consumes(s, "a", LIST("Failed", "Stopped"));
    check_bindings(s, "b", LIST("a.Started", "a.Stop"));
    /* chorus answers the request at the pivot: no handler needed, none allowed */
    const char *b[] = {"Started"};
    assert_int_equal(chorus_saga_check_handlers(s, "b", b, 1, err, sizeof(err)), CHORUS_OK);
    int step;
    assert_int_equal(chorus_saga_event_kind(s, "Started", &step), CHORUS_SAGA_STEP_DONE);
    assert_int_equal(step, 0);
    assert_int_equal(chorus_saga_event_kind(s, "Failed", &step), CHORUS_SAGA_STEP_FAILED);
    assert_int_equal(step, 1);
    assert_int_equal(chorus_saga_event_kind(s, "Cancelled", &step), CHORUS_SAGA_STEP_COMPENSATED);
    assert_int_equal(chorus_saga_event_kind(s, "Stop", &step), CHORUS_SAGA_CANCEL_REQUEST);
    assert_int_equal(chorus_saga_event_kind(s, "Stopped", &step), CHORUS_SAGA_CANCEL_ACCEPTED);
    assert_int_equal(step, 1);
    assert_int_equal(chorus_saga_event_kind(s, "Kept", NULL), CHORUS_SAGA_CANCEL_REFUSED);
    assert_int_equal(chorus_saga_event_kind(s, "Nope", &step), CHORUS_SAGA_EVENT_UNKNOWN);
    assert_int_equal(step, -1);
    assert_string_equal(chorus_saga_cancellation_event(s, CHORUS_SAGA_CANCEL_ACCEPTED), "Stopped");
    assert_null(chorus_saga_completion_event(s));
    chorus_saga_destroy(s);
}

static void refuses_compensation_around_the_pivot(void **state) {
    (void)state;
    /* the bug this protocol exists for: the deadline's event undoes steps
     * before a pivot that may be running */
    refused(HEAD "'deadline':{'ms':1000,'owner':'a','emits':'Timeout'},'steps':["
                 "{'name':'one','service':'a','command':'Start','emits':'Started','failures':[],"
                 "'compensation':{'on':['Failed','Timeout'],'emits':'Cancelled'}}," STEP2 TAIL,
            LIST("step 'one' (a): its compensation on 'Timeout' can undo it around the pivot "
                 "step 'two' (b): 'Timeout' comes from the deadline"));
    refused(HEAD "'deadline':{'ms':1000,'owner':'a','emits':'Cancelled'},'steps':[" STEP1 ","
                 STEP2 TAIL,
            LIST("deadline: step 'two' (b) cannot be compensated (it is the saga's pivot)",
                 "declare \"cancellation\""));
    refused(HEAD CANCEL "'steps':[{'name':'one','service':'a','command':'Start','emits':'Started',"
                 "'failures':[],'compensation':{'on':['Failed','Stopped','Done'],'emits':'Cancelled'}},"
                 STEP2 TAIL,
            LIST("compensation on 'Done'", "comes from the success of step 'two' (b)"));
    refused(HEAD CANCEL "'steps':[{'name':'one','service':'a','command':'Start','emits':'Started',"
                 "'failures':[],'compensation':{'on':['Failed','Kept'],'emits':'Cancelled'}},"
                 STEP2 TAIL,
            LIST("compensation on 'Kept'", "the pivot's refusal"));
    refused(HEAD CANCEL "'steps':[{'name':'one','service':'a','command':'Start','emits':'Started',"
                 "'failures':[],'compensation':{'on':['Failed','Stop'],'emits':'Cancelled'}},"
                 STEP2 TAIL,
            LIST("compensation on 'Stop'", "a cancellation request"));
}

static void refuses_inconsistent_cancellation(void **state) {
    (void)state;
    refused(HEAD CANCEL "'steps':[" STEP1 "," STEP2 TAIL,
            LIST("no compensation lists \"accepted\" 'Stopped'"));
    refused(HEAD "'deadline':{'ms':1000,'owner':'a','emits':'Halt'},"
                 "'cancellation':{'requested_by':'a','request':'Stop','pivot':'two',"
                 "'accepted':'Stopped','refused':'Kept'},'steps':[" STEP1C "," STEP2 TAIL,
            LIST("deadline: with a \"cancellation\" declared, the deadline asks the pivot: its "
                 "owner must be 'a' (\"requested_by\") and it must emit 'Stop'"));
    refused(HEAD "'cancellation':{'requested_by':'a','request':'Stop','pivot':'two',"
                 "'accepted':'Stop','refused':'Kept'},'steps':[" STEP1C "," STEP2 TAIL,
            LIST("cancellation: 'Stop' is named twice"));
    refused(HEAD "'cancellation':{'requested_by':'zz','request':'Stop','pivot':'two',"
                 "'accepted':'Stopped','refused':'Kept'},'steps':[" STEP1C "," STEP2 TAIL,
            LIST("\"requested_by\" 'zz' is not a service"));
    refused(HEAD CANCEL "'steps':[" STEP1C ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Done','failures':['Failed'],'refuses_after':['Stop']}" TAIL,
            LIST("the request 'Stop' is for the pivot step 'two' (b) alone"));
    refused(HEAD CANCEL "'steps':[" STEP1C "," STEP2 "],'completion':{'service':'a','on':['Done'],"
                 "'emits':'Kept'},'terminal':['Done','Cancelled']}",
            LIST("cancellation: 'Kept' must be emitted only by b, but 'a' emits it too"));
    refused(HEAD CANCEL "'steps':[" STEP1C "," STEP2 "],'terminal':['Done','Cancelled'],"
                 "'cancel':{}}", LIST("unknown field \"cancel\""));
}

static void refuses_what_the_runtime_cannot_keep(void **state) {
    (void)state;
    /* the deadline's timer is armed with the first event, by its service */
    refused(HEAD "'deadline':{'ms':1000,'owner':'b','emits':'Stop'},"
                 "'cancellation':{'requested_by':'b','request':'Stop','pivot':'two',"
                 "'accepted':'Stopped','refused':'Kept'},'steps':[" STEP1C "," STEP2 TAIL,
            LIST("deadline: owner 'b' must be 'a', the service of the first step"));
    /* nothing may stop the pivot but its answer to a request */
    refused(HEAD CANCEL "'steps':[" STEP1C ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Done','failures':['Failed'],'refuses_after':['Cancelled']}" TAIL,
            LIST("step 'two' (b): \"refuses_after\" is for steps before the pivot"));
    /* the completion's event must reach the completion */
    refused(HEAD "'steps':[" STEP1 "," STEP2 "],'completion':{'service':'a','on':['Failed'],"
                 "'emits':'Fine'},'terminal':['Fine','Cancelled']}",
            LIST("event 'Failed' means two things to it", "and in the completion"));
    /* two steps of a service started by one event */
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Mid','failures':[],'compensation':{'on':['Failed'],'emits':'Back'}},"
                 "{'name':'three','service':'b','trigger':'Started','emits':'Done',"
                 "'failures':['Failed']}" TAIL,
            LIST("are both started by 'Started'"));
    /* an observer hears every event: it takes no step */
    refused(HEAD "'steps':[" STEP1 "," STEP2 "],'terminal':['Done','Cancelled'],"
                 "'observers':['b']}", LIST("service 'b' is an observer, so it cannot also take"));
    /* chorus writes the cancellation events itself: their schemas must take them */
    refused(HEAD CANCEL "'steps':[" STEP1C "," STEP2 "],'terminal':['Done','Cancelled'],"
                 "'events':{'Stopped':{'schema':{'type':'object','required':['why']}}}}",
            LIST("events: 'Stopped': schema: chorus writes this event itself",
                 "required member \"why\" is missing"));
}

static void refuses_two_roles_for_one_event(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'a','trigger':'Started',"
                 "'emits':'Middle','failures':['Failed'],"
                 "'compensation':{'on':['Failed'],'emits':'Undone'}},{'name':'three','service':'c',"
                 "'trigger':'Middle','emits':'Done','failures':[]}" TAIL,
            LIST("service 'a': event 'Failed' means two things to it"));
}

static void refuses_event_produced_by_nobody(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Begun',"
                 "'emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'two' (b)", "'Begun'", "trigger", "produced by nobody"));
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Done','failures':['Failed'],'refuses_after':['Aborted']}" TAIL,
            LIST("step 'two' (b)", "'Aborted'", "refuses_after", "produced by nobody"));
}

static void refuses_failure_handled_by_nobody(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Done','failures':['Failed','Lost']}" TAIL,
            LIST("step 'two' (b): failure 'Lost' is handled by nobody"));
}

static void refuses_malformed_json(void **state) {
    (void)state;
    refused("{'saga':'mini',\n 'steps': [", LIST("malformed JSON at line 2"));
    refused("", LIST("malformed JSON"));
    refused("[1,2]", LIST("must be a JSON object"));
}

static void refuses_missing_or_ill_typed_fields(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','trigger':'Started','emits':'Done',"
                 "'failures':['Failed']}" TAIL,
            LIST("step 'two': field \"service\" is missing"));
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':'Done'}" TAIL,
            LIST("step 'two' (b): field \"failures\" is missing"));
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'emits':7,'failures':['Failed']}" TAIL,
            LIST("step 'two' (b): field \"emits\" must be a string"));
    refused(HEAD "'steps':[{'service':'a','command':'Start','emits':'Done','failures':[]}" TAIL,
            LIST("step #1: field \"name\" is missing"));
    refused("{'steps':[]}", LIST("field \"saga\" is missing"));
    refused("{'saga':'mini','steps':[]}", LIST("\"steps\" must be an array of at least one"));
    refused(HEAD "'steps':[{'name':'one','service':'a','command':'Start','emits':'Done',"
                 "'failures':[],'compensation':{'emits':'Cancelled'}}" TAIL,
            LIST("step 'one' (a): compensation: field \"on\" is missing"));
    refused(HEAD "'steps':[{'name':'one','service':'a','command':'Start','emits':'Done',"
                 "'failures':[],'compensations':{}}" TAIL,
            LIST("step 'one' (a): unknown field \"compensations\""));
    refused("{'saga':'mini','deadline':{'ms':0,'owner':'a','emits':'Cancelled'}}",
            LIST("deadline: field \"ms\" must be a whole number"));
}

/* A field given twice is refused, not silently resolved (I-JSON): a
 * reader taking the first "service" and one taking the last would run
 * different sagas. */
static void refuses_duplicate_fields(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','service':'c',"
                 "'trigger':'Started','emits':'Done','failures':['Failed']}" TAIL,
            LIST("malformed JSON at line 1", "duplicate member name \"service\""));
    refused("{'saga':'mini','saga':'maxi'}", LIST("duplicate member name \"saga\""));
}

#define MINI_OK HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started'," \
                "'emits':'Done','failures':['Failed']}],'terminal':['Done','Cancelled']"

static void events_section(void **state) {
    (void)state;
    char err[512] = "";
    chorus_saga_t *s = parse_q(MINI_OK ",'events':{'Started':{'schema_version':3,"
                               "'newer_schema':'retry'},'Done':{'newer_schema':'dead-letter'}}}",
                               err, sizeof(err));
    if (!s)
        fail_msg("%s", err);
    chorus_saga_destroy(s);
    refused(MINI_OK ",'events':{'Begun':{}}}",
            LIST("events: 'Begun' is not an event of the saga (nobody produces it)"));
    refused(MINI_OK ",'events':{'Started':{'schema_version':0}}}",
            LIST("events: 'Started': field \"schema_version\" must be a whole number >= 1"));
    refused(MINI_OK ",'events':{'Started':{'newer_schema':'ignore'}}}",
            LIST("events: 'Started': field \"newer_schema\" must be \"dead-letter\" or \"retry\""));
    refused(MINI_OK ",'events':{'Started':{'newer':'retry'}}}",
            LIST("events: 'Started': unknown field \"newer\""));
    refused(MINI_OK ",'events':{'started':{}}}", LIST("'started' is not an event name"));
    /* data schemas: compiled when the declaration loads */
    s = parse_q(MINI_OK ",'events':{'Started':{'schema':{'type':'object','required':['id'],"
                "'properties':{'id':{'type':'string','format':'uuid'}}}}}}", err, sizeof(err));
    if (!s)
        fail_msg("%s", err);
    chorus_saga_destroy(s);
    refused(MINI_OK ",'events':{'Started':{'schema':{'type':'object','requried':['id']}}}}",
            LIST("events: 'Started': schema: ", "requried"));
    refused(MINI_OK ",'events':{'Started':{'schema':[]}}}",
            LIST("events: 'Started': field \"schema\" must be an object"));
    refused(MINI_OK ",'events':[]}", LIST("field \"events\" must be an object"));
}

static void refuses_duplicate_step_names(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'one','service':'b','trigger':'Started',"
                 "'emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'one' (b): duplicate step name 'one'"));
}

static void refuses_names_and_roles(void **state) {
    (void)state;
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'order_done',"
                 "'emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'two' (b): field \"trigger\": 'order_done' is not an event name"));
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','trigger':'Started',"
                 "'command':'Go','emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'two' (b) needs exactly one of \"trigger\""));
    refused(HEAD "'steps':[" STEP1 ",{'name':'two','service':'b','command':'Go',"
                 "'emits':'Done','failures':['Failed']}" TAIL,
            LIST("step 'two' (b) is started by the command 'Go', but only the first step is"));
    refused(HEAD "'steps':[{'name':'one','service':'a','trigger':'Started','emits':'Done',"
                 "'failures':[]}" TAIL,
            LIST("step 'one' (a) is the first step, so a command starts it"));
    refused(HEAD "'steps':[{'name':'one','service':'a','command':'Done','emits':'Done',"
                 "'failures':[]}" TAIL,
            LIST("step 'one' (a): 'Done' is its command and also an event"));
    refused(HEAD "'steps':[{'name':'one','service':'a','command':'Start','emits':'Done',"
                 "'failures':[]}],'terminal':['Done','Gone']}",
            LIST("terminal event 'Gone' is produced by nobody"));
    refused("{'saga':'mini','deadline':{'ms':5,'owner':'clock','emits':'Cancelled'},"
            "'steps':[{'name':'one','service':'a','command':'Start','emits':'Done',"
            "'failures':[]}],'terminal':['Done']}",
            LIST("deadline: owner 'clock' is not a service of saga 'mini'"));
}

/* A step name quoted in a refusal is cut, at 100 bytes, between characters:
 * messages stay UTF-8 text (tests/fuzz/fuzz_saga found one cut inside "é"). */
static void refusals_cut_names_between_characters(void **state) {
    (void)state;
    char name[128], json[1024], err[1024], want[160];
    memset(name, 'a', 99);
    strcpy(name + 99, "\xc3\xa9z"); /* "é" across byte 100 */
    snprintf(want, sizeof(want), "step '%.99s'", name);
    const char *bad[] = {"'service':'Bad'", "'service':'ok','colour':1"};
    for (int i = 0; i < 2; i++) {
        snprintf(json, sizeof(json),
                 "{'saga':'s','steps':[{'name':'%s',%s,'command':'Go','emits':'Done',"
                 "'failures':[]}],'terminal':['Done']}", name, bad[i]);
        for (char *q = json; *q; q++)
            if (*q == '\'')
                *q = '"';
        err[0] = '\0';
        assert_null(chorus_saga_parse(json, "t.json", err, sizeof(err)));
        if (!chorus__json_text_ok(err, strlen(err), NULL))
            fail_msg("not UTF-8 text: %s", err);
        assert_non_null(strstr(err, want));
    }
}

static void load_names_the_file(void **state) {
    (void)state;
    char err[512] = "";
    assert_null(chorus_saga_load("/nonexistent/saga.json", err, sizeof(err)));
    assert_non_null(strstr(err, "/nonexistent/saga.json: cannot read"));
}

/* ------------------------------------------------------------------------
 * Handlers against the role
 * --------------------------------------------------------------------- */
static void handlers_match(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char err[512] = "x";
    const char *payment[] = {"OrderPlaced", "OrderCancelled", "InventoryReleased",
                             "InsufficientStock"};
    assert_int_equal(chorus_saga_check_handlers(s, "payment", payment, 4, err, sizeof(err)),
                     CHORUS_OK);
    const char *const *all;
    size_t n = chorus_saga_consumes(s, "monitor", &all);
    assert_int_equal(n, 14);
    assert_int_equal(chorus_saga_check_handlers(s, "monitor", all, n, err, sizeof(err)),
                     CHORUS_OK);
    chorus_saga_destroy(s);
}

static void handlers_missing(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char err[512];
    const char *payment[] = {"OrderPlaced", "OrderCancelled", "InventoryReleased"};
    assert_int_equal(chorus_saga_check_handlers(s, "payment", payment, 3, err, sizeof(err)),
                     CHORUS_ERR_INVALID_CONF);
    assert_non_null(strstr(err, "service 'payment' has no handler for InsufficientStock "
                                "(compensation of step 'charge-payment')"));
    /* the pivot's cancellation requests are answered by chorus */
    const char *shipping[] = {"InventoryReserved"};
    assert_int_equal(chorus_saga_check_handlers(s, "shipping", shipping, 1, err, sizeof(err)),
                     CHORUS_OK);
    assert_int_equal(chorus_saga_check_handlers(s, "order", NULL, 0, err, sizeof(err)),
                     CHORUS_ERR_INVALID_CONF);
    assert_non_null(strstr(err, "PaymentFailed (compensation of step 'place-order')"));
    assert_non_null(strstr(err, "ShipmentScheduled (completion of the saga)"));
    chorus_saga_destroy(s);
}

static void handlers_extra(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char err[512];
    const char *shipping[] = {"InventoryReserved", "OrderCancelled", "PaymentSucceeded"};
    assert_int_equal(chorus_saga_check_handlers(s, "shipping", shipping, 3, err, sizeof(err)),
                     CHORUS_ERR_INVALID_CONF);
    assert_non_null(strstr(err, "service 'shipping' has handlers it never receives: "
                                "OrderCancelled, PaymentSucceeded"));
    assert_null(strstr(err, "no handler"));
    chorus_saga_destroy(s);
}

static void handlers_unknown_service(void **state) {
    (void)state;
    chorus_saga_t *s = load_real();
    char err[512];
    const char *types[] = {"OrderPlaced"};
    assert_int_equal(chorus_saga_check_handlers(s, "billing", types, 1, err, sizeof(err)),
                     CHORUS_ERR_INVALID_CONF);
    assert_string_equal(err, "service 'billing' takes no part in saga 'order_fulfillment'");
    chorus_saga_destroy(s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(real_saga_basics),
        cmocka_unit_test(real_saga_consumes),
        cmocka_unit_test(real_saga_bindings),
        cmocka_unit_test(real_saga_permissions),
        cmocka_unit_test(real_saga_dot),
        cmocka_unit_test(minimal_is_accepted),
        cmocka_unit_test(pivot_and_retriable_accepted),
        cmocka_unit_test(refuses_bad_pivot_split),
        cmocka_unit_test(cancellation_accepted),
        cmocka_unit_test(refuses_compensation_around_the_pivot),
        cmocka_unit_test(refuses_inconsistent_cancellation),
        cmocka_unit_test(refuses_two_roles_for_one_event),
        cmocka_unit_test(refuses_what_the_runtime_cannot_keep),
        cmocka_unit_test(refuses_event_produced_by_nobody),
        cmocka_unit_test(refuses_failure_handled_by_nobody),
        cmocka_unit_test(refuses_malformed_json),
        cmocka_unit_test(refuses_missing_or_ill_typed_fields),
        cmocka_unit_test(refuses_duplicate_step_names),
        cmocka_unit_test(refuses_duplicate_fields),
        cmocka_unit_test(events_section),
        cmocka_unit_test(refuses_names_and_roles),
        cmocka_unit_test(refusals_cut_names_between_characters),
        cmocka_unit_test(load_names_the_file),
        cmocka_unit_test(handlers_match),
        cmocka_unit_test(handlers_missing),
        cmocka_unit_test(handlers_extra),
        cmocka_unit_test(handlers_unknown_service),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
