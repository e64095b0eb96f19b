/*
 * A commit whose outcome is unknown, and idempotency keys (issue 8):
 *
 *   answer_lost        the server committed, the answer never arrived:
 *                      CHORUS_ERR_COMMIT_UNKNOWN, and the row is there
 *   killed_before      the server died before COMMIT: also unknown to the
 *                      client (it cannot tell), and the row is not there
 *   failed_is_failed   a transaction that failed before COMMIT is not
 *                      "unknown": CHORUS_ERR_DB
 *   idempotency_key    a key seen before: CHORUS_ERR_DUPLICATE with the
 *                      earlier result, also after an unknown outcome
 */
#include "durable.h"

static chorus_t *command(const char *answer) {
    chorus_conf_t *c = dur_conf("shop");
    char err[256];
    if (answer && chorus_conf_set(c, "debug.commit.answer", answer, err, sizeof(err)))
        fail_msg("%s", err);
    chorus_t *ch = chorus_new(c, err, sizeof(err));
    assert_non_null(ch);
    return ch;
}

static void table(void) {
    dur_sql("shop", "CREATE TABLE IF NOT EXISTS %s.things (id text PRIMARY KEY)");
}

static long things(const char *id) {
    char where[128];
    snprintf(where, sizeof(where), "id = '%s'", id);
    return dur_count("shop", "things", where);
}

static chorus_err_t insert_and_commit(chorus_t *ch, const char *id) {
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    const char *p[] = {id};
    assert_int_equal(chorus_tx_exec(tx, "INSERT INTO things (id) VALUES ($1)", 1, p, NULL),
                     CHORUS_OK);
    return chorus_tx_commit(tx);
}

static void answer_lost(void **state) {
    (void)state;
    chorus_t *ch = command("lost");
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK); /* creates the schema */
    chorus_tx_rollback(tx);
    table();
    assert_int_equal(insert_and_commit(ch, "a0"), CHORUS_OK); /* no key: not a command */
    char prev[64];
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    assert_int_equal(chorus_tx_idempotent(tx, "answer-lost", "a", prev, sizeof(prev)), CHORUS_OK);
    const char *p[] = {"a"};
    assert_int_equal(chorus_tx_exec(tx, "INSERT INTO things (id) VALUES ($1)", 1, p, NULL),
                     CHORUS_OK);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_ERR_COMMIT_UNKNOWN);
    assert_int_equal(things("a"), 1); /* it did commit: "failed" would have been a lie */
    chorus_destroy(ch);
}

static void killed_before(void **state) {
    (void)state;
    chorus_t *ch = command(NULL);
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    chorus_tx_rollback(tx);
    table();
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    const char *p[] = {"b"};
    assert_int_equal(chorus_tx_exec(tx, "INSERT INTO things (id) VALUES ($1)", 1, p, NULL),
                     CHORUS_OK);
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", PQbackendPID(chorus_tx_pg(tx)));
    const char *pp[] = {pid};
    it_pg_exec("SELECT pg_terminate_backend($1::int)", 1, pp);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_ERR_COMMIT_UNKNOWN);
    assert_int_equal(things("b"), 0);
    /* and the participant reconnects for the next command */
    assert_int_equal(insert_and_commit(ch, "b2"), CHORUS_OK);
    chorus_destroy(ch);
}

static void failed_is_failed(void **state) {
    (void)state;
    chorus_t *ch = command(NULL);
    table();
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    assert_int_equal(chorus_tx_exec(tx, "SELECT no_such_column FROM things", 0, NULL, NULL),
                     CHORUS_ERR_DB);
    assert_int_equal(chorus_tx_commit(tx), CHORUS_ERR_DB);
    chorus_destroy(ch);
}

/* A command: record the key, do the work; the result is the thing's id. */
static chorus_err_t do_command(chorus_t *ch, const char *key, const char *id, char *prev) {
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    chorus_err_t rc = chorus_tx_idempotent(tx, key, id, prev, 64);
    if (rc) {
        chorus_tx_rollback(tx);
        return rc;
    }
    const char *p[] = {id};
    assert_int_equal(chorus_tx_exec(tx, "INSERT INTO things (id) VALUES ($1)", 1, p, NULL),
                     CHORUS_OK);
    return chorus_tx_commit(tx);
}

static void idempotency_key(void **state) {
    (void)state;
    chorus_t *ch = command(NULL), *lossy = command("lost");
    table();
    char prev[64];
    assert_int_equal(do_command(ch, "key-1", "first", prev), CHORUS_OK);
    assert_int_equal(do_command(ch, "key-1", "second", prev), CHORUS_ERR_DUPLICATE);
    assert_string_equal(prev, "first");
    assert_int_equal(things("second"), 0);
    /* after an unknown outcome, repeating with the key finds what was done */
    assert_int_equal(do_command(lossy, "key-2", "third", prev), CHORUS_ERR_COMMIT_UNKNOWN);
    assert_int_equal(do_command(ch, "key-2", "fourth", prev), CHORUS_ERR_DUPLICATE);
    assert_string_equal(prev, "third");
    assert_int_equal(things("third") + things("fourth"), 1);
    /* and a key whose transaction never committed is free again */
    chorus_tx_t *tx;
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    assert_int_equal(chorus_tx_idempotent(tx, "key-3", "x", prev, sizeof(prev)), CHORUS_OK);
    chorus_tx_rollback(tx);
    assert_int_equal(do_command(ch, "key-3", "fifth", prev), CHORUS_OK);
    assert_int_equal(chorus_tx_begin(ch, &tx), CHORUS_OK);
    assert_int_equal(chorus_tx_idempotent(tx, "", "x", prev, sizeof(prev)), CHORUS_ERR_INVALID_ARG);
    chorus_tx_rollback(tx);
    chorus_destroy(lossy);
    chorus_destroy(ch);
}

int main(void) {
    it_pg();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(answer_lost),
        cmocka_unit_test(killed_before),
        cmocka_unit_test(failed_is_failed),
        cmocka_unit_test(idempotency_key),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    it_pg_drop_schema(dur_schema("shop"));
    it_pg_close();
    return rc;
}
