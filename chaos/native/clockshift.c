/* clockshift: step one process's wall clock, for the fault harness's clock nemesis.
 *
 * Preloaded (LD_PRELOAD) into a node's processes, it adds an offset to the wall clock
 * (CLOCK_REALTIME and its coarse variant, gettimeofday, time) and leaves every other
 * clock alone: a stepped wall clock, as a bad NTP step gives, while monotonic and boot
 * time run on. The offset, in seconds (may be negative or fractional), is read from the
 * file named by CLOCKSHIFT_FILE at most once per second of monotonic time, so the
 * harness steps the clock of running processes by rewriting that file.
 *
 * Why not libfaketime (Debian's faketime): with its monotonic clock left real it makes
 * clock_nanosleep fail with EINVAL, i.e. every time.sleep() in Python 3.11; and faking
 * the monotonic clock too is not what a stepped clock does.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime;
static _Atomic long long offset_ns;
static _Atomic long long checked_s = -1;

static clock_gettime_fn real(void) {
    if (!real_clock_gettime)
        real_clock_gettime = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real_clock_gettime;
}

static void reload(void) {
    const char *path = getenv("CLOCKSHIFT_FILE");
    char buf[64];
    ssize_t n;
    int fd;
    if (!path || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return;
    n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return;
    buf[n] = 0;
    atomic_store(&offset_ns, (long long)(strtod(buf, NULL) * 1e9));
}

static long long offset(void) {
    struct timespec mono;
    if (real()(CLOCK_MONOTONIC, &mono) == 0 &&
        atomic_exchange(&checked_s, (long long)mono.tv_sec) != (long long)mono.tv_sec)
        reload();
    return atomic_load(&offset_ns);
}

static void shift(struct timespec *ts) {
    long long ns = (long long)ts->tv_sec * 1000000000LL + ts->tv_nsec + offset();
    ts->tv_sec = (time_t)(ns / 1000000000LL);
    ts->tv_nsec = (long)(ns % 1000000000LL);
    if (ts->tv_nsec < 0) {
        ts->tv_nsec += 1000000000L;
        ts->tv_sec -= 1;
    }
}

int clock_gettime(clockid_t id, struct timespec *ts) {
    int rc = real()(id, ts);
    if (rc == 0 && (id == CLOCK_REALTIME || id == CLOCK_REALTIME_COARSE))
        shift(ts);
    return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return -1;
    tv->tv_sec = ts.tv_sec;
    tv->tv_usec = ts.tv_nsec / 1000;
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return (time_t)-1;
    if (out)
        *out = ts.tv_sec;
    return ts.tv_sec;
}
