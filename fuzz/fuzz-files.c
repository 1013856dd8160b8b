/* libFuzzer target: the untrusted parts of a [files NAME] row, checked
 * against an independent model.
 *
 * Input: one flags byte (bit 0: the bytes are a content to check as
 * pem-private-key, else a file name), then the bytes.
 *
 * Properties: nothing crashes or leaks; files_check_name() accepts exactly
 * the names of 1 to 247 bytes of [A-Za-z0-9._-] that do not start with
 * '.', so no accepted name can leave its directory or be a temporary
 * file's; files_check_content() accepts a pem-private-key content only
 * when it starts with a BEGIN ... PRIVATE KEY line, ends with the matching
 * END line and at most one line break and holds no NUL; a refusal's reason
 * is one of the fixed texts, so it never quotes a byte of the input. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>

#include "files.h"
#include "log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool model_name(const uint8_t *s, size_t n) {
        if (n == 0 || n > 247 || s[0] == '.')
                return false;
        for (size_t i = 0; i < n; i++)
                if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
                      s[i] == '.' || s[i] == '_' || s[i] == '-'))
                        return false;
        return true;
}

static bool ends_with_end_line(const uint8_t *s, size_t n) {
        static const char *const ends[] = {"-----END PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----",
                                           "-----END EC PRIVATE KEY-----"};
        while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
                n--;
        for (size_t i = 0; i < 3; i++) {
                size_t k = strlen(ends[i]);
                if (n >= k && memcmp(s + n - k, ends[i], k) == 0)
                        return true;
        }
        return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        const char *why;

        if (!init) {
                log_init(LOG_EMERG - 1); /* nothing logged */
                init = true;
        }
        if (size < 1)
                return 0;
        if (data[0] & 1) {
                const uint8_t *c = data + 1;
                size_t n = size - 1;

                why = files_check_content(FILES_CONTENT_PEM_PRIVATE_KEY, c, n);
                if (!why) {
                        if (n < 11 || memcmp(c, "-----BEGIN ", 11) != 0 || memchr(c, '\0', n) ||
                            !ends_with_end_line(c, n))
                                abort();
                } else {
                        static const char *const fixed[] = {
                                "not a PEM private key: a line of its body is empty or longer than 80 bytes",
                                ("not a PEM private key: does not start with a BEGIN PRIVATE KEY, RSA PRIVATE KEY or "
                                 "EC PRIVATE KEY line"),
                                "not a PEM private key: empty body",
                                "not a PEM private key: holds a NUL byte",
                                "not a PEM private key: its body is not base64 (an encrypted key, or headers)",
                                "not a PEM private key: libcrypto cannot read it as one",
                                "not a PEM private key: no END line",
                                "not a PEM private key: text follows the END line (one block only)",
                                "content is larger than 1 MiB",
                                "not checked: out of memory",
                        };
                        bool known = false;
                        for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
                                known |= strcmp(why, fixed[i]) == 0;
                        if (!known)
                                abort();
                }
                return 0;
        }
        why = files_check_name(data + 1, size - 1);
        if ((why == NULL) != model_name(data + 1, size - 1))
                abort();
        return 0;
}
