#if canImport(Glibc)
import Glibc
#endif

/// A scan of the directory a dataset image is built from: what it holds, and whether it is
/// safe to pack. Unsafe are special files (devices, FIFOs, sockets: an image of them means
/// nothing on another machine and device nodes are a hazard) and symlinks that point out of
/// the tree (they would resolve to the container host's own files).
public struct DatasetTree: Sendable {
    public var root: String
    public var files = 0
    public var directories = 0
    public var symlinks = 0
    public var bytes: UInt64 = 0
    /// Every problem found, each naming the path and what to do.
    public var problems: [String] = []

    /// Scans `root` (not following symlinks). `progress` is called every 10,000 entries.
    public static func scan(_ root: String, progress: ((DatasetTree) -> Void)? = nil) throws(DatasetError) -> DatasetTree {
        var st = stat()
        guard stat(root, &st) == 0 else { throw DatasetError("\(root): \(String(cString: strerror(errno)))") }
        guard (st.st_mode & S_IFMT) == S_IFDIR else { throw DatasetError("\(root) is not a directory") }
        let base = normalize(absolute(root))
        var tree = DatasetTree(root: base)
        var pending = [base]
        var seen = 0
        while let dir = pending.popLast() {
            tree.directories += 1
            guard let handle = opendir(dir) else {
                tree.problems.append("\(dir): cannot be read (\(String(cString: strerror(errno))))")
                continue
            }
            while let entry = readdir(handle) {
                let name = withUnsafeBytes(of: entry.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
                if name == "." || name == ".." { continue }
                let path = dir + "/" + name
                var s = stat()
                guard lstat(path, &s) == 0 else {
                    tree.problems.append("\(path): \(String(cString: strerror(errno)))")
                    continue
                }
                switch s.st_mode & S_IFMT {
                case S_IFDIR: pending.append(path)
                case S_IFREG:
                    tree.files += 1
                    tree.bytes += UInt64(s.st_size)
                case S_IFLNK:
                    tree.symlinks += 1
                    if let problem = symlinkProblem(path, root: base) { tree.problems.append(problem) }
                default:
                    tree.problems.append("\(path): a special file (device, FIFO or socket); remove it or build from a copy without it")
                }
                seen += 1
                if seen % 10_000 == 0 { progress?(tree) }
            }
            closedir(handle)
        }
        return tree
    }

    /// nil when the link stays inside `root`.
    static func symlinkProblem(_ path: String, root: String) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink(path, &buffer, buffer.count - 1)
        guard n >= 0 else { return "\(path): unreadable symlink (\(String(cString: strerror(errno))))" }
        let target = String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let parent = String(path[..<path.lastIndex(of: "/")!])
        let resolved = normalize(target.hasPrefix("/") ? target : parent + "/" + target)
        guard resolved == root || resolved.hasPrefix(root + "/") else {
            return "\(path): symlink to \(target) points out of \(root); replace it with the file or a link inside the tree"
        }
        return nil
    }

    public static func absolute(_ path: String) -> String {
        if path.hasPrefix("/") { return path }
        var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        guard getcwd(&buffer, buffer.count) != nil else { return "/" + path }
        return String(cString: buffer) + "/" + path
    }

    /// Lexical normalization: removes ".", "..", empty components.
    static func normalize(_ path: String) -> String {
        var parts: [Substring] = []
        for p in path.split(separator: "/") {
            if p == "." || p.isEmpty { continue }
            if p == ".." { _ = parts.popLast(); continue }
            parts.append(p)
        }
        return "/" + parts.joined(separator: "/")
    }
}
