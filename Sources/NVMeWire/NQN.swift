/// NVMe Qualified Names (NVMe Base 2.x, "NVMe Qualified Names").
public enum NQN {
    public static let maxLength = 223
    public static let discovery = "nqn.2014-08.org.nvmexpress.discovery"
    /// Field width of NQNs in Connect data, Identify Controller and discovery entries.
    public static let fieldWidth = 256

    /// Why `name` is not a valid NQN, or nil when it is. Accepts the `nqn.yyyy-mm.reverse.domain[:string]`
    /// form and the UUID form `nqn.2014-08.org.nvmexpress:uuid:<uuid>`.
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        if bytes.isEmpty { return "is empty" }
        if bytes.count > maxLength { return "is \(bytes.count) bytes long; the limit is \(maxLength)" }
        if bytes.contains(0) { return "contains a NUL byte" }
        if name == discovery { return nil }
        let uuidPrefix = "nqn.2014-08.org.nvmexpress:uuid:"
        if name.hasPrefix(uuidPrefix) {
            let uuid = name.dropFirst(uuidPrefix.count)
            return UUIDText.parse(String(uuid)) == nil ? "has a malformed UUID after \(uuidPrefix)" : nil
        }
        // nqn.yyyy-mm.<reverse domain>
        guard bytes.count > 12, name.hasPrefix("nqn.") else { return "must start with 'nqn.yyyy-mm.' followed by a reverse domain name" }
        let date = Array(bytes[4..<11])
        let digits = date.enumerated().allSatisfy { i, b in i == 4 ? b == UInt8(ascii: "-") : (b >= 48 && b <= 57) }
        guard digits, bytes[11] == UInt8(ascii: ".") else { return "must start with 'nqn.yyyy-mm.' (a year and month)" }
        let month = Int(date[5] - 48) * 10 + Int(date[6] - 48)
        guard (1...12).contains(month) else { return "has month \(month) in its date" }
        let domainEnd = bytes[12...].firstIndex(of: UInt8(ascii: ":")) ?? bytes.count
        if domainEnd == 12 { return "has no reverse domain name after the date" }
        return nil
    }

    public static func isValid(_ name: String) -> Bool { problem(name) == nil }
}

/// Text forms of 16-byte identifiers (UUID with dashes, NGUID as 32 hex digits).
public enum UUIDText {
    /// Parses 32 hex digits, with or without the four dashes of the UUID form.
    public static func parse(_ text: String) -> [UInt8]? {
        let hex = text.utf8.filter { $0 != UInt8(ascii: "-") }
        guard hex.count == 32 else { return nil }
        var out = [UInt8](repeating: 0, count: 16)
        for i in 0..<16 {
            guard let hi = nibble(hex[2 * i]), let lo = nibble(hex[2 * i + 1]) else { return nil }
            out[i] = hi << 4 | lo
        }
        return out
    }

    public static func format(_ bytes: [UInt8], dashes: Bool = true) -> String {
        var s = ""
        for (i, b) in bytes.enumerated() {
            if dashes && (i == 4 || i == 6 || i == 8 || i == 10) { s += "-" }
            s += String(b >> 4, radix: 16) + String(b & 0xF, radix: 16)
        }
        return s
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 48...57: return c - 48
        case 97...102: return c - 87
        case 65...70: return c - 55
        default: return nil
        }
    }
}
