/* The batch and delivery state machines (batch.c): every path the
 * consumer takes is allowed, everything else is refused, and every state
 * can be reached and left as the picture at the top of batch.c says. */
#include "cm.h"
#include "batch_int.h"

#include <string.h>

static int run_batch(const chorus__bevent_t *evs, size_t n) {
    int st = CHORUS__B_TAKEN;
    for (size_t i = 0; i < n && st >= 0; i++)
        st = chorus__batch_next((chorus__bstate_t)st, evs[i]);
    return st;
}

static void batch_happy_path(void **state) {
    (void)state;
    const chorus__bevent_t evs[] = {CHORUS__BE_HANDLE, CHORUS__BE_SEND, CHORUS__BE_SETTLE,
                                    CHORUS__BE_ACK};
    assert_int_equal(run_batch(evs, 4), CHORUS__B_ACKED);
    assert_true(chorus__batch_done(CHORUS__B_ACKED));
    /* each prefix ends in the state the picture names */
    assert_int_equal(run_batch(evs, 1), CHORUS__B_HANDLED);
    assert_int_equal(run_batch(evs, 2), CHORUS__B_SENT);
    assert_int_equal(run_batch(evs, 3), CHORUS__B_SETTLED);
    for (size_t k = 0; k < 3; k++)
        assert_false(chorus__batch_done((chorus__bstate_t)run_batch(evs, k + 1)));
}

static void batch_given_back_only_before_handling(void **state) {
    (void)state;
    assert_int_equal(chorus__batch_next(CHORUS__B_TAKEN, CHORUS__BE_GIVE_BACK),
                     CHORUS__B_REQUEUED);
    /* once effects are committed it cannot be "given back": it is sent */
    assert_int_equal(chorus__batch_next(CHORUS__B_HANDLED, CHORUS__BE_GIVE_BACK), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_SENT, CHORUS__BE_GIVE_BACK), -1);
    assert_true(chorus__batch_done(CHORUS__B_REQUEUED));
}

static void batch_lost_anywhere_before_done(void **state) {
    (void)state;
    for (int st = 0; st < CHORUS__B_NSTATES; st++) {
        int next = chorus__batch_next((chorus__bstate_t)st, CHORUS__BE_LOSE);
        if (chorus__batch_done((chorus__bstate_t)st))
            assert_int_equal(next, -1); /* finished: nothing more happens */
        else
            assert_int_equal(next, CHORUS__B_VOID);
    }
}

static void batch_no_skipping(void **state) {
    (void)state;
    /* an ack needs every confirm; a confirm needs a send; a send needs handling */
    assert_int_equal(chorus__batch_next(CHORUS__B_TAKEN, CHORUS__BE_ACK), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_TAKEN, CHORUS__BE_SEND), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_HANDLED, CHORUS__BE_ACK), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_SENT, CHORUS__BE_ACK), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_HANDLED, CHORUS__BE_SETTLE), -1);
    /* every finished state refuses every event; out-of-range input too */
    for (int ev = 0; ev < CHORUS__BE_NEVENTS; ev++) {
        assert_int_equal(chorus__batch_next(CHORUS__B_ACKED, (chorus__bevent_t)ev), -1);
        assert_int_equal(chorus__batch_next(CHORUS__B_VOID, (chorus__bevent_t)ev), -1);
        assert_int_equal(chorus__batch_next(CHORUS__B_REQUEUED, (chorus__bevent_t)ev), -1);
    }
    assert_int_equal(chorus__batch_next(CHORUS__B_NSTATES, CHORUS__BE_HANDLE), -1);
    assert_int_equal(chorus__batch_next(CHORUS__B_TAKEN, CHORUS__BE_NEVENTS), -1);
}

static void batch_every_state_reachable(void **state) {
    (void)state;
    bool seen[CHORUS__B_NSTATES] = {false};
    int queue[CHORUS__B_NSTATES], head = 0, tail = 0;
    queue[tail++] = CHORUS__B_TAKEN;
    seen[CHORUS__B_TAKEN] = true;
    while (head < tail) {
        int st = queue[head++];
        for (int ev = 0; ev < CHORUS__BE_NEVENTS; ev++) {
            int next = chorus__batch_next((chorus__bstate_t)st, (chorus__bevent_t)ev);
            if (next >= 0 && !seen[next]) {
                seen[next] = true;
                queue[tail++] = next;
            }
        }
    }
    for (int st = 0; st < CHORUS__B_NSTATES; st++)
        assert_true(seen[st]);
    assert_string_equal(chorus__bstate_name(CHORUS__B_SETTLED), "settled");
}

static void delivery_outcomes(void **state) {
    (void)state;
    /* decoded, then one outcome */
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECEIVED, CHORUS__DE_DECODE),
                     CHORUS__D_DECODED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DECODED, CHORUS__DE_SUCCEED),
                     CHORUS__D_HANDLED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DECODED, CHORUS__DE_DUPLICATE),
                     CHORUS__D_DUPLICATE);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DECODED, CHORUS__DE_RETRY), CHORUS__D_RETRY);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DECODED, CHORUS__DE_REFUSE), CHORUS__D_DEAD);
    /* retries run out: dead; an emitted event too large after success: dead */
    assert_int_equal(chorus__delivery_next(CHORUS__D_RETRY, CHORUS__DE_REFUSE), CHORUS__D_DEAD);
    assert_int_equal(chorus__delivery_next(CHORUS__D_HANDLED, CHORUS__DE_REFUSE), CHORUS__D_DEAD);
    /* refused before any handler, or a recount: never handled in this batch */
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECEIVED, CHORUS__DE_REFUSE),
                     CHORUS__D_REFUSED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECEIVED, CHORUS__DE_RECOUNT),
                     CHORUS__D_RECOUNT);
    assert_int_equal(chorus__delivery_next(CHORUS__D_REFUSED, CHORUS__DE_SUCCEED), -1);
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECOUNT, CHORUS__DE_SUCCEED), -1);
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECEIVED, CHORUS__DE_SUCCEED), -1);
    /* a handled delivery is not handled twice, nor a duplicate made handled */
    assert_int_equal(chorus__delivery_next(CHORUS__D_HANDLED, CHORUS__DE_SUCCEED), -1);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DUPLICATE, CHORUS__DE_SUCCEED), -1);
    assert_int_equal(chorus__delivery_next(CHORUS__D_DEAD, CHORUS__DE_RETRY), -1);
}

static void delivery_reset_and_undecode(void **state) {
    (void)state;
    /* a batch that runs again: every handled outcome back to decoded; the
     * ones decided before handling keep theirs */
    const chorus__dstate_t back[] = {CHORUS__D_HANDLED, CHORUS__D_DUPLICATE, CHORUS__D_RETRY,
                                     CHORUS__D_DEAD, CHORUS__D_DECODED};
    for (size_t i = 0; i < sizeof(back) / sizeof(back[0]); i++)
        assert_int_equal(chorus__delivery_next(back[i], CHORUS__DE_RESET), CHORUS__D_DECODED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_REFUSED, CHORUS__DE_RESET),
                     CHORUS__D_REFUSED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_RECOUNT, CHORUS__DE_RESET),
                     CHORUS__D_RECOUNT);
    /* back to the backlog only before its handler ran */
    assert_int_equal(chorus__delivery_next(CHORUS__D_DECODED, CHORUS__DE_UNDECODE),
                     CHORUS__D_RECEIVED);
    assert_int_equal(chorus__delivery_next(CHORUS__D_HANDLED, CHORUS__DE_UNDECODE), -1);
    assert_int_equal(chorus__delivery_next(CHORUS__D_NSTATES, CHORUS__DE_DECODE), -1);
    assert_string_equal(chorus__dstate_name(CHORUS__D_DUPLICATE), "duplicate");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batch_happy_path),
        cmocka_unit_test(batch_given_back_only_before_handling),
        cmocka_unit_test(batch_lost_anywhere_before_done),
        cmocka_unit_test(batch_no_skipping),
        cmocka_unit_test(batch_every_state_reachable),
        cmocka_unit_test(delivery_outcomes),
        cmocka_unit_test(delivery_reset_and_undecode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
