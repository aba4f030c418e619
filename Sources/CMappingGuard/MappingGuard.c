#include "CMappingGuard.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* One entry per mapped namespace file; a daemon has far fewer tmpfs namespaces than this. A slot
   is free while its base is 0. */
#define SLOTS 1024

static _Atomic uintptr_t slot_base[SLOTS];
static _Atomic size_t slot_length[SLOTS];
static _Atomic uint64_t slot_faults[SLOTS];
static _Atomic int slot_protection[SLOTS];

static struct sigaction previous_action;
static uintptr_t page_mask;
static int install_result;
static pthread_once_t install_once = PTHREAD_ONCE_INIT;

static void on_sigbus(int signal, siginfo_t *info, void *context) {
    (void)signal;
    (void)context;
    uintptr_t address = (uintptr_t)info->si_addr;
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t base = atomic_load_explicit(&slot_base[i], memory_order_acquire);
        if (base <= 1 || address < base) continue; /* free, or being claimed */
        if (address - base >= atomic_load_explicit(&slot_length[i], memory_order_relaxed)) continue;
        void *page = (void *)(address & ~page_mask);
        /* mmap is a plain system call on Linux (not on POSIX's async-signal-safe list by name,
           but it takes no user-space lock); errno is the interrupted code's and is kept. */
        int saved = errno;
        int protection = atomic_load_explicit(&slot_protection[i], memory_order_relaxed);
        void *zeros = mmap(page, page_mask + 1, protection, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        errno = saved;
        if (zeros == MAP_FAILED) break;
        atomic_fetch_add_explicit(&slot_faults[i], 1, memory_order_release);
        return;
    }
    /* Not ours: put the previous handler back and return; the access faults again and that
       handler (or the default action) sees it as if this one had never been installed. */
    sigaction(SIGBUS, &previous_action, NULL);
}

static void install(void) {
    page_mask = (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_sigbus;
    action.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&action.sa_mask);
    install_result = sigaction(SIGBUS, &action, &previous_action) == 0 ? 0 : -errno;
}

static uintptr_t fathom_page_mask(void) {
    return page_mask != 0 ? page_mask : (uintptr_t)sysconf(_SC_PAGESIZE) - 1;
}

int fathom_mapping_guard_install(void) {
    pthread_once(&install_once, install);
    return install_result;
}

int fathom_mapping_guard_add(void *base, size_t length, int writable) {
    for (int i = 0; i < SLOTS; i++) {
        uintptr_t expected = 0;
        /* Claim with a non-address marker first so that the length is in place before the
           handler can match the slot's real base. */
        if (!atomic_compare_exchange_strong(&slot_base[i], &expected, (uintptr_t)1)) continue;
        atomic_store_explicit(&slot_length[i], length, memory_order_relaxed);
        atomic_store_explicit(&slot_faults[i], 0, memory_order_relaxed);
        atomic_store_explicit(&slot_protection[i], writable ? PROT_READ | PROT_WRITE : PROT_READ, memory_order_relaxed);
        atomic_store_explicit(&slot_base[i], (uintptr_t)base, memory_order_release);
        return i;
    }
    return -1;
}

void fathom_mapping_guard_remove(int slot) {
    if (slot < 0 || slot >= SLOTS) return;
    atomic_store_explicit(&slot_length[slot], 0, memory_order_relaxed);
    atomic_store_explicit(&slot_base[slot], 0, memory_order_release);
}

uint64_t fathom_mapping_guard_faults(int slot) {
    if (slot < 0 || slot >= SLOTS) return 0;
    return atomic_load_explicit(&slot_faults[slot], memory_order_acquire);
}

void fathom_mapping_guard_touch(const void *p, size_t length) {
    if (length == 0) return;
    uintptr_t mask = fathom_page_mask();
    const volatile unsigned char *first = p;
    uintptr_t end = (uintptr_t)p + length;
    (void)first[0];
    for (uintptr_t page = ((uintptr_t)p & ~mask) + mask + 1; page < end; page += mask + 1)
        (void)*(const volatile unsigned char *)page;
}
