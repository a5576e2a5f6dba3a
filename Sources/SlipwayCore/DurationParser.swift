/// Parses and formats human durations as used in pipeline files (`timeout: 10m`).
public enum DurationParser {
    /// "500ms", "30s", "10m", "1h", also compound "1h30m", "1m30s"; whitespace around allowed; no unit,
    /// negative, zero-length, overflow → nil.
    ///
    /// Units are `h`, `m`, `s` and `ms`; each value is a non-negative integer, optionally with a decimal
    /// fraction ("1.5s"). In a compound duration units must appear from largest to smallest, each at most
    /// once ("1m30s", not "30s1m" or "1m1m"). The result is exact to the nanosecond and must fit in
    /// `Int64` nanoseconds (about 292 years).
    public static func parse(_ text: String) -> Duration? {
        let bytes = Array(text.utf8)
        var start = 0
        var end = bytes.count
        while start < end, isSpace(bytes[start]) { start += 1 }
        while end > start, isSpace(bytes[end - 1]) { end -= 1 }
        guard start < end else { return nil }

        var total: Int64 = 0
        var i = start
        var lastRank = Int.max
        while i < end {
            // Integer part.
            var whole: Int64 = 0
            let digitsStart = i
            while i < end, isDigit(bytes[i]) {
                let (m, o1) = whole.multipliedReportingOverflow(by: 10)
                let (a, o2) = m.addingReportingOverflow(Int64(bytes[i] - 48))
                if o1 || o2 { return nil }
                whole = a
                i += 1
            }
            var hasDigits = i > digitsStart
            // Fraction, kept to 9 digits (nanosecond resolution of the smallest unit is enough).
            var fraction: Int64 = 0
            var fractionScale: Int64 = 1
            if i < end, bytes[i] == UInt8(ascii: ".") {
                i += 1
                let fracStart = i
                while i < end, isDigit(bytes[i]) {
                    if fractionScale < 1_000_000_000 {
                        fraction = fraction * 10 + Int64(bytes[i] - 48)
                        fractionScale *= 10
                    }
                    i += 1
                }
                guard i > fracStart else { return nil }
                hasDigits = true
            }
            guard hasDigits else { return nil }
            // Unit.
            let unitNanos: Int64
            let rank: Int
            if i + 1 < end, bytes[i] == UInt8(ascii: "m"), bytes[i + 1] == UInt8(ascii: "s") {
                unitNanos = 1_000_000; rank = 0; i += 2
            } else if i < end, bytes[i] == UInt8(ascii: "s") {
                unitNanos = 1_000_000_000; rank = 1; i += 1
            } else if i < end, bytes[i] == UInt8(ascii: "m") {
                unitNanos = 60_000_000_000; rank = 2; i += 1
            } else if i < end, bytes[i] == UInt8(ascii: "h") {
                unitNanos = 3_600_000_000_000; rank = 3; i += 1
            } else {
                return nil
            }
            guard rank < lastRank else { return nil }
            lastRank = rank
            let (w, o1) = whole.multipliedReportingOverflow(by: unitNanos)
            if o1 { return nil }
            // fraction / fractionScale * unitNanos, exact enough: unitNanos ≤ 3.6e12 and fraction < 1e9 could
            // overflow when multiplied directly, so divide first where possible.
            let fracNanos: Int64
            if fraction == 0 {
                fracNanos = 0
            } else if unitNanos % fractionScale == 0 {
                fracNanos = fraction * (unitNanos / fractionScale)
            } else {
                fracNanos = Int64((Double(fraction) / Double(fractionScale) * Double(unitNanos)).rounded())
            }
            let (t1, o2) = total.addingReportingOverflow(w)
            let (t2, o3) = t1.addingReportingOverflow(fracNanos)
            if o2 || o3 { return nil }
            total = t2
        }
        return .nanoseconds(total)
    }

    /// Compact human form: "450ms", "1.2s", "3m05s", "1h02m". Values are rounded to the displayed
    /// precision: milliseconds below one second, tenths of a second below a minute (".0" omitted),
    /// seconds below an hour, minutes above.
    public static func format(_ d: Duration) -> String {
        if d < .zero { return "-" + format(.zero - d) }
        let (seconds, attoseconds) = d.components
        // Total milliseconds, rounded; saturate for absurdly long durations.
        let msFromSeconds = seconds.multipliedReportingOverflow(by: 1000)
        if msFromSeconds.overflow { return "\(seconds / 3600)h" }
        let ms = msFromSeconds.partialValue + (attoseconds + 500_000_000_000_000) / 1_000_000_000_000_000
        if ms < 1000 {
            return "\(ms)ms"
        }
        let tenths = (ms + 50) / 100
        if tenths < 600 {
            let whole = tenths / 10, frac = tenths % 10
            return frac == 0 ? "\(whole)s" : "\(whole).\(frac)s"
        }
        let totalSeconds = (ms + 500) / 1000
        if totalSeconds < 3600 {
            return "\(totalSeconds / 60)m\(twoDigits(totalSeconds % 60))s"
        }
        let totalMinutes = (totalSeconds + 30) / 60
        return "\(totalMinutes / 60)h\(twoDigits(totalMinutes % 60))m"
    }

    private static func twoDigits(_ v: Int64) -> String { v < 10 ? "0\(v)" : "\(v)" }
    private static func isDigit(_ b: UInt8) -> Bool { b >= 48 && b <= 57 }
    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 || b == 0x0A || b == 0x0D }
}
