import CNVMeTypes

/// The 15-bit NVMe status field (CQE DW3 bits 31:17): `DNR << 14 | SCT << 8 | SC`, the same
/// layout libnvme's `NVME_SC_*` / `NVME_SCT_*` constants use. The CQE stores it shifted left
/// by one above the phase bit.
public struct NVMeStatus: Equatable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16

    @inline(__always) public init(rawValue: UInt16) { self.rawValue = rawValue }

    public init(type: UInt8, code: UInt8, doNotRetry: Bool = true) {
        rawValue = UInt16(type & 0x7) << 8 | UInt16(code) | (doNotRetry ? 0x4000 : 0)
    }

    public var codeType: UInt8 { UInt8((rawValue >> 8) & 0x7) }
    public var code: UInt8 { UInt8(rawValue & 0xFF) }
    public var doNotRetry: Bool { rawValue & 0x4000 != 0 }
    public var isSuccess: Bool { rawValue & 0x7FF == 0 }

    public var description: String {
        isSuccess ? "success" : "sct=\(codeType) sc=0x\(String(code, radix: 16))\(doNotRetry ? " dnr" : "")"
    }

    static func generic(_ sc: nvme_status_field) -> NVMeStatus {
        NVMeStatus(type: UInt8(NVME_SCT_GENERIC.rawValue), code: UInt8(sc.rawValue & 0xFF))
    }
    static func specific(_ sc: nvme_status_field) -> NVMeStatus {
        NVMeStatus(type: UInt8(NVME_SCT_CMD_SPECIFIC.rawValue), code: UInt8(sc.rawValue & 0xFF))
    }

    public static let success = NVMeStatus(rawValue: 0)
    public static let invalidOpcode = generic(NVME_SC_INVALID_OPCODE)
    public static let invalidField = generic(NVME_SC_INVALID_FIELD)
    public static let commandIDConflict = generic(NVME_SC_CMDID_CONFLICT)
    public static let dataTransferError = generic(NVME_SC_DATA_XFER_ERROR)
    public static let internalError = generic(NVME_SC_INTERNAL)
    public static let abortRequested = generic(NVME_SC_ABORT_REQ)
    public static let fusedCommandFailed = generic(NVME_SC_FUSED_FAIL)
    public static let fusedCommandMissing = generic(NVME_SC_FUSED_MISSING)
    public static let abortedSQDeletion = NVMeStatus(type: 0, code: UInt8(NVME_SC_ABORT_QUEUE.rawValue), doNotRetry: false)
    public static let invalidNamespace = generic(NVME_SC_INVALID_NS)
    public static let commandSequenceError = generic(NVME_SC_CMD_SEQ_ERROR)
    public static let invalidSGLSegmentDescriptor = generic(NVME_SC_SGL_INVALID_LAST)
    public static let dataSGLLengthInvalid = generic(NVME_SC_SGL_INVALID_DATA)
    public static let sglDescriptorTypeInvalid = generic(NVME_SC_SGL_INVALID_TYPE)
    public static let sglOffsetInvalid = generic(NVME_SC_SGL_INVALID_OFFSET)
    public static let lbaOutOfRange = generic(NVME_SC_LBA_RANGE)
    public static let capacityExceeded = generic(NVME_SC_CAP_EXCEEDED)
    public static let namespaceNotReady = NVMeStatus(type: 0, code: UInt8(NVME_SC_NS_NOT_READY.rawValue), doNotRetry: false)
    public static let namespaceWriteProtected = generic(NVME_SC_NS_WRITE_PROTECTED)
    public static let keepAliveExpired = generic(NVME_SC_KAT_EXPIRED)
    public static let reservationConflict = generic(NVME_SC_RESERVATION_CONFLICT)
    public static let hostIdentifierInconsistentFormat = generic(NVME_SC_HOSTID_FORMAT)
    public static let invalidLogPage = specific(NVME_SC_INVALID_LOG_PAGE)
    public static let featureNotSaveable = specific(NVME_SC_FEATURE_NOT_SAVEABLE)
    public static let featureNotChangeable = specific(NVME_SC_FEATURE_NOT_CHANGEABLE)
    public static let asyncEventLimitExceeded = specific(NVME_SC_ASYNC_LIMIT)
    public static let invalidQueueSize = specific(NVME_SC_QUEUE_SIZE)
    public static let invalidQueueIdentifier = specific(NVME_SC_QID_INVALID)
    public static let writeFault = NVMeStatus(type: UInt8(NVME_SCT_MEDIA.rawValue), code: UInt8(NVME_SC_WRITE_FAULT.rawValue))
    public static let compareFailure = NVMeStatus(type: UInt8(NVME_SCT_MEDIA.rawValue), code: UInt8(NVME_SC_COMPARE_FAILED.rawValue))
    /// NVM command set specific 83h (Copy beyond MSSRL, MCL or MSRC); libnvme 1.3 predates it.
    public static let commandSizeLimitExceeded = NVMeStatus(type: 1, code: 0x83)
    public static let unrecoveredReadError = NVMeStatus(type: UInt8(NVME_SCT_MEDIA.rawValue), code: UInt8(NVME_SC_READ_ERROR.rawValue))
    // Fabrics command specific statuses (NVMe-oF 1.1, Connect).
    /// Path-related (SCT 3), retryable: the host tries another path.
    public static let asymmetricAccessPersistentLoss = NVMeStatus(type: 3, code: UInt8(NVME_SC_ANA_PERSISTENT_LOSS.rawValue), doNotRetry: false)
    public static let asymmetricAccessInaccessible = NVMeStatus(type: 3, code: UInt8(NVME_SC_ANA_INACCESSIBLE.rawValue), doNotRetry: false)
    public static let asymmetricAccessTransition = NVMeStatus(type: 3, code: UInt8(NVME_SC_ANA_TRANSITION.rawValue), doNotRetry: false)
    public static let connectIncompatibleFormat = specific(NVME_SC_CONNECT_FORMAT)
    public static let connectControllerBusy = specific(NVME_SC_CONNECT_CTRL_BUSY)
    public static let connectInvalidParameters = specific(NVME_SC_CONNECT_INVALID_PARAM)
    public static let connectRestartDiscovery = specific(NVME_SC_CONNECT_RESTART_DISC)
    public static let connectInvalidHost = specific(NVME_SC_CONNECT_INVALID_HOST)
}
