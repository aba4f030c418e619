/// Human output: left-aligned columns, like `nvme list`.
enum Table {
    static func print(_ header: [String], _ rows: [[String]]) {
        var widths = header.map(\.count)
        for row in rows { for (i, cell) in row.enumerated() where i < widths.count { widths[i] = max(widths[i], cell.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i == cells.count - 1 ? c : c + String(repeating: " ", count: widths[i] - c.count) }
                .joined(separator: "  ")
        }
        Swift.print(line(header))
        for row in rows { Swift.print(line(row)) }
    }

    /// 1536 → "1.5K", binary units.
    static func bytes(_ n: UInt64) -> String {
        let units = ["", "K", "M", "G", "T", "P"]
        var v = Double(n)
        var i = 0
        while v >= 1024 && i < units.count - 1 { v /= 1024; i += 1 }
        if i == 0 { return "\(n)" }
        let rounded = (v * 10).rounded() / 10
        return rounded == rounded.rounded() ? "\(Int(rounded))\(units[i])" : "\(rounded)\(units[i])"
    }
}
