/// Little-endian loads and stores at byte offsets.
///
/// Every NVMe and NVMe/TCP structure is little-endian and packed, so decoders read fields
/// straight out of the receive buffer instead of copying into aligned structs first.
extension UnsafeRawPointer {
    @inline(__always) public func le8(_ offset: Int) -> UInt8 { load(fromByteOffset: offset, as: UInt8.self) }
    @inline(__always) public func le16(_ offset: Int) -> UInt16 {
        UInt16(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inline(__always) public func le32(_ offset: Int) -> UInt32 {
        UInt32(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inline(__always) public func le64(_ offset: Int) -> UInt64 {
        UInt64(littleEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
}

extension UnsafeMutableRawPointer {
    @inline(__always) public func put8(_ value: UInt8, _ offset: Int) { storeBytes(of: value, toByteOffset: offset, as: UInt8.self) }
    @inline(__always) public func put16(_ value: UInt16, _ offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inline(__always) public func put32(_ value: UInt32, _ offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
    }
    @inline(__always) public func put64(_ value: UInt64, _ offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
    }
    /// Writes `text` as ASCII padded with `pad` to exactly `width` bytes (Identify strings are
    /// space padded, NQNs and discovery addresses are NUL padded).
    public func putASCII(_ text: String, _ offset: Int, width: Int, pad: UInt8) {
        var i = 0
        for byte in text.utf8 where i < width {
            put8(byte, offset + i)
            i += 1
        }
        while i < width {
            put8(pad, offset + i)
            i += 1
        }
    }
}

extension UnsafeRawPointer {
    /// Reads a NUL-terminated (or full-width) ASCII field, trimming trailing NULs and spaces.
    public func ascii(_ offset: Int, width: Int) -> String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(width)
        for i in 0..<width {
            let b = le8(offset + i)
            if b == 0 { break }
            bytes.append(b)
        }
        while let last = bytes.last, last == 0x20 { bytes.removeLast() }
        return String(decoding: bytes, as: UTF8.self)
    }
}
