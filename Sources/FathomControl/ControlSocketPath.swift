#if canImport(Glibc)
import Glibc
#endif

/// Where the control socket lives unless told otherwise: `/run/fathom/fathomd.sock` for
/// root (systemd's RuntimeDirectory), else `$XDG_RUNTIME_DIR/fathomd.sock` or
/// `/tmp/fathomd-UID.sock`. `FATHOM_SOCKET` overrides it for both the daemon and fathomctl.
public enum ControlSocketPath {
    public static var `default`: String {
        if let env = getenv("FATHOM_SOCKET"), env.pointee != 0 { return String(cString: env) }
        if getuid() == 0 { return "/run/fathom/fathomd.sock" }
        if let dir = getenv("XDG_RUNTIME_DIR"), dir.pointee != 0 { return String(cString: dir) + "/fathomd.sock" }
        return "/tmp/fathomd-\(getuid()).sock"
    }
}
