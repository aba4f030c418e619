// libnvme's wire structs and constants (header only: the library itself is not linked,
// it would pull in json-c and libcrypto for nothing a target needs).
#include <stdbool.h>
#include <stdint.h>
#include <linux/types.h>
#include <nvme/types.h>
