#if canImport(Glibc)
import Glibc
#endif

/// An image is what its manifest says: same size, same SHA-256. Publishing checks this, so
/// an image changed or truncated after the build is never exported under the old identity.
public enum DatasetCheck {
    public static func verify(image: String, manifest: DatasetManifest) throws(DatasetError) {
        var st = stat()
        guard stat(image, &st) == 0 else { throw DatasetError("\(image): \(String(cString: strerror(errno)))") }
        guard UInt64(st.st_size) == manifest.imageBytes else {
            throw DatasetError("\(image) is \(st.st_size) bytes but its manifest says \(manifest.imageBytes): rebuild it")
        }
        let digest = SHA256Digest.hex(try SHA256Digest.file(image))
        guard digest == manifest.sha256 else {
            throw DatasetError("\(image) has SHA-256 \(digest) but its manifest says \(manifest.sha256): the image changed since it was built; rebuild it")
        }
    }
}
