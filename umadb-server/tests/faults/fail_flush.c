/*
 * Makes flushes of chosen files fail, for the flush-failure test (flush_failure.rs). Loaded into
 * the `umadb` server with LD_PRELOAD:
 *
 *   UMADB_FAIL_FLUSH_FILE  file names starting with this fail (say "log-" or "data.mdb")
 *   UMADB_FAIL_FLUSH_WHILE a path: flushes fail only while a file exists there
 *
 * While the trigger file exists, fsync and fdatasync of a descriptor whose file name starts
 * with the prefix return -1 with errno EIO without flushing anything, as when the disk reports
 * a failed write: what the page cache held may or may not reach the disk. Every other call goes
 * to the C library unchanged.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static const char *prefix;
static const char *trigger;

__attribute__((constructor)) static void start(void) {
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    prefix = getenv("UMADB_FAIL_FLUSH_FILE");
    trigger = getenv("UMADB_FAIL_FLUSH_WHILE");
}

/* Whether a flush of `fd` is to fail now. */
static int failing(int fd) {
    if (prefix == NULL || trigger == NULL || access(trigger, F_OK) != 0) {
        return 0;
    }
    char link[64];
    char target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t len = readlink(link, target, sizeof target - 1);
    if (len <= 0) {
        return 0;
    }
    target[len] = '\0';
    const char *name = strrchr(target, '/');
    name = name == NULL ? target : name + 1;
    return strncmp(name, prefix, strlen(prefix)) == 0;
}

int fsync(int fd) {
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return real_fsync(fd);
}

int fdatasync(int fd) {
    if (failing(fd)) {
        errno = EIO;
        return -1;
    }
    return real_fdatasync(fd);
}
