/* Small helpers shared by every module. */
#include "util.h"

#include <time.h>

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *ret) {
        char *end;
        unsigned long long v;

        if (!s || *s < '0' || *s > '9')
                return -EINVAL;
        errno = 0;
        v = strtoull(s, &end, 10);
        if (*end != '\0')
                return -EINVAL;
        if (errno == ERANGE || v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_mode(const char *s, unsigned *ret) {
        char *end;
        unsigned long v;

        if (!s || *s < '0' || *s > '7')
                return -EINVAL;
        errno = 0;
        v = strtoul(s, &end, 8);
        if (*end != '\0' || errno || v > 07777)
                return -EINVAL;
        *ret = (unsigned)v;
        return 0;
}

int str_append(char **p, size_t *len, const char *src, size_t n) {
        char *s = realloc(*p, *len + n + 1);

        if (!s)
                return -ENOMEM;
        memcpy(s + *len, src, n);
        *len += n;
        s[*len] = '\0';
        *p = s;
        return 0;
}

static size_t escaped_len(unsigned char c) {
        return (c < 0x20 || c >= 0x7f || c == '\\') ? 4 : 1;
}

const char *str_escape(const void *data, size_t n, char *buf, size_t size) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *d = data;
        size_t o = 0, total = 0, room;

        for (size_t i = 0; i < n; i++)
                total += escaped_len(d[i]);
        /* "..." only when the whole rendering does not fit. */
        room = total < size ? size - 1 : size - 4;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = d[i];

                if (o + escaped_len(c) > room)
                        break;
                if (escaped_len(c) == 1) {
                        buf[o++] = (char)c;
                } else {
                        buf[o++] = '\\';
                        buf[o++] = 'x';
                        buf[o++] = hex[c >> 4];
                        buf[o++] = hex[c & 15];
                }
        }
        if (total >= size) {
                memcpy(buf + o, "...", 3);
                o += 3;
        }
        buf[o] = '\0';
        return buf;
}

uint64_t now_usec(int clock) {
        struct timespec ts;

        clock_gettime(clock, &ts);
        return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t elapsed_ms(uint64_t start_usec) {
        return (now_usec(CLOCK_MONOTONIC) - start_usec) / 1000u;
}
