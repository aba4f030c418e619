/// Limits the target advertises. One value for the whole target: the reactor sizes its
/// buffers from it and Identify/ICResp report it, so the two can never disagree.
public struct TargetSettings: Sendable {
    /// Largest transfer of one command, bytes (reported as MDTS; a power of two ≥ 4 KiB).
    public var maxDataTransfer: Int = 512 * 1024
    /// In-capsule data accepted on I/O queues (IOCCSZ); admin queues always take 8 KiB.
    public var ioInCapsuleDataSize: Int = 16 * 1024
    public static let adminInCapsuleDataSize = 8192
    /// Largest H2CData payload per PDU (ICResp MAXH2CDATA).
    public var maxH2CData: Int = 128 * 1024
    /// Entries per I/O queue (CAP.MQES + 1).
    public var maxQueueEntries: Int = 1024
    /// Most I/O queues one controller may have.
    public var maxIOQueues: Int = 128
    /// Keep Alive granularity reported in KAS, in 100 ms units.
    public var keepAliveGranularity: UInt16 = 10
    /// Keep-alive timeout applied to discovery controllers whose host asked for none.
    public var discoveryDefaultKeepAliveMs: UInt32 = 120_000
    /// CAP.TO in 500 ms units: how long the host waits for CSTS.RDY.
    public var readyTimeoutUnits: UInt8 = 30
    public var firmwareRevision: String = "0.1"
    /// Where state that must survive a restart lives (reservations with PTPL). nil: none,
    /// and namespaces report no PTPL capability.
    public var stateDirectory: String? = nil
    /// How long a command may wait for the H2CData its R2T asked for before the connection
    /// is ended (a host that never answers must not pin a slot and its buffer forever).
    public var r2tTimeoutMs: Int64 = 30_000
    /// Connections accepted at once, all ports together; more are closed at accept.
    public var maxConnections = 4096
    /// Queues (admin + I/O, all controllers) one host NQN may have connected at once, so a
    /// single host cannot use up `maxConnections`; more fail Connect with Controller Busy.
    public var maxQueuesPerHost = 1024
    /// Controllers one subsystem may have at once (a subsystem's `max_controllers` may lower it).
    public var maxControllersPerSubsystem = 1024
    /// How long one PDU may take to arrive once it has started (a header or payload trickled
    /// a byte at a time holds a buffer; after this the connection is closed).
    public var pduTimeoutMs: Int64 = 30_000

    /// When C2H data leaves with SENDMSG_ZC (the kernel sends from the command buffer
    /// instead of copying it into the socket), and from how many data bytes in one send.
    public var zeroCopySend: ZeroCopySendPolicy = .auto
    public var zeroCopySendMinBytes = 64 * 1024

    /// After handling events, a reactor keeps polling its ring this long for more before it
    /// sleeps in the kernel (0: sleep at once). Trades CPU under load for latency: a reactor
    /// that does not sleep between a response and the next command, or while a disk read is
    /// out, is not woken by an interrupt and an IPI. An idle reactor still sleeps (it polls once
    /// per wakeup, its 1 s tick included), unlike SPDK's polling reactors.
    public var busyPollMicroseconds = 0

    /// How connections read their socket (see `ReceiveMode`).
    public var receiveMode: ReceiveMode = .multishot

    /// How Reads and Writes of namespaces whose file is on tmpfs move their data (see `FileMappingMode`).
    public var tmpfsIO: FileMappingMode = .mapped

    /// Whether Reads of cached ranges of files on disk filesystems (buffered, not O_DIRECT) are
    /// sent from the file's mapping (see `FileBackend.mapping` and `PageCacheResidency`).
    public var pageCacheReads: FileMappingMode = .mapped

    public init() {}

    /// MDTS exponent over the 4 KiB minimum page size.
    public var mdtsExponent: UInt8 {
        var e: UInt8 = 0
        while (4096 << Int(e)) < maxDataTransfer { e += 1 }
        return e
    }
}

/// Zero-copy sends pay for large transfers through a network device; on loopback (and
/// veth, and devices without scatter-gather) the kernel copies anyway and the notification
/// is pure extra cost. `auto` tries SENDMSG_ZC and stops on a connection as soon as the kernel
/// reports it copied; `always` keeps using it (for tests); `never` sends with SENDMSG only.
public enum ZeroCopySendPolicy: String, Sendable, CaseIterable {
    case auto, always, never
}

/// `multishot`: while a connection carries commands without write data, one armed recv that
/// the kernel completes again and again, each time into a buffer of the connection's
/// provided-buffer ring (no recv to prepare and submit, no poll to re-arm, per read); when
/// write data flows the connection reads as with `single`. `single`: one recv submitted per
/// read, into the staging buffer or straight into a command's buffer. Kernels without buffer
/// rings or multishot recv get `single`.
public enum ReceiveMode: String, Sendable, CaseIterable {
    case multishot, single
}

/// How a namespace's file is read and written where mapping it pays.
///
/// For a file on tmpfs (`--tmpfs-io`): `mapped` copies Writes into its pages and, when the file
/// has no holes, sends Reads from them (one copy each, as for a memory namespace, and no system
/// call); `copy` makes every Read a `pread` into a command buffer first and every Write a
/// `pwrite` from one. For a file on a disk filesystem read through the page cache
/// (`--page-cache-reads`): `mapped` sends Reads of ranges found wholly cached from the file's
/// read-only mapping; `copy` reads everything through the ring into a command buffer. Block
/// devices, O_DIRECT, ramfs and network filesystems are not mapped (see `FileBackend.mapping`).
public enum FileMappingMode: String, Sendable, CaseIterable {
    case mapped, copy
}
