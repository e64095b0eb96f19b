/*
 * clock.c - where chorus takes time and randomness from: the system, or a
 * simulation.
 *
 * Everything in the library that reads a clock or draws random bits goes
 * through here: chorus_now_ms() (envelope timestamps, deadlines, the time
 * in every UUIDv7), the monotonic clock (poll waits, confirm deadlines,
 * backoff), the random bits of event ids and of backoff jitter.  By
 * default these are the system's.  A simulation (one process running
 * every participant of a saga against an in-memory broker) installs a
 * clock of its own: time then moves only when the simulation moves it, and
 * random bits come from its seed, so the same seed gives the same event
 * ids, the same timestamps and therefore the same run.
 *
 *   chorus__clock_use(&c)   from now on, c's time and bits (NULL: the system's)
 *   chorus__sim_clock_*     a ready-made one: a seeded generator and a time
 *                           that only advances when told
 *
 * Installing a clock is for one thread's process: nothing else may run
 * chorus at the same time (a simulation is single-threaded by design).
 */
#include "common_int.h"

#include <string.h>
#include <time.h>

static const chorus__clock_t *installed;
static unsigned generation; /* counts installations: uuid.c restarts on a change */

void chorus__clock_use(const chorus__clock_t *c) {
    installed = c;
    generation++;
}

unsigned chorus__clock_generation(void) { return generation; }

bool chorus__clock_simulated(void) { return installed != NULL; }

int64_t chorus_now_ms(void) {
    if (installed)
        return installed->wall_ms(installed->opaque);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t chorus__mono_ns(void) {
    if (installed)
        return installed->mono_ns(installed->opaque);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int64_t chorus__mono_ms(void) { return (int64_t)(chorus__mono_ns() / 1000000u); }

bool chorus__clock_random(void *buf, size_t n) {
    if (!installed)
        return false;
    installed->random(installed->opaque, buf, n);
    return true;
}

/* ---- a simulated clock ------------------------------------------------ */

/* xoshiro256** (Blackman and Vigna), seeded through splitmix64. */
static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t chorus__sim_next(chorus__sim_clock_t *s) {
    uint64_t *q = s->rng;
    uint64_t result = rotl(q[1] * 5, 7) * 9, t = q[1] << 17;
    q[2] ^= q[0];
    q[3] ^= q[1];
    q[1] ^= q[2];
    q[0] ^= q[3];
    q[2] ^= t;
    q[3] = rotl(q[3], 45);
    return result;
}

static int64_t sim_wall(void *opaque) {
    const chorus__sim_clock_t *s = opaque;
    return s->epoch_ms + (int64_t)(s->now_ns / 1000000u) + s->skew_ms;
}

static uint64_t sim_mono(void *opaque) { return ((const chorus__sim_clock_t *)opaque)->now_ns; }

static void sim_random(void *opaque, void *buf, size_t n) {
    unsigned char *p = buf;
    while (n) {
        uint64_t v = chorus__sim_next(opaque);
        size_t k = n < sizeof(v) ? n : sizeof(v);
        memcpy(p, &v, k);
        p += k;
        n -= k;
    }
}

void chorus__sim_clock_init(chorus__sim_clock_t *s, uint64_t seed, int64_t epoch_ms) {
    memset(s, 0, sizeof(*s));
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) {
        uint64_t z = (x += UINT64_C(0x9E3779B97F4A7C15));
        z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
        s->rng[i] = z ^ (z >> 31);
    }
    s->epoch_ms = epoch_ms;
    s->now_ns = 1000000000u; /* monotonic time starts at 1 s, as after a boot */
    s->clock = (chorus__clock_t){sim_wall, sim_mono, sim_random, s};
}

void chorus__sim_clock_advance(chorus__sim_clock_t *s, int64_t ms) {
    if (ms > 0)
        s->now_ns += (uint64_t)ms * 1000000u;
}
