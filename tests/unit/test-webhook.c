/* Unit tests of webhook.h: HMAC-SHA256 against RFC 4231's vectors, the
 * secret file's rules, delivery ids, the backoff, and the queue that
 * decides between a retry of the same body and a new one superseding it. */
#include "webhook.h"

#include <sys/stat.h>

#include "test.h"
#include "util.h"

static void test_hmac_vectors(void) {
        char out[65];
        unsigned char key1[20], key3[20], data3[50], key6[131];

        /* RFC 4231, test cases 1, 2, 3 and 6. */
        memset(key1, 0x0b, sizeof(key1));
        REQUIRE_INT(webhook_sign(key1, sizeof(key1), "Hi There", 8, out), 0);
        CHECK_STR(out, "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
        REQUIRE_INT(webhook_sign("Jefe", 4, "what do ya want for nothing?", 28, out), 0);
        CHECK_STR(out, "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
        memset(key3, 0xaa, sizeof(key3));
        memset(data3, 0xdd, sizeof(data3));
        REQUIRE_INT(webhook_sign(key3, sizeof(key3), data3, sizeof(data3), out), 0);
        CHECK_STR(out, "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe");
        memset(key6, 0xaa, sizeof(key6));
        static const char d6[] = "Test Using Larger Than Block-Size Key - Hash Key First";
        REQUIRE_INT(webhook_sign(key6, sizeof(key6), d6, strlen(d6), out), 0);
        CHECK_STR(out, "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

static void test_secret_file(void) {
        char *dir = test_mkdtemp(), *p = test_path(dir, "secret"), err[512], *s = NULL;
        size_t len = 0;

        REQUIRE_INT(test_write_file(p, "Jefe\n", 5, 0600), 0);
        REQUIRE_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), 0);
        CHECK_MEM(s, len, "Jefe", 4);
        free(s);
        /* Only one trailing newline goes. */
        REQUIRE_INT(test_write_file(p, "k\n\n", 3, 0400), 0);
        REQUIRE_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), 0);
        CHECK_MEM(s, len, "k\n", 2);
        free(s);
        /* Without a newline: all of it. */
        REQUIRE_INT(test_write_file(p, "abc", 3, 0600), 0);
        REQUIRE_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), 0);
        CHECK_MEM(s, len, "abc", 3);
        free(s);
        /* Readable by the group or others: refused, with the file named. */
        REQUIRE_INT(test_write_file(p, "abc", 3, 0640), 0);
        CHECK_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), -EPERM);
        CHECK_CONTAINS(err, p);
        REQUIRE_INT(test_write_file(p, "abc", 3, 0604), 0);
        CHECK_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), -EPERM);
        /* Empty, or only a newline. */
        REQUIRE_INT(test_write_file(p, "\n", 1, 0600), 0);
        CHECK_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), -EINVAL);
        CHECK_CONTAINS(err, "empty");
        /* Too long. */
        char *big = malloc(WEBHOOK_SECRET_MAX + 1);
        memset(big, 'x', WEBHOOK_SECRET_MAX + 1);
        REQUIRE_INT(test_write_file(p, big, WEBHOOK_SECRET_MAX + 1, 0600), 0);
        CHECK_INT(webhook_read_secret(p, &s, &len, err, sizeof(err)), -EFBIG);
        free(big);
        /* Missing; a directory; a symlink. */
        char *missing = test_path(dir, "nope"), *link = test_path(dir, "link");
        CHECK_INT(webhook_read_secret(missing, &s, &len, err, sizeof(err)), -ENOENT);
        CHECK_CONTAINS(err, missing);
        CHECK_INT(webhook_read_secret(dir, &s, &len, err, sizeof(err)), -EINVAL);
        REQUIRE_INT(test_write_file(p, "abc", 3, 0600), 0);
        REQUIRE(symlink(p, link) == 0);
        CHECK(webhook_read_secret(link, &s, &len, err, sizeof(err)) < 0);
        free(missing);
        free(link);
        test_rm_rf(dir);
        free(p);
        free(dir);
}

static void test_ids(void) {
        char a[WEBHOOK_ID_LEN + 1], b[WEBHOOK_ID_LEN + 1];

        REQUIRE_INT(webhook_new_id(a), 0);
        REQUIRE_INT(webhook_new_id(b), 0);
        CHECK_UINT(strlen(a), WEBHOOK_ID_LEN);
        CHECK(strcmp(a, b) != 0);
        for (size_t i = 0; i < WEBHOOK_ID_LEN; i++) {
                if (i == 8 || i == 13 || i == 18 || i == 23)
                        CHECK(a[i] == '-');
                else
                        CHECK(strchr("0123456789abcdef", a[i]) != NULL);
        }
        CHECK(a[14] == '4');
}

static void test_backoff(void) {
        CHECK_UINT(webhook_backoff_usec(1), 1000000);
        CHECK_UINT(webhook_backoff_usec(2), 2000000);
        CHECK_UINT(webhook_backoff_usec(3), 4000000);
        CHECK_UINT(webhook_backoff_usec(6), 32000000);
        CHECK_UINT(webhook_backoff_usec(7), WEBHOOK_RETRY_MAX_USEC);
        CHECK_UINT(webhook_backoff_usec(1000), WEBHOOK_RETRY_MAX_USEC);
        CHECK_UINT(webhook_backoff_usec(0), 1000000);
}

static void test_queue_deliver(void) {
        struct webhook_queue q;

        REQUIRE_INT(webhook_queue_init(&q, 3), 0);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        webhook_queue_change(&q, 1);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_SEND_NEW);
        CHECK(q.in_body[1] && !q.in_body[0] && !q.in_body[2]);
        CHECK(q.in_flight);
        /* In flight: nothing more starts, a change waits. */
        webhook_queue_change(&q, 2);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        webhook_queue_delivered(&q);
        CHECK(!q.in_body[1]);
        /* The change made meanwhile is the next body, alone. */
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_SEND_NEW);
        CHECK(!q.in_body[1] && q.in_body[2]);
        webhook_queue_delivered(&q);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        CHECK(!q.have_body);
        webhook_queue_change(&q, 7); /* out of range: ignored */
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        webhook_queue_done(&q);
}

static void test_queue_retry_and_supersede(void) {
        struct webhook_queue q;

        REQUIRE_INT(webhook_queue_init(&q, 3), 0);
        webhook_queue_change(&q, 0);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_SEND_NEW);
        webhook_queue_failed(&q);
        CHECK_UINT(q.failures, 1);
        /* Nothing new: the same body again. */
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_RETRY_SAME);
        webhook_queue_failed(&q);
        CHECK_UINT(q.failures, 2);
        /* A newer change supersedes the undelivered body: a new one naming
         * both maps, its failures counted afresh. */
        webhook_queue_change(&q, 2);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_SEND_NEW);
        CHECK(q.in_body[0] && !q.in_body[1] && q.in_body[2]);
        CHECK_UINT(q.failures, 0);
        webhook_queue_failed(&q);
        /* A change while a retry is in flight waits for its end. */
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_RETRY_SAME);
        webhook_queue_change(&q, 1);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        webhook_queue_failed(&q);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_SEND_NEW);
        CHECK(q.in_body[0] && q.in_body[1] && q.in_body[2]);
        webhook_queue_delivered(&q);
        CHECK_INT(webhook_queue_next(&q), WEBHOOK_NOTHING);
        CHECK(!q.in_body[0] && !q.in_body[1] && !q.in_body[2]);
        webhook_queue_done(&q);
}

int main(void) {
        RUN(test_hmac_vectors);
        RUN(test_secret_file);
        RUN(test_ids);
        RUN(test_backoff);
        RUN(test_queue_deliver);
        RUN(test_queue_retry_and_supersede);
        return test_end();
}
