import CNVMeTypes

/// What the target reports in Identify Controller (CNS 01h). The values come from the
/// subsystem and the controller; the layout comes from libnvme's `struct nvme_id_ctrl`.
public struct ControllerIdentity: Sendable {
    public enum Kind: UInt8, Sendable { case io = 1, discovery = 2 }

    public var kind: Kind
    public var controllerID: UInt16
    public var serial: String
    public var model: String
    public var firmware: String
    public var version: UInt32
    public var subsystemNQN: String
    /// MDTS as a power of two of 4 KiB pages (CAP.MPSMIN); 0 = no limit.
    public var maxDataTransferExponent: UInt8
    public var namespaceCount: UInt32
    public var maxCommands: UInt16
    /// In-capsule data the I/O queues accept, in bytes.
    public var inCapsuleDataSize: Int
    /// Keep Alive granularity in 100 ms units.
    public var keepAliveSupport: UInt16
    public var volatileWriteCache: Bool
    /// More than one controller (hosts, or one host over several paths) may share namespaces.
    public var multiController: Bool
    /// Asymmetric Namespace Access reporting (I/O controllers).
    public var asymmetricAccess = false
    public var asyncEventLimit: UInt8
    /// Optional NVM commands (ONCS) actually implemented.
    public var optionalNVMCommands: UInt16

    public init(kind: Kind, controllerID: UInt16, serial: String, model: String, firmware: String, version: UInt32,
                subsystemNQN: String, maxDataTransferExponent: UInt8, namespaceCount: UInt32, maxCommands: UInt16,
                inCapsuleDataSize: Int, keepAliveSupport: UInt16, volatileWriteCache: Bool, multiController: Bool,
                asyncEventLimit: UInt8, optionalNVMCommands: UInt16) {
        self.kind = kind
        self.controllerID = controllerID
        self.serial = serial
        self.model = model
        self.firmware = firmware
        self.version = version
        self.subsystemNQN = subsystemNQN
        self.maxDataTransferExponent = maxDataTransferExponent
        self.namespaceCount = namespaceCount
        self.maxCommands = maxCommands
        self.inCapsuleDataSize = inCapsuleDataSize
        self.keepAliveSupport = keepAliveSupport
        self.volatileWriteCache = volatileWriteCache
        self.multiController = multiController
        self.asyncEventLimit = asyncEventLimit
        self.optionalNVMCommands = optionalNVMCommands
    }

    /// The 4096-byte Identify Controller data structure.
    public func encode() -> [UInt8] {
        var id = nvme_id_ctrl()
        withUnsafeMutableBytes(of: &id.sn) { $0.baseAddress!.putASCII(serial, 0, width: 20, pad: 0x20) }
        withUnsafeMutableBytes(of: &id.mn) { $0.baseAddress!.putASCII(model, 0, width: 40, pad: 0x20) }
        withUnsafeMutableBytes(of: &id.fr) { $0.baseAddress!.putASCII(firmware, 0, width: 8, pad: 0x20) }
        id.rab = 6
        id.cmic = multiController ? UInt8(NVME_CTRL_CMIC_MULTI_CTRL.rawValue) : 0
        if asymmetricAccess {
            // Several ports, several controllers, ANA reporting (as nvmet). MNAN is required
            // with ANA and sizes the host's ANA log buffer (header + groups + every NSID).
            id.cmic |= UInt8(NVME_CTRL_CMIC_MULTI_PORT.rawValue) | UInt8(NVME_CTRL_CMIC_MULTI_ANA_REPORTING.rawValue)
            id.anatt = ANALog.transitionTimeSeconds
            id.anacap = 0x1F  // reports optimized, non-optimized, inaccessible, persistent loss, change
            id.anagrpmax = ANALog.maxGroups.littleEndian
            id.nanagrpid = ANALog.maxGroups.littleEndian
            id.mnan = namespaceCount.littleEndian
        }
        id.mdts = maxDataTransferExponent
        id.cntlid = controllerID.littleEndian
        id.ver = version.littleEndian
        // OAES bit 8: Namespace Attribute Notices; bit 11: ANA Change Notices; bit 31:
        // Discovery Log Page Change.
        id.oaes = (kind == .io ? UInt32(1 << 8) | (asymmetricAccess ? 1 << 11 : 0) : UInt32(1) << 31).littleEndian
        // CTRATT bit 0: 128-bit host identifier (the fabrics Connect hostid is 128 bits).
        id.ctratt = UInt32(1).littleEndian
        id.cntrltype = kind.rawValue
        id.acl = 3
        id.aerl = asyncEventLimit
        // FRMW: slot 1 read-only, one slot.
        id.frmw = 0x3
        // LPA bit 1: commands supported and effects log; bit 2: extended data (NUMDU, LPO).
        id.lpa = 0x6
        id.elpe = 15
        id.kas = keepAliveSupport.littleEndian
        id.sqes = 0x66
        id.cqes = 0x44
        id.maxcmd = maxCommands.littleEndian
        id.nn = namespaceCount.littleEndian
        id.oncs = optionalNVMCommands.littleEndian
        id.vwc = volatileWriteCache ? 0x1 : 0
        // FUSES bit 0: Compare and Write as a fused operation.
        id.fuses = UInt16(kind == .io ? 1 : 0).littleEndian
        // NWPC bit 0: namespaces can be switched between No Write Protect and Write Protect.
        id.nwpc = kind == .io ? 0x1 : 0
        // SGLS bit 0: SGLs supported (no alignment); bit 2: keyed SGL data block — not for TCP;
        // bit 20: the address field of an SGL data block may be an offset (in-capsule data).
        id.sgls = (UInt32(1) | UInt32(1) << 20).littleEndian
        withUnsafeMutableBytes(of: &id.subnqn) { $0.baseAddress!.putASCII(subsystemNQN, 0, width: NQN.fieldWidth, pad: 0) }
        // Fabrics: capsule sizes in 16-byte units (SQE included), no in-capsule offset,
        // dynamic controller model, one SGL descriptor per command.
        id.ioccsz = UInt32((64 + inCapsuleDataSize) / 16).littleEndian
        id.iorcsz = UInt32(1).littleEndian
        id.icdoff = 0
        id.fcatt = 0
        id.msdbd = 1
        // OFCS bit 0: Disconnect is supported.
        id.ofcs = UInt16(1).littleEndian
        // Power state 0: 25 W nominal, so tools that print it show something sane.
        id.psd.0.mp = UInt16(2500).littleEndian
        return withUnsafeBytes(of: &id) { Array($0) }
    }
}
