// liburing for Swift. libc headers come first: liburing.h defines _XOPEN_SOURCE-dependent
// bits that otherwise clash with Glibc's module. Macros Swift cannot import are re-exported
// as constants, and the union fields of io_uring_sqe get tiny setters.
#ifndef FATHOM_CLIBURING_SHIM_H
#define FATHOM_CLIBURING_SHIM_H
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/fs.h>
#include <linux/falloc.h>
#include <liburing.h>

static const unsigned fathom_IOSQE_IO_LINK = IOSQE_IO_LINK;
static const unsigned fathom_IOSQE_ASYNC = IOSQE_ASYNC;
static const unsigned fathom_IOSQE_FIXED_FILE = IOSQE_FIXED_FILE;
static const unsigned fathom_IORING_SETUP_SINGLE_ISSUER = IORING_SETUP_SINGLE_ISSUER;
static const unsigned fathom_IORING_SETUP_DEFER_TASKRUN = IORING_SETUP_DEFER_TASKRUN;
static const unsigned fathom_IORING_SETUP_COOP_TASKRUN = IORING_SETUP_COOP_TASKRUN;
static const unsigned fathom_IORING_FSYNC_DATASYNC = IORING_FSYNC_DATASYNC;
static const unsigned fathom_IORING_CQE_F_MORE = IORING_CQE_F_MORE;
static const unsigned fathom_IORING_CQE_F_NOTIF = IORING_CQE_F_NOTIF;
/* Linux 6.2 ABI values, absent from older liburing headers: ask a SEND_ZC notification to
   say whether the kernel had to copy after all (loopback, devices without scatter-gather). */
static const unsigned fathom_IORING_SEND_ZC_REPORT_USAGE = 1U << 3;
static const unsigned fathom_IORING_NOTIF_USAGE_ZC_COPIED = 1U << 31;
#ifdef O_DIRECT
static const int fathom_O_DIRECT = O_DIRECT;
#else
/* <fcntl.h> hides O_DIRECT without _GNU_SOURCE, which must not be defined here (it would
   change Glibc's module). The value is the Linux ABI's for x86_64 and arm64 differs: */
#if defined(__aarch64__)
static const int fathom_O_DIRECT = 0200000;
#else
static const int fathom_O_DIRECT = 040000;
#endif
#endif
static const int fathom_RWF_DSYNC = RWF_DSYNC;
static const unsigned long fathom_BLKGETSIZE64 = BLKGETSIZE64;
static const unsigned long fathom_BLKSSZGET = BLKSSZGET;
static const unsigned long fathom_BLKPBSZGET = BLKPBSZGET;
static const int fathom_FALLOC_FL_KEEP_SIZE = FALLOC_FL_KEEP_SIZE;
static const int fathom_FALLOC_FL_PUNCH_HOLE = FALLOC_FL_PUNCH_HOLE;
static const int fathom_FALLOC_FL_ZERO_RANGE = FALLOC_FL_ZERO_RANGE;

#include <sys/syscall.h>
#include <sys/vfs.h>
/* The filesystem magic (statfs f_type) of an open file, or 0 if it cannot be asked: tells a
   file on tmpfs or ramfs, whose pages are memory, from one on a disk. */
static inline long fathom_filesystem_type(int fd) {
    struct statfs s;
    return fstatfs(fd, &s) == 0 ? (long)s.f_type : 0;
}
static const long fathom_TMPFS_MAGIC = 0x01021994;
static const long fathom_RAMFS_MAGIC = 0x858458f6;
/* Local disk filesystems whose page cache a mapping may read (FileBackend): their cached
   pages are the file, and a fault on one waits for nothing but a page table entry. Network and
   FUSE filesystems are left out: a fault there can wait for a server. */
static const long fathom_EXT4_MAGIC = 0xEF53;
static const long fathom_XFS_MAGIC = 0x58465342;
static const long fathom_BTRFS_MAGIC = 0x9123683E;
static const long fathom_F2FS_MAGIC = 0xF2F52010;
/* cachestat(2) (Linux 6.5; Debian's headers predate it, the number is the same on every
   architecture): how many of the pages of [offset, offset + length) of a file are in the page
   cache. Returns that count, or -errno (-ENOSYS on older kernels). */
static inline long long fathom_cached_pages(int fd, unsigned long long offset, unsigned long long length) {
    struct { unsigned long long off, len; } range = { offset, length };
    struct { unsigned long long cache, dirty, writeback, evicted, recently_evicted; } stat;
    if (syscall(451, fd, &range, &stat, 0) != 0) return -errno;
    return (long long)stat.cache;
}
/* Pins the calling thread to one CPU. sched_setaffinity(2) and CPU_SET need _GNU_SOURCE,
   which must not be defined here (see above), so the system call is made directly. */
static inline int fathom_pin_current_thread(int cpu) {
    unsigned long mask[16] = {0};
    if (cpu < 0 || cpu >= (int)(sizeof(mask) * 8)) return -1;
    mask[cpu / (8 * sizeof(unsigned long))] |= 1UL << (cpu % (8 * sizeof(unsigned long)));
    return (int)syscall(SYS_sched_setaffinity, 0, sizeof(mask), mask);
}

/* Names the calling thread as ps -L / top -H show it (prctl is variadic, which Swift cannot
   call; pthread_setname_np needs _GNU_SOURCE). Names are cut at 15 bytes. */
static inline int fathom_name_current_thread(const char *name) {
    return (int)syscall(SYS_prctl, 15 /* PR_SET_NAME */, (unsigned long)name, 0UL, 0UL, 0UL);
}

/* fallocate(2) (glibc declares it only with _GNU_SOURCE): for the clone overlay, whose
   copy-on-write work runs on storage worker threads rather than on the ring. */
static inline int fathom_fallocate(int fd, int mode, long long offset, long long length) {
    return (int)syscall(SYS_fallocate, fd, mode, offset, length);
}

/* Multishot recv into a provided-buffer ring (Linux 5.19 buffer rings, 6.0 multishot recv).
   The ring's entries live in page-aligned memory the application owns; these wrap the
   struct's union and the ring's memory barrier, which Swift cannot spell. */
static const unsigned fathom_IORING_CQE_F_BUFFER = IORING_CQE_F_BUFFER;
static const unsigned fathom_IORING_CQE_BUFFER_SHIFT = IORING_CQE_BUFFER_SHIFT;
static inline int fathom_register_buf_ring(struct io_uring *ring, void *entries, unsigned count, unsigned short group) {
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)(uintptr_t)entries;
    reg.ring_entries = count;
    reg.bgid = group;
    io_uring_buf_ring_init((struct io_uring_buf_ring *)entries);
    return io_uring_register_buf_ring(ring, &reg, 0);
}
/* Hands buffer `bid` (at `addr`, `len` bytes) back to the kernel. */
static inline void fathom_buf_ring_recycle(void *entries, unsigned count, void *addr, unsigned len, unsigned short bid) {
    struct io_uring_buf_ring *br = (struct io_uring_buf_ring *)entries;
    io_uring_buf_ring_add(br, addr, len, bid, io_uring_buf_ring_mask(count), 0);
    io_uring_buf_ring_advance(br, 1);
}
static inline void fathom_prep_recv_multishot(struct io_uring_sqe *sqe, int fd, unsigned short group) {
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = group;
}
static inline void fathom_sqe_set_rw_flags(struct io_uring_sqe *sqe, int flags) { sqe->rw_flags = flags; }
/* Turns a prepared READ or WRITE into READ_FIXED / WRITE_FIXED on registered buffer `index`
   (the address range must lie inside that buffer). Other opcodes are left alone. */
static inline void fathom_sqe_use_fixed_buffer(struct io_uring_sqe *sqe, unsigned short index) {
    if (sqe->opcode == IORING_OP_READ) sqe->opcode = IORING_OP_READ_FIXED;
    else if (sqe->opcode == IORING_OP_WRITE) sqe->opcode = IORING_OP_WRITE_FIXED;
    else return;
    sqe->buf_index = index;
}
static inline unsigned long long fathom_sqe_addr(const struct io_uring_sqe *sqe) { return sqe->addr; }
static inline void fathom_sqe_set_ioprio_flags(struct io_uring_sqe *sqe, unsigned flags) { sqe->ioprio |= (unsigned short)flags; }
static inline void fathom_sqe_set_flags(struct io_uring_sqe *sqe, unsigned flags) { sqe->flags |= (unsigned char)flags; }
#endif
