import NVMeWire

/// Identifiers derived from names, so a namespace configured without a UUID or NGUID keeps
/// the same ones across restarts (hosts key multipath and udev links on them).
enum StableID {
    static func derive(_ purpose: String, _ nqn: String, _ nsid: UInt32, uuidVersion: Bool) -> [UInt8] {
        let text = Array("\(purpose)|\(nqn)|\(nsid)".utf8)
        var out = [UInt8]()
        for seed: UInt64 in [0xcbf2_9ce4_8422_2325, 0x9e37_79b9_7f4a_7c15] {
            var h = seed
            for b in text {
                h ^= UInt64(b)
                h = h &* 0x0000_0100_0000_01B3
            }
            h ^= h >> 33
            h = h &* 0xff51_afd7_ed55_8ccd
            h ^= h >> 33
            for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: h >> (8 * i))) }
        }
        if uuidVersion {
            out[6] = (out[6] & 0x0F) | 0x80  // version 8: custom
            out[8] = (out[8] & 0x3F) | 0x80  // RFC 4122 variant
        }
        return out
    }
}

/// Address text checks, without resolving anything.
public enum IPAddressText {
    public static func isValid(_ text: String, ipv6: Bool) -> Bool {
        if ipv6 {
            let allowed = Set("0123456789abcdefABCDEF:.")
            return !text.isEmpty && text.contains(":") && text.allSatisfy { allowed.contains($0) }
        }
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { p in p.count <= 3 && UInt8(p) != nil }
    }
}
