// ISA-L's CRC routines; crc32_iscsi is CRC32C (Castagnoli), the NVMe/TCP digest.
#include <isa-l/crc.h>
