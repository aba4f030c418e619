#ifndef FATHOM_MAPPING_GUARD_H
#define FATHOM_MAPPING_GUARD_H

#include <stddef.h>
#include <stdint.h>

/* Keeps an access to a file mapping from taking the process down when the file shrinks under it.

   A page of a shared file mapping that lies past the file's end raises SIGBUS when touched
   (someone truncated the file), as does a page the kernel cannot back (a hole written when
   tmpfs is full, a memory error). For ranges registered here, a SIGBUS handler maps a page of
   zeros over the faulting page and counts the fault, so the access completes and the owner can
   see, by the count, that what it read is not the file's or that what it wrote did not reach
   the file. Faults at any other address go to the handler that was installed before (the Swift
   runtime's crash reporter, or the default action).

   Written in C because a signal handler must not touch anything the Swift runtime may lock or
   allocate (lazy globals, retain/release); here it only reads a fixed table of atomics and calls
   mmap. */

/* Installs the handler, once per process (later calls return the first result): 0, or -errno. */
int fathom_mapping_guard_install(void);

/* Registers [base, base + length) (page aligned); `writable`: the zeros mapped over a faulting page
   can be written too, so that a copy into the mapping completes. Returns its slot, or -1 when
   every slot of the fixed table is in use. */
int fathom_mapping_guard_add(void *base, size_t length, int writable);

/* Unregisters a slot; call before unmapping its range. */
void fathom_mapping_guard_remove(int slot);

/* Faults the handler has absorbed in the slot's range since it was registered. */
uint64_t fathom_mapping_guard_faults(int slot);

/* Reads one byte of every page that [p, p + length) covers, so that every one of them is mapped
   (or absorbed and counted) before the caller hands the range to the kernel. */
void fathom_mapping_guard_touch(const void *p, size_t length);

#endif
