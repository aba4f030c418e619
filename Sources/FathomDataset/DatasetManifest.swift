import FoundationEssentials

/// What `fathomctl dataset build` writes beside an image (IMAGE.manifest.json) and
/// `dataset publish` checks the image against before exporting it.
public struct DatasetManifest: Codable, Sendable, Equatable {
    public var format: String
    /// The image file's name (the manifest sits in the same directory).
    public var image: String
    public var imageBytes: UInt64
    /// SHA-256 of the whole image, hex.
    public var sha256: String
    /// The directory it was built from (absolute).
    public var source: String
    public var files: Int
    public var directories: Int
    public var symlinks: Int
    /// Bytes of regular file data in the source tree.
    public var bytes: UInt64
    /// ISO 8601, UTC.
    public var created: String
    public var builder: String
    /// The identifiers `dataset publish` gives the namespace (from `sha256`): hosts find the
    /// device as /dev/disk/by-id/nvme-uuid.<uuid>.
    public var namespaceUUID: String?
    public var namespaceNGUID: String?

    public static func path(forImage image: String) -> String { image + ".manifest.json" }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return ((try? [UInt8](encoder.encode(self))) ?? []) + [0x0A]
    }

    public static func load(forImage image: String) throws -> DatasetManifest {
        let path = Self.path(forImage: image)
        guard let data = FileManager.default.contents(atPath: path) else {
            throw DatasetError("\(path) is missing: build the image with `fathomctl dataset build` (it writes the manifest)")
        }
        do {
            return try JSONDecoder().decode(DatasetManifest.self, from: data)
        } catch {
            throw DatasetError("\(path) is not a dataset manifest: \(error)")
        }
    }

    /// Namespace identifiers derived from the image digest, so the same image has the same
    /// NGUID and UUID on every storage node (hosts' udev names and multipath follow them).
    /// NGUID: digest bytes 0-15. UUID: bytes 16-31 as an RFC 9562 version 8 UUID.
    public static func identifiers(sha256 hex: String) -> (nguid: [UInt8], uuid: [UInt8])? {
        guard hex.count == 64 else { return nil }
        var bytes: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            guard let b = UInt8(hex[i..<j], radix: 16) else { return nil }
            bytes.append(b)
            i = j
        }
        var uuid = Array(bytes[16..<32])
        uuid[6] = (uuid[6] & 0x0F) | 0x80
        uuid[8] = (uuid[8] & 0x3F) | 0x80
        return (Array(bytes[0..<16]), uuid)
    }

    /// Lower-case hex, with the 8-4-4-4-12 dashes of a UUID when `dashes`.
    public static func text(_ id: [UInt8], dashes: Bool) -> String {
        var out = ""
        for (i, b) in id.enumerated() {
            if dashes && [4, 6, 8, 10].contains(i) { out += "-" }
            out += String(b, radix: 16).count == 1 ? "0" + String(b, radix: 16) : String(b, radix: 16)
        }
        return out
    }
}
