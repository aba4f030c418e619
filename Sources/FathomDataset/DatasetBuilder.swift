import Foundation

/// Builds a read-only filesystem image from a directory with Debian's tools:
/// `mkfs.erofs` (erofs-utils; compressed, read-only by design, the kernel mounts it
/// directly) or `mkfs.ext4 -d` (e2fsprogs; for hosts without erofs). Then writes the
/// manifest. Writing a filesystem by hand would be a project of its own; these are the
/// tools distributions use for their own images.
public struct DatasetBuilder {
    public enum Format: String, CaseIterable, Sendable { case erofs, ext4 }

    public var source: String
    public var image: String
    public var format: Format
    /// Progress lines (scan counts, tool output, hashing), for a terminal.
    public var progress: (String) -> Void = { _ in }

    public init(source: String, image: String, format: Format) {
        self.source = source
        self.image = image
        self.format = format
    }

    /// Scans, builds, hashes, writes the manifest. Refuses unsafe trees before writing anything.
    public func build() throws -> DatasetManifest {
        let tree = try DatasetTree.scan(source) { t in
            progress("scanned \(t.files) files, \(t.directories) directories, \(Self.size(t.bytes))")
        }
        guard tree.problems.isEmpty else {
            let shown = tree.problems.prefix(20).map { "  " + $0 }.joined(separator: "\n")
            let more = tree.problems.count > 20 ? "\n  ... and \(tree.problems.count - 20) more" : ""
            throw DatasetError("\(source) cannot be packed safely (\(tree.problems.count) problem(s)):\n\(shown)\(more)")
        }
        progress("\(tree.files) files, \(tree.directories) directories, \(tree.symlinks) symlinks, \(Self.size(tree.bytes)) of data")
        let temp = image + ".partial"
        unlink(temp)
        switch format {
        case .erofs:
            // lz4hc: good ratio, fast decompression in the kernel; files owned by root.
            try run("mkfs.erofs", ["-zlz4hc", "--all-root", temp, tree.root], package: "erofs-utils")
        case .ext4:
            let bytes = Self.ext4Size(tree)
            guard let fd = Optional(open(temp, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0o644)), fd >= 0 else {
                throw DatasetError("cannot create \(temp): \(String(cString: strerror(errno)))")
            }
            ftruncate(fd, off_t(bytes))
            close(fd)
            // No journal (the image is mounted read-only), root-owned, 4 KiB blocks.
            try run("mkfs.ext4", ["-q", "-F", "-b", "4096", "-O", "^has_journal", "-N", String(tree.files + tree.directories + tree.symlinks + 64),
                                  "-E", "root_owner=0:0", "-L", "fathom-dataset", "-d", tree.root, temp], package: "e2fsprogs")
        }
        var st = stat()
        guard stat(temp, &st) == 0 else { throw DatasetError("\(format.rawValue) did not write \(temp)") }
        let total = UInt64(st.st_size)
        progress("image \(Self.size(total)); computing SHA-256")
        var lastShown = 0
        let digest = try SHA256Digest.file(temp) { done in
            let percent = total == 0 ? 100 : Int(done * 100 / total)
            if percent >= lastShown + 10 {
                lastShown = percent - percent % 10
                progress("sha256: \(lastShown)%")
            }
        }
        guard rename(temp, image) == 0 else { throw DatasetError("cannot rename \(temp) to \(image): \(String(cString: strerror(errno)))") }
        var manifest = DatasetManifest(
            format: format.rawValue, image: String(image.split(separator: "/").last ?? Substring(image)), imageBytes: total,
            sha256: SHA256Digest.hex(digest), source: tree.root, files: tree.files, directories: tree.directories,
            symlinks: tree.symlinks, bytes: tree.bytes, created: ISO8601DateFormatter().string(from: Date()),
            builder: "fathomctl dataset build (\(format == .erofs ? "mkfs.erofs" : "mkfs.ext4"))")
        if let ids = DatasetManifest.identifiers(sha256: manifest.sha256) {
            manifest.namespaceUUID = DatasetManifest.text(ids.uuid, dashes: true)
            manifest.namespaceNGUID = DatasetManifest.text(ids.nguid, dashes: false)
        }
        let path = DatasetManifest.path(forImage: image)
        guard FileManager.default.createFile(atPath: path, contents: Data(manifest.encoded())) else {
            throw DatasetError("cannot write \(path)")
        }
        return manifest
    }

    /// Data rounded up to blocks, a block per directory and symlink, inode tables, 10% and
    /// 8 MiB of slack: ext4 -d fails rather than grows when the image is too small.
    static func ext4Size(_ t: DatasetTree) -> UInt64 {
        let blocks = t.bytes / 4096 + UInt64(t.files) + UInt64(t.directories + t.symlinks)
        let inodes = UInt64(t.files + t.directories + t.symlinks + 64) * 256
        let raw = blocks * 4096 + inodes
        return (raw + raw / 10 + (8 << 20) + 4095) / 4096 * 4096
    }

    private func run(_ tool: String, _ args: [String], package: String) throws(DatasetError) {
        let candidates = ["/usr/sbin/\(tool)", "/sbin/\(tool)", "/usr/bin/\(tool)"]
        guard let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
            throw DatasetError("\(tool) is not installed: apt-get install \(package)")
        }
        progress("running \(tool) \(args.joined(separator: " "))")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: path)
        p.arguments = args
        let output = Pipe()
        p.standardOutput = output
        p.standardError = output
        do {
            try p.run()
        } catch {
            throw DatasetError("cannot run \(path): \(error)")
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        for line in text.split(separator: "\n").suffix(5) { progress("\(tool): \(line)") }
        guard p.terminationStatus == 0 else {
            throw DatasetError("\(tool) failed (exit \(p.terminationStatus)): \(text.split(separator: "\n").suffix(3).joined(separator: " / "))")
        }
    }

    static func size(_ n: UInt64) -> String {
        if n >= 1 << 30 { return String(format: "%.1f GiB", Double(n) / Double(1 << 30)) }
        if n >= 1 << 20 { return String(format: "%.1f MiB", Double(n) / Double(1 << 20)) }
        return "\(n) bytes"
    }
}
