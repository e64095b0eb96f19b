/*
 * uuid.c - event ids and timestamps: UUIDv7 and RFC 3339.
 *
 * UUIDv7 (RFC 9562, section 5.7) puts the Unix time in milliseconds in the
 * first 48 bits, so ids sort by creation time, as text and as bytes:
 *
 *    0                   1                   2                   3
 *   |          unix_ts_ms (48)          |ver 7| rand_a (12) |var|rand_b (62)|
 *
 * Within a process ids are strictly increasing (RFC 9562 section 6.2,
 * method 1, "fixed bit-length dedicated counter"): rand_a is a 12-bit
 * counter.  The pair (ms, counter) is one 60-bit number kept in an atomic
 * word.  A call in a new millisecond seeds the counter with 11 random bits
 * (the top bit stays 0, leaving at least 2048 increments of room); a call in
 * the same millisecond -- or after the wall clock stepped back -- adds one.
 * When the counter overflows the addition carries into the millisecond, so
 * the embedded time runs a little ahead of the clock rather than repeating
 * (the RFC allows this).  The CAS loop makes it thread-safe without a lock.
 * rand_b is 62 fresh bits from getrandom() per id.
 *
 * Timestamps are RFC 3339.  chorus writes one form only, UTC with
 * milliseconds ("2026-03-14T10:00:00.000Z"); it reads any RFC 3339
 * date-time: "Z"/"z" or a +hh:mm/-hh:mm offset, "T" or "t", and a fraction
 * of any length (truncated to milliseconds).  Calendar dates are checked
 * (no month 13, no February 30, February 29 only in leap years); leap
 * seconds (:60) are rejected, as POSIX time has no place for them.  Date
 * arithmetic is Howard Hinnant's days-from-civil, with no libc time zone
 * state, so these functions are pure and thread-safe.
 */
#include "common_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* ---------------------------------------------------------------- random */

static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += UINT64_C(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

/* Fills @p buf from the kernel; only if both getrandom() and /dev/urandom
 * fail (a sandbox without either) does it fall back to a clock-seeded
 * generator, which keeps ids unique within the process but not across. */
static void random_bytes(void *buf, size_t n) {
    if (chorus__clock_random(buf, n))
        return; /* a simulation's seed */
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t r = getrandom(p + got, n - got, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    if (got < n) {
        int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            ssize_t r = read(fd, p + got, n - got);
            if (r > 0)
                got += (size_t)r;
            close(fd);
        }
    }
    static _Atomic uint64_t fallback;
    while (got < n) {
        uint64_t s = atomic_fetch_add(&fallback, 1) ^ chorus__mono_ns() ^
                     ((uint64_t)getpid() << 32);
        uint64_t v = splitmix64(&s);
        size_t k = n - got < sizeof(v) ? n - got : sizeof(v);
        memcpy(p + got, &v, k);
        got += k;
    }
}

/* ------------------------------------------------------------------ UUID */

/* (unix_ms << 12) | counter of the last id handed out. */
static _Atomic uint64_t uuid_state;
static _Atomic unsigned uuid_clock; /* the clock generation uuid_state belongs to */

static uint64_t next_ms_counter(uint16_t seed) {
    unsigned gen = chorus__clock_generation();
    if (atomic_exchange(&uuid_clock, gen) != gen)
        atomic_store(&uuid_state, 0); /* another clock: the last id says nothing */
    uint64_t now = (uint64_t)chorus_now_ms() & ((UINT64_C(1) << 48) - 1);
    uint64_t old = atomic_load(&uuid_state), next;
    do {
        if (now > (old >> 12))
            next = (now << 12) | (seed & 0x7FFu);
        else
            next = old + 1;
    } while (!atomic_compare_exchange_weak(&uuid_state, &old, next));
    return next;
}

void chorus_uuid_v7(char out[37]) {
    unsigned char r[10];
    random_bytes(r, sizeof(r));
    uint64_t mc = next_ms_counter((uint16_t)(r[8] | (r[9] << 8)));
    uint64_t ms = (mc >> 12) & ((UINT64_C(1) << 48) - 1);
    unsigned counter = (unsigned)(mc & 0xFFFu);

    unsigned char b[16];
    for (int i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)(0x70 | (counter >> 8));
    b[7] = (unsigned char)(counter & 0xFF);
    memcpy(b + 8, r, 8);
    b[8] = (unsigned char)(0x80 | (b[8] & 0x3F));

    static const char hex[] = "0123456789abcdef";
    char *o = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *o++ = '-';
        *o++ = hex[b[i] >> 4];
        *o++ = hex[b[i] & 0xF];
    }
    *o = '\0';
}

static int is_hex(char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
           (c >= 'A' && c <= 'F');
}

int chorus_uuid_valid(const char *s) {
    if (!s)
        return 0;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return 0;
        } else if (!is_hex(s[i])) {
            return 0; /* also stops at the NUL of a short string */
        }
    }
    return s[36] == '\0';
}

/* ------------------------------------------------------------- timestamps */

#define MS_PER_DAY INT64_C(86400000)

/* Days since 1970-01-01 of the proleptic Gregorian date y-m-d. */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *yp, int *mp, int *dp) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mq = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mq + 2) / 5 + 1);
    int m = (int)(mq < 10 ? mq + 3 : mq - 9);
    *yp = (int)(yoe + era * 400 + (m <= 2));
    *mp = m;
    *dp = d;
}

static int days_in_month(int y, int m) {
    static const int dim[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 && leap ? 29 : dim[m - 1];
}

/* Writes @p v as exactly @p n decimal digits, then @p sep. */
static char *put_digits(char *p, int v, int n, char sep) {
    for (int i = n - 1; i >= 0; i--, v /= 10)
        p[i] = (char)('0' + v % 10);
    p[n] = sep;
    return p + n + 1;
}

/* Formats years 0000..9999; instants outside are clamped to that range so
 * the output is always exactly 24 characters. */
void chorus_format_timestamp(int64_t ms, char out[25]) {
    const int64_t lo = days_from_civil(0, 1, 1) * MS_PER_DAY;
    const int64_t hi = days_from_civil(10000, 1, 1) * MS_PER_DAY - 1;
    if (ms < lo)
        ms = lo;
    if (ms > hi)
        ms = hi;
    int64_t days = ms / MS_PER_DAY, rem = ms % MS_PER_DAY;
    if (rem < 0) {
        rem += MS_PER_DAY;
        days--;
    }
    int y, mo, d;
    civil_from_days(days, &y, &mo, &d);
    int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60);
    int s = (int)(rem / 1000 % 60), f = (int)(rem % 1000);
    char *p = out;
    p = put_digits(p, y, 4, '-');
    p = put_digits(p, mo, 2, '-');
    p = put_digits(p, d, 2, 'T');
    p = put_digits(p, h, 2, ':');
    p = put_digits(p, mi, 2, ':');
    p = put_digits(p, s, 2, '.');
    p = put_digits(p, f, 3, 'Z');
    *p = '\0';
}

/* Reads exactly @p n digits at *pp into *v; advances *pp. */
static int digits(const char **pp, int n, int *v) {
    int x = 0;
    for (int i = 0; i < n; i++) {
        char c = (*pp)[i];
        if (c < '0' || c > '9')
            return 0;
        x = x * 10 + (c - '0');
    }
    *pp += n;
    *v = x;
    return 1;
}

static int expect(const char **pp, char a, char b) {
    if (**pp != a && **pp != b)
        return 0;
    (*pp)++;
    return 1;
}

/* date-fullyear "-" date-month "-" date-mday */
static int parse_date(const char **pp, int64_t *days) {
    int y, m, d;
    if (!digits(pp, 4, &y) || !expect(pp, '-', '-') || !digits(pp, 2, &m) ||
        !expect(pp, '-', '-') || !digits(pp, 2, &d))
        return 0;
    if (m < 1 || m > 12 || d < 1 || d > days_in_month(y, m))
        return 0;
    *days = days_from_civil(y, m, d);
    return 1;
}

/* time-hour ":" time-minute ":" time-second [time-secfrac] */
static int parse_time(const char **pp, int64_t *ms) {
    int h, mi, s, frac = 0;
    if (!digits(pp, 2, &h) || !expect(pp, ':', ':') || !digits(pp, 2, &mi) ||
        !expect(pp, ':', ':') || !digits(pp, 2, &s))
        return 0;
    if (h > 23 || mi > 59 || s > 59)
        return 0;
    if (**pp == '.') {
        (*pp)++;
        int n = 0;
        for (; **pp >= '0' && **pp <= '9'; (*pp)++, n++)
            if (n < 3)
                frac = frac * 10 + (**pp - '0');
        if (n == 0)
            return 0;
        for (; n < 3; n++)
            frac *= 10;
    }
    *ms = ((int64_t)h * 3600 + mi * 60 + s) * 1000 + frac;
    return 1;
}

/* time-offset: "Z" / ("+" / "-") time-hour ":" time-minute, in ms east. */
static int parse_offset(const char **pp, int64_t *off) {
    if (expect(pp, 'Z', 'z')) {
        *off = 0;
        return 1;
    }
    char sign = **pp;
    int h, m;
    if (!expect(pp, '+', '-') || !digits(pp, 2, &h) || !expect(pp, ':', ':') ||
        !digits(pp, 2, &m) || h > 23 || m > 59)
        return 0;
    *off = (sign == '-' ? -1 : 1) * ((int64_t)h * 60 + m) * 60000;
    return 1;
}

bool chorus__timestamp_parse(const char *s, int64_t *out) {
    if (!s)
        return false;
    int64_t days, ms, off;
    const char *p = s;
    if (!parse_date(&p, &days) || !expect(&p, 'T', 't') ||
        !parse_time(&p, &ms) || !parse_offset(&p, &off) || *p != '\0')
        return false;
    /* The instant in UTC must have a four-digit year from 0001, so that its
     * canonical text says the same as its milliseconds. */
    int64_t t = days * MS_PER_DAY + ms - off;
    if (t < CHORUS__TS_MIN_MS || t > CHORUS__TS_MAX_MS)
        return false;
    *out = t;
    return true;
}

chorus_err_t chorus_timestamp_parse(const char *s, int64_t *ms) {
    int64_t t;
    if (!ms || !chorus__timestamp_parse(s, &t))
        return CHORUS_ERR_INVALID_ARG;
    *ms = t;
    return CHORUS_OK;
}

/* Instants before 1970 are rejected here: -1 is the error value. */
int64_t chorus_parse_timestamp(const char *s) {
    int64_t t;
    return chorus__timestamp_parse(s, &t) && t >= 0 ? t : -1;
}

char *chorus__uuid_array(size_t n, const char *(*at)(const void *arg, size_t i), const void *arg) {
    char *arr = malloc(n * 37 + 3), *o = arr;
    if (!arr)
        return NULL;
    *o++ = '{';
    for (size_t i = 0; i < n; i++) {
        if (i)
            *o++ = ',';
        memcpy(o, at(arg, i), 36);
        o += 36;
    }
    *o++ = '}';
    *o = '\0';
    return arr;
}
