import CNVMeTypes

/// Builders for the log pages a target returns. Each returns the full page; Get Log Page
/// slices it by offset and length.
public enum LogPage {
    public static let supportedLogs = UInt8(NVME_LOG_LID_SUPPORTED_LOG_PAGES.rawValue)
    public static let error = UInt8(NVME_LOG_LID_ERROR.rawValue)
    public static let smart = UInt8(NVME_LOG_LID_SMART.rawValue)
    public static let firmwareSlot = UInt8(NVME_LOG_LID_FW_SLOT.rawValue)
    public static let changedNamespaces = UInt8(NVME_LOG_LID_CHANGED_NS.rawValue)
    public static let commandEffects = UInt8(NVME_LOG_LID_CMD_EFFECTS.rawValue)
    public static let discovery = UInt8(NVME_LOG_LID_DISCOVER.rawValue)
    public static let featureEffects = UInt8(NVME_LOG_LID_FID_SUPPORTED_EFFECTS.rawValue)
    public static let reservationNotification = UInt8(NVME_LOG_LID_RESERVATION.rawValue)
    public static let asymmetricAccess = UInt8(NVME_LOG_LID_ANA.rawValue)

    /// Supported Log Pages (LID 00h): one dword per LID, bit 0 = supported.
    public static func supportedLogPages(_ lids: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 1024)
        for lid in lids { out[Int(lid) * 4] = 1 }
        return out
    }

    /// Commands Supported and Effects (LID 05h). `writes` are the I/O opcodes that change
    /// logical block content (LBCC).
    public static func commandEffects(admin: [UInt8], io: [UInt8], writes: Set<UInt8>) -> [UInt8] {
        var log = nvme_cmd_effects_log()
        withUnsafeMutableBytes(of: &log.acs) { p in for op in admin { p.baseAddress!.put32(1, Int(op) * 4) } }
        withUnsafeMutableBytes(of: &log.iocs) { p in
            for op in io { p.baseAddress!.put32(writes.contains(op) ? 0x3 : 0x1, Int(op) * 4) }
        }
        return withUnsafeBytes(of: &log) { Array($0) }
    }

    /// Firmware Slot Information (LID 03h): slot 1 active, holding `revision`.
    public static func firmwareSlot(revision: String) -> [UInt8] {
        var log = nvme_firmware_slot()
        log.afi = 1
        withUnsafeMutableBytes(of: &log.frs) { $0.baseAddress!.putASCII(revision, 0, width: 8, pad: 0x20) }
        return withUnsafeBytes(of: &log) { Array($0) }
    }

    /// SMART / Health Information (LID 02h) from counters the target keeps.
    public static func smart(_ c: HealthCounters) -> [UInt8] {
        var log = nvme_smart_log()
        // 300 K: a plausible composite temperature, below any threshold.
        withUnsafeMutableBytes(of: &log.temperature) { $0.baseAddress!.put16(300, 0) }
        log.avail_spare = 100
        log.spare_thresh = 10
        func put128(_ value: UInt64, _ field: inout (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) {
            withUnsafeMutableBytes(of: &field) { $0.baseAddress!.put64(value, 0) }
        }
        // Data units are thousands of 512-byte units, rounded up.
        put128((c.bytesRead / 512 + 999) / 1000, &log.data_units_read)
        put128((c.bytesWritten / 512 + 999) / 1000, &log.data_units_written)
        put128(c.readCommands, &log.host_reads)
        put128(c.writeCommands, &log.host_writes)
        put128(c.powerOnHours, &log.power_on_hours)
        put128(1, &log.power_cycles)
        put128(c.mediaErrors, &log.media_errors)
        put128(c.errorLogEntries, &log.num_err_log_entries)
        return withUnsafeBytes(of: &log) { Array($0) }
    }

    /// Error Information (LID 01h): newest first, 64 bytes each.
    public static func errorLog(_ entries: [ErrorLogEntry], capacity: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: capacity * 64)
        out.withUnsafeMutableBytes { buf in
            for (i, e) in entries.prefix(capacity).enumerated() {
                let p = buf.baseAddress! + i * 64
                p.put64(e.errorCount, 0)
                p.put16(e.queueID, 8)
                p.put16(e.commandID, 10)
                p.put16(e.status.rawValue << 1, 12)
                p.put16(0xFFFF, 14)
                p.put64(e.lba, 16)
                p.put32(e.nsid, 24)
                p.put8(UInt8(NVMF_TRTYPE_TCP.rawValue), 29)
            }
        }
        return out
    }

    /// Changed Namespace List (LID 04h): up to 1024 NSIDs; 0xFFFFFFFF in the first entry
    /// when more changed than fit.
    public static func changedNamespaces(_ nsids: [UInt32]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: 4096)
        out.withUnsafeMutableBytes { buf in
            if nsids.count > 1024 {
                buf.baseAddress!.put32(0xFFFF_FFFF, 0)
            } else {
                for (i, nsid) in nsids.sorted().enumerated() { buf.baseAddress!.put32(nsid, i * 4) }
            }
        }
        return out
    }
}

/// Counters behind the SMART log.
public struct HealthCounters: Sendable {
    public var bytesRead: UInt64 = 0
    public var bytesWritten: UInt64 = 0
    public var readCommands: UInt64 = 0
    public var writeCommands: UInt64 = 0
    public var mediaErrors: UInt64 = 0
    public var errorLogEntries: UInt64 = 0
    public var powerOnHours: UInt64 = 0
    public init() {}
}

/// One entry of the error information log.
public struct ErrorLogEntry: Sendable {
    public var errorCount: UInt64
    public var queueID: UInt16
    public var commandID: UInt16
    public var status: NVMeStatus
    public var lba: UInt64
    public var nsid: UInt32
    public init(errorCount: UInt64, queueID: UInt16, commandID: UInt16, status: NVMeStatus, lba: UInt64, nsid: UInt32) {
        self.errorCount = errorCount
        self.queueID = queueID
        self.commandID = commandID
        self.status = status
        self.lba = lba
        self.nsid = nsid
    }
}
