import NVMeWire

/// Controller properties reached through Fabrics Property Get/Set (the registers of a
/// PCIe controller): CAP, VS, CC, CSTS. Enable and shutdown follow the CC writes.
extension Controller {
    /// The default VS: NVMe 1.3 (CNS 03h mandatory, no CNS 08h/CSI). A subsystem may say 1.2.
    public static let version: UInt32 = 0x0001_0300

    enum Register: UInt32 {
        case capabilities = 0x00
        case version = 0x08
        case configuration = 0x14
        case status = 0x1C
    }

    var capabilities: UInt64 {
        let mqes = UInt64(min(maxQueueEntries, 65536) - 1)
        return mqes                       // MQES: 0-based
            | 1 << 16                     // CQR: contiguous queues required
            | UInt64(settings.readyTimeoutUnits) << 24  // TO
            | 1 << 37                     // CSS: NVM command set
        // DSTRD, MPSMIN and MPSMAX are 0: 4 KiB pages only.
    }

    func propertyGet(_ sqe: SubmissionQueueEntry) -> CommandCompletion {
        let size = sqe.propertySize
        let value: UInt64
        switch (Register(rawValue: sqe.propertyOffset), size) {
        case (.capabilities?, 8): value = capabilities
        case (.version?, 4): value = UInt64(subsystem.identity.version)
        case (.configuration?, 4): value = UInt64(configuration)
        case (.status?, 4): value = UInt64(status)
        default: return .failure(.invalidField)
        }
        return CommandCompletion(status: .success, dw0: UInt32(truncatingIfNeeded: value), dw1: UInt32(truncatingIfNeeded: value >> 32))
    }

    func propertySet(_ sqe: SubmissionQueueEntry) -> CommandCompletion {
        guard sqe.propertySize == 4, Register(rawValue: sqe.propertyOffset) == .configuration else { return .failure(.invalidField) }
        setConfiguration(UInt32(truncatingIfNeeded: sqe.propertyValue))
        return .success
    }

    /// CC write: EN 0→1 makes the controller ready (when the queue entry sizes are the
    /// NVM command set's 64/16 bytes), EN 1→0 resets it, SHN requests a shutdown that
    /// completes at once (nothing is cached above the backing store's own cache, which
    /// shutdown flushes through the engine).
    func setConfiguration(_ new: UInt32) {
        let old = configuration
        configuration = new
        let enable = new & 1 != 0
        let wasEnabled = old & 1 != 0
        let iosqes = (new >> 16) & 0xF
        let iocqes = (new >> 20) & 0xF
        if enable && !wasEnabled {
            if isDiscovery || (iosqes == 6 && iocqes == 4) {
                status |= 1
            } else {
                status |= 1 << 1  // CFS: fatal, the host reads it and resets
            }
        } else if !enable && wasEnabled {
            status &= ~UInt32(1)
            status &= ~UInt32(1 << 1)
        }
        let shn = (new >> 14) & 0x3
        if shn != 0 {
            status = (status & ~UInt32(0xC)) | (2 << 2)  // SHST: shutdown complete
        } else if (old >> 14) & 0x3 != 0 {
            status &= ~UInt32(0xC)
        }
    }
}
