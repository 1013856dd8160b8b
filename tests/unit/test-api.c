/* Unit tests of api.h's request handling: routes, methods and their Allow
 * lists, query parameters, numbers, error bodies. */
#include "api.h"

#include "test.h"
#include "util.h"

static void test_routes(void) {
        const char *allow = "unset";

        CHECK_INT(api_route("/v1/sync", &allow), API_ROUTE_SYNC);
        CHECK_STR(allow, "POST");
        CHECK_INT(api_route("/v1/status", &allow), API_ROUTE_STATUS);
        CHECK_STR(allow, "GET, HEAD");
        CHECK_INT(api_route("/metrics", &allow), API_ROUTE_METRICS);
        CHECK_STR(allow, "GET, HEAD");
        static const char *const none[] = {
                "/",          "",         "/v1",       "/v1/",        "/v1/sync/", "/v1/Sync",
                "/v1/sync/x", "/v2/sync", "//v1/sync", "/v1/status/", "/metrics/", "/v1/sync\n",
        };
        for (size_t i = 0; i < ARRAY_SIZE(none); i++) {
                if (!CHECK_INT(api_route(none[i], &allow), API_ROUTE_NONE))
                        fprintf(stderr, "    path \"%s\"\n", none[i]);
                CHECK(allow == NULL);
        }
        CHECK_INT(api_route("/v1/sync", NULL), API_ROUTE_SYNC);
}

static void test_methods(void) {
        CHECK(api_method_allowed(API_ROUTE_SYNC, "POST"));
        CHECK(!api_method_allowed(API_ROUTE_SYNC, "GET"));
        CHECK(!api_method_allowed(API_ROUTE_SYNC, "post"));
        CHECK(!api_method_allowed(API_ROUTE_SYNC, "PUT"));
        CHECK(api_method_allowed(API_ROUTE_STATUS, "GET"));
        CHECK(api_method_allowed(API_ROUTE_STATUS, "HEAD"));
        CHECK(!api_method_allowed(API_ROUTE_STATUS, "POST"));
        CHECK(api_method_allowed(API_ROUTE_METRICS, "GET"));
        CHECK(!api_method_allowed(API_ROUTE_METRICS, "DELETE"));
        CHECK(!api_method_allowed(API_ROUTE_NONE, "GET"));
}

static void test_params(void) {
        CHECK(api_param_known(API_ROUTE_SYNC, "wait"));
        CHECK(!api_param_known(API_ROUTE_SYNC, "after"));
        CHECK(api_param_known(API_ROUTE_STATUS, "after"));
        CHECK(api_param_known(API_ROUTE_STATUS, "timeout_s"));
        CHECK(!api_param_known(API_ROUTE_STATUS, "wait"));
        CHECK(!api_param_known(API_ROUTE_METRICS, "after"));
        CHECK(!api_param_known(API_ROUTE_STATUS, ""));
        CHECK(!api_param_known(API_ROUTE_STATUS, "After"));
}

static void test_numbers(void) {
        uint64_t v = 99;

        CHECK_INT(api_parse_number("0", 1, &v), 0);
        CHECK_UINT(v, 0);
        CHECK_INT(api_parse_number("1", 1, &v), 0);
        CHECK_UINT(v, 1);
        CHECK_INT(api_parse_number("300", API_MAX_WAIT_S, &v), 0);
        CHECK_UINT(v, 300);
        CHECK_INT(api_parse_number("18446744073709551615", UINT64_MAX, &v), 0);
        CHECK_UINT(v, UINT64_MAX);
        v = 7;
        static const char *const bad[] = {
                "",
                "2",
                "-1",
                "+1",
                " 1",
                "1 ",
                "1.0",
                "0x1",
                "1e2",
                "yes",
                "18446744073709551616",
                "99999999999999999999999",
        };
        for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
                if (!CHECK_INT(api_parse_number(bad[i], i < 2 ? 1 : UINT64_MAX, &v), -EINVAL))
                        fprintf(stderr, "    input \"%s\"\n", bad[i]);
        CHECK_INT(api_parse_number("2", 1, &v), -EINVAL);
        CHECK_INT(api_parse_number("301", API_MAX_WAIT_S, &v), -EINVAL);
        CHECK_INT(api_parse_number(NULL, 1, &v), -EINVAL);
        CHECK_UINT(v, 7);
}

static void test_error_body(void) {
        size_t len = 0;
        char *s = api_error_body("bad \"x\"\n", &len);

        CHECK_STR(s, "{\"error\":\"bad \\\"x\\\"\\n\"}");
        CHECK_UINT(len, strlen(s));
        free(s);
}

int main(void) {
        RUN(test_routes);
        RUN(test_methods);
        RUN(test_params);
        RUN(test_numbers);
        RUN(test_error_body);
        return test_end();
}
