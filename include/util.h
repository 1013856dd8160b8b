/* Small helpers shared by every module: cleanup attributes, string and
 * number parsing, and time. */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define _cleanup_(f)  __attribute__((cleanup(f)))

static inline void freep(void *p) {
        free(*(void **)p);
}

static inline void closep(int *fd) {
        if (*fd >= 0) {
                int saved = errno;
                close(*fd);
                errno = saved;
        }
}

static inline void fclosep(FILE **f) {
        if (*f)
                fclose(*f);
}

#define _cleanup_free_   _cleanup_(freep)
#define _cleanup_close_  _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Moves ownership out of a cleanup variable: `*ret = TAKE_PTR(p);`. */
#define TAKE_PTR(p)                                                                                                    \
        ({                                                                                                             \
                __typeof__(p) _tmp_ = (p);                                                                             \
                (p) = NULL;                                                                                            \
                _tmp_;                                                                                                 \
        })
#define TAKE_FD(fd)                                                                                                    \
        ({                                                                                                             \
                int _tmp_ = (fd);                                                                                      \
                (fd) = -1;                                                                                             \
                _tmp_;                                                                                                 \
        })

static inline bool streq(const char *a, const char *b) {
        return strcmp(a, b) == 0;
}

/* Parses a whole decimal number in [min, max]. Returns 0 or -EINVAL /
 * -ERANGE. */
int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret);

/* Parses an octal file mode such as "0640" (at most 07777). */
int parse_mode(const char *s, unsigned *ret);

/* Appends src (n bytes) to the heap string *p (length *len), keeping it
 * NUL-terminated. Returns 0 or -ENOMEM. */
int str_append(char **p, size_t *len, const char *src, size_t n);

/* Writes a printable, length-limited rendering of untrusted bytes into buf
 * (size >= 8): control bytes and non-ASCII become \xHH, output is cut with
 * "..." past the buffer. Returns buf. */
const char *str_escape(const void *data, size_t n, char *buf, size_t size);

/* Monotonic and real-time clocks in microseconds. */
uint64_t now_usec(int clock);

/* Milliseconds from a monotonic start time to now. */
uint64_t elapsed_ms(uint64_t start_usec);
