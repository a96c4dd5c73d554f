/*
 * Records what a process writes to the files of one directory, and when it flushes them, for
 * the power-cut test (power_cut.rs). Loaded into the `umadb` server with LD_PRELOAD:
 *
 *   UMADB_POWER_DIR   the store's directory (absolute, as the server is given it)
 *   UMADB_POWER_TRACE the trace file to append to
 *
 * Every write to a file directly in that directory, or in its subdirectory `creating` where a
 * new store's data file is made (LMDB's lock files aside), is appended to the trace after it
 * happened, with its offset and the bytes written; every fsync or fdatasync of
 * such a file is appended twice, when it starts and when it returned successfully. A write
 * through a descriptor opened with O_SYNC or O_DSYNC is marked as already durable. The test
 * replays the trace to build the files a power cut could have left (see power/mod.rs).
 *
 * A record is one write(2) to the trace (opened O_APPEND, so records of different threads do
 * not interleave): u32 length of what follows, u8 op, u8 file, u16 zero, u64 argument, then the
 * op's bytes. Ops: 1 file name (bytes: the name; file: its number from now on), 2 write
 * (argument: offset; bytes: the data), 3 durable write (same), 4 flush starts, 5 flush
 * returned (argument: a number pairing the two), 6 truncate (argument: the new length),
 * 7 the file was created by this open, 8 and 9 a flush of the directory itself starts and
 * returned (file: 0; argument as for 4 and 5), 10 the file was renamed (argument: the number of
 * its new name, named before).
 * A record cut short by the process's death is ignored by the reader.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 4096
#define MAX_FILES 32

enum { OP_NAME = 1, OP_WRITE = 2, OP_DURABLE_WRITE = 3, OP_FLUSH_START = 4, OP_FLUSH_END = 5,
       OP_TRUNCATE = 6, OP_CREATE = 7, OP_DIR_FLUSH_START = 8, OP_DIR_FLUSH_END = 9,
       OP_RENAME = 10 };

/* The subdirectory where a new store's data file is made, then renamed into the directory. */
#define CREATING "creating/"

/* The watch of a descriptor of the directory itself. */
#define DIRECTORY 0x200

/* File number + 1 of each descriptor (0: not watched); bit 8 set: opened with O_SYNC/O_DSYNC;
 * DIRECTORY: the directory. */
static int watched[MAX_FD];
static char names[MAX_FILES][256];
static int name_count;
static pthread_mutex_t names_lock = PTHREAD_MUTEX_INITIALIZER;
static int trace_fd = -1;
static const char *dir;
static size_t dir_len;
static uint64_t flush_counter;

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static ssize_t (*real_pwritev)(int, const struct iovec *, int, off_t);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int (*real_ftruncate64)(int, off_t);
static int (*real_rename)(const char *, const char *);

__attribute__((constructor)) static void start(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_pwrite64 = dlsym(RTLD_NEXT, "pwrite64");
    real_pwritev = dlsym(RTLD_NEXT, "pwritev");
    real_open = dlsym(RTLD_NEXT, "open");
    real_open64 = dlsym(RTLD_NEXT, "open64");
    real_openat = dlsym(RTLD_NEXT, "openat");
    real_openat64 = dlsym(RTLD_NEXT, "openat64");
    real_close = dlsym(RTLD_NEXT, "close");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    real_ftruncate64 = dlsym(RTLD_NEXT, "ftruncate64");
    real_rename = dlsym(RTLD_NEXT, "rename");
    dir = getenv("UMADB_POWER_DIR");
    const char *trace = getenv("UMADB_POWER_TRACE");
    if (dir == NULL || trace == NULL) {
        dir = NULL;
        return;
    }
    dir_len = strlen(dir);
    trace_fd = real_open(trace, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (trace_fd < 0) {
        /* Without its trace the test would prove nothing: stop at once. */
        abort();
    }
}

/* Appends one record; gives up the process if it cannot, so no write goes unrecorded. */
static void emit(int op, int file, uint64_t arg, const struct iovec *parts, int count,
                 size_t total) {
    size_t len = 12 + total;
    char *record = malloc(4 + len);
    if (record == NULL) abort();
    uint32_t len32 = (uint32_t)len;
    memcpy(record, &len32, 4);
    record[4] = (char)op;
    record[5] = (char)file;
    record[6] = 0;
    record[7] = 0;
    memcpy(record + 8, &arg, 8);
    size_t at = 16;
    for (int i = 0; i < count && total > 0; i++) {
        size_t take = parts[i].iov_len < total ? parts[i].iov_len : total;
        memcpy(record + at, parts[i].iov_base, take);
        at += take;
        total -= take;
    }
    ssize_t done = real_write(trace_fd, record, 4 + len);
    free(record);
    if (done != (ssize_t)(4 + len)) abort();
}

/* Whether `path` names nothing yet (checked before an open that may create it). */
static int missing(const char *path, int flags) {
    if (dir == NULL || !(flags & O_CREAT)) return 0;
    struct stat st;
    return stat(path, &st) != 0 && errno == ENOENT;
}

/* The name a watched file at `path` goes by in the trace (relative to the directory), or NULL:
 * files directly in the directory or in `creating`, LMDB's lock files aside. */
static const char *watched_name(const char *path) {
    if (dir == NULL || path == NULL || strncmp(path, dir, dir_len) != 0) return NULL;
    if (path[dir_len] != '/') return NULL;
    const char *name = path + dir_len + 1;
    const char *base = strncmp(name, CREATING, strlen(CREATING)) == 0 ? name + strlen(CREATING) : name;
    if (*base == '\0' || strchr(base, '/') != NULL || strcmp(base, "lock.mdb") == 0) return NULL;
    if (strlen(name) >= 256) return NULL;
    return name;
}

/* The number of the file named `name`, given one (and its name recorded) if it has none. */
static int number_of(const char *name) {
    pthread_mutex_lock(&names_lock);
    int file = -1;
    for (int i = 0; i < name_count; i++) {
        if (strcmp(names[i], name) == 0) file = i;
    }
    if (file < 0) {
        if (name_count == MAX_FILES) abort();
        file = name_count++;
        strcpy(names[file], name);
        struct iovec part = {(void *)name, strlen(name)};
        emit(OP_NAME, file, 0, &part, 1, part.iov_len);
    }
    pthread_mutex_unlock(&names_lock);
    return file;
}

/* Starts watching `fd` if `path` names a watched file, or the directory itself. */
static void opened(int fd, const char *path, int flags, int created) {
    if (dir == NULL || fd < 0 || fd >= MAX_FD || path == NULL) return;
    if (strncmp(path, dir, dir_len) != 0) return;
    if (path[dir_len] == '\0' || (path[dir_len] == '/' && path[dir_len + 1] == '\0')) {
        __atomic_store_n(&watched[fd], DIRECTORY, __ATOMIC_SEQ_CST);
        return;
    }
    const char *name = watched_name(path);
    if (name == NULL) return;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    int file = number_of(name);
    if (created) emit(OP_CREATE, file, 0, NULL, 0, 0);
    if (flags & O_TRUNC) emit(OP_TRUNCATE, file, 0, NULL, 0, 0);
    int sync = (flags & (O_SYNC | O_DSYNC)) ? 0x100 : 0;
    __atomic_store_n(&watched[fd], (file + 1) | sync, __ATOMIC_SEQ_CST);
}

static int watch_of(int fd) {
    if (dir == NULL || fd < 0 || fd >= MAX_FD) return 0;
    return __atomic_load_n(&watched[fd], __ATOMIC_SEQ_CST);
}

static void wrote(int watch, off_t offset, const struct iovec *parts, int count, ssize_t done) {
    if (watch == 0 || watch == DIRECTORY || done <= 0) return;
    int op = (watch & 0x100) ? OP_DURABLE_WRITE : OP_WRITE;
    emit(op, (watch & 0xff) - 1, (uint64_t)offset, parts, count, (size_t)done);
}

/* The mode argument exists only when the flags create a file. */
#define MODE_OF(flags) \
    int mode = 0; \
    if ((flags) & (O_CREAT | O_TMPFILE)) { \
        va_list args; \
        va_start(args, flags); \
        mode = va_arg(args, int); \
        va_end(args); \
    }

#define OPEN(name, real) \
    int name(const char *path, int flags, ...) { \
        MODE_OF(flags) \
        int created = missing(path, flags); \
        int fd = real(path, flags, mode); \
        opened(fd, path, flags, created); \
        return fd; \
    }

/* Relative to a directory descriptor: only absolute paths are matched (the server's are). */
#define OPENAT(name, real) \
    int name(int at, const char *path, int flags, ...) { \
        MODE_OF(flags) \
        int created = path[0] == '/' && missing(path, flags); \
        int fd = real(at, path, flags, mode); \
        if (path[0] == '/') opened(fd, path, flags, created); \
        return fd; \
    }

OPEN(open, real_open)
OPEN(open64, real_open64)
OPENAT(openat, real_openat)
OPENAT(openat64, real_openat64)

int close(int fd) {
    if (fd >= 0 && fd < MAX_FD) __atomic_store_n(&watched[fd], 0, __ATOMIC_SEQ_CST);
    return real_close(fd);
}

ssize_t write(int fd, const void *buf, size_t count) {
    int watch = watch_of(fd);
    off_t offset = watch ? lseek(fd, 0, SEEK_CUR) : 0;
    ssize_t done = real_write(fd, buf, count);
    struct iovec part = {(void *)buf, count};
    wrote(watch, offset, &part, 1, done);
    return done;
}

ssize_t writev(int fd, const struct iovec *parts, int count) {
    int watch = watch_of(fd);
    off_t offset = watch ? lseek(fd, 0, SEEK_CUR) : 0;
    ssize_t done = real_writev(fd, parts, count);
    wrote(watch, offset, parts, count, done);
    return done;
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    ssize_t done = real_pwrite(fd, buf, count, offset);
    struct iovec part = {(void *)buf, count};
    wrote(watch_of(fd), offset, &part, 1, done);
    return done;
}

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    ssize_t done = real_pwrite64(fd, buf, count, offset);
    struct iovec part = {(void *)buf, count};
    wrote(watch_of(fd), offset, &part, 1, done);
    return done;
}

ssize_t pwritev(int fd, const struct iovec *parts, int count, off_t offset) {
    ssize_t done = real_pwritev(fd, parts, count, offset);
    wrote(watch_of(fd), offset, parts, count, done);
    return done;
}

static int flushed(int fd, int (*flush)(int)) {
    int watch = watch_of(fd);
    if (watch == 0) return flush(fd);
    int directory = watch == DIRECTORY;
    int file = directory ? 0 : (watch & 0xff) - 1;
    uint64_t id = __atomic_add_fetch(&flush_counter, 1, __ATOMIC_SEQ_CST);
    emit(directory ? OP_DIR_FLUSH_START : OP_FLUSH_START, file, id, NULL, 0, 0);
    int rc = flush(fd);
    int saved = errno;
    if (rc == 0) emit(directory ? OP_DIR_FLUSH_END : OP_FLUSH_END, file, id, NULL, 0, 0);
    errno = saved;
    return rc;
}

int fsync(int fd) { return flushed(fd, real_fsync); }

int fdatasync(int fd) { return flushed(fd, real_fdatasync); }

static int truncated(int fd, off_t length, int (*truncate)(int, off_t)) {
    int rc = truncate(fd, length);
    int watch = watch_of(fd);
    if (rc == 0 && watch != 0 && watch != DIRECTORY) emit(OP_TRUNCATE, (watch & 0xff) - 1, (uint64_t)length, NULL, 0, 0);
    return rc;
}

int ftruncate(int fd, off_t length) { return truncated(fd, length, real_ftruncate); }

int ftruncate64(int fd, off_t length) { return truncated(fd, length, real_ftruncate64); }

/* A watched file renamed to another watched name: its contents go by the new name, which is
 * new in the directory until a flush of the directory. */
int rename(const char *from, const char *to) {
    int rc = real_rename(from, to);
    const char *old_name = watched_name(from);
    const char *new_name = watched_name(to);
    if (rc == 0 && old_name != NULL && new_name != NULL) {
        int saved = errno;
        int old_file = number_of(old_name);
        int new_file = number_of(new_name);
        emit(OP_RENAME, old_file, (uint64_t)new_file, NULL, 0, 0);
        errno = saved;
    }
    return rc;
}
