/// Cron expressions for `on.schedule` and for deploy freeze windows, evaluated in UTC at minute resolution.
///
/// Five fields separated by whitespace: minute (0-59), hour (0-23), day-of-month (1-31), month (1-12 or
/// JAN-DEC) and day-of-week (0-7, 0 and 7 are Sunday, or SUN-SAT); names are case-insensitive. Each field
/// is a comma-separated list of items; an item is `*`, a value `a`, a range `a-b`, optionally followed by a
/// step `/n` (`*/15`, `1-30/5`; `a/n` means `a` to the field's maximum in steps of `n`).
///
/// Days follow Vixie cron: when the day-of-month and day-of-week fields are both restricted (neither starts
/// with `*`), a day matches if EITHER matches (`0 0 1 * MON` = the 1st of the month and every Monday);
/// otherwise both must match. As in Vixie cron, a field written `*/n` counts as unrestricted here.
///
/// Macros: `@yearly`/`@annually` (`0 0 1 1 *`), `@monthly` (`0 0 1 * *`), `@weekly` (`0 0 * * 0`),
/// `@daily`/`@midnight` (`0 0 * * *`) and `@hourly` (`0 * * * *`).
public struct CronSchedule: Sendable, Equatable {
    // Bit `v` is set when value `v` is allowed; the day-of-week mask only uses bits 0-6 (7 folds into 0).
    private var minutes: UInt64 = 0
    private var hours: UInt64 = 0
    private var daysOfMonth: UInt64 = 0
    private var months: UInt64 = 0
    private var daysOfWeek: UInt64 = 0
    private var dayOfMonthIsStar = false
    private var dayOfWeekIsStar = false

    /// How far `next(after:)` and `previous(atOrBefore:)` look: five years (at most 1827 days) and a bit.
    /// A schedule that never matches (`0 0 30 2 *`) gives nil after looking this far.
    public static let searchHorizonDays: Int64 = 5 * 366

    static let macros: [String: String] = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
        "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]

    public static func parse(_ text: String) -> Result<CronSchedule, CronError> {
        let fields = text.split(whereSeparator: { $0.isWhitespace }).map(String.init)
        guard let first = fields.first else { return .failure(.empty) }
        if first.hasPrefix("@") {
            guard fields.count == 1, let expansion = macros[first.lowercased()] else {
                return .failure(.unknownMacro(fields.joined(separator: " ")))
            }
            return parse(expansion)
        }
        guard fields.count == 5 else {
            return .failure(.fieldCount(expression: fields.joined(separator: " "), count: fields.count))
        }
        var schedule = CronSchedule()
        do {
            schedule.minutes = try parseField(fields[0], .minute)
            schedule.hours = try parseField(fields[1], .hour)
            schedule.daysOfMonth = try parseField(fields[2], .dayOfMonth)
            schedule.months = try parseField(fields[3], .month)
            let week = try parseField(fields[4], .dayOfWeek)
            schedule.daysOfWeek = (week | (week >> 7)) & 0x7F  // 7 is Sunday, like 0
        } catch {
            return .failure(error)
        }
        schedule.dayOfMonthIsStar = fields[2].hasPrefix("*")
        schedule.dayOfWeekIsStar = fields[4].hasPrefix("*")
        return .success(schedule)
    }

    /// One field as a bit mask; never empty on success.
    private static func parseField(_ text: String, _ field: CronField) throws(CronError) -> UInt64 {
        func fail(_ problem: CronError.Problem) -> CronError { .invalidField(field, text: text, problem: problem) }
        let bounds = field.bounds
        var mask: UInt64 = 0
        for item in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
            let base = parts[0]
            var step = 1
            if parts.count == 2 {
                let stepText = parts[1]
                if stepText.isEmpty { throw fail(.missingValue) }
                guard stepText.utf8.count <= 4, stepText.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), let n = Int(stepText),
                      (1...field.stepLimit).contains(n) else { throw fail(.badStep(String(stepText))) }
                step = n
            }
            var low: Int, high: Int
            if base == "*" {
                (low, high) = (bounds.lowerBound, field == .dayOfWeek ? 6 : bounds.upperBound)
            } else {
                let ends = base.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
                low = try value(ends[0], field, text)
                if ends.count == 2 {
                    high = try value(ends[1], field, text)
                    if low > high { throw fail(.backwardsRange(String(base))) }
                } else {
                    high = parts.count == 2 ? bounds.upperBound : low
                }
            }
            var v = low
            while v <= high {
                mask |= 1 << UInt64(v)
                v += step
            }
        }
        return mask
    }

    private static func value(_ text: Substring, _ field: CronField, _ fieldText: String) throws(CronError) -> Int {
        func fail(_ problem: CronError.Problem) -> CronError { .invalidField(field, text: fieldText, problem: problem) }
        if text.isEmpty { throw fail(.missingValue) }
        if text.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }) {
            guard text.utf8.count <= 4, let n = Int(text), field.bounds.contains(n) else { throw fail(.outOfRange(String(text))) }
            return n
        }
        if let index = field.names.firstIndex(of: text.uppercased()) { return field.bounds.lowerBound + index }
        throw fail(.notAValue(String(text)))
    }

    // MARK: Matching

    /// Whether the minute holding `unixSeconds` (UTC) matches; the seconds are ignored.
    public func matches(unixSeconds: Int64) -> Bool {
        let (day, minuteOfDay) = Self.split(unixSeconds)
        return matchesDay(day) && has(hours, minuteOfDay / 60) && has(minutes, minuteOfDay % 60)
    }

    /// The first matching minute strictly after `unixSeconds`, as unix seconds; nil if there is none within
    /// `searchHorizonDays` days.
    public func next(after unixSeconds: Int64) -> Int64? {
        var (day, from) = Self.split(unixSeconds)
        from += 1
        if from == 1440 { (day, from) = (day + 1, 0) }
        for offset in 0...Self.searchHorizonDays {
            let current = day + offset
            if matchesDay(current), let minute = firstMinute(atOrAfter: offset == 0 ? from : 0) {
                return Self.join(current, minute)
            }
        }
        return nil
    }

    /// The last matching minute at or before `unixSeconds` (the minute holding it counts), as unix seconds;
    /// nil if there is none within `searchHorizonDays` days.
    public func previous(atOrBefore unixSeconds: Int64) -> Int64? {
        previous(atOrBefore: unixSeconds, notBeforeDay: nil)
    }

    /// `previous(atOrBefore:)` that gives up before the day `notBeforeDay` (days since 1970-01-01).
    func previous(atOrBefore unixSeconds: Int64, notBeforeDay: Int64?) -> Int64? {
        let (day, from) = Self.split(unixSeconds)
        for offset in 0...Self.searchHorizonDays {
            let current = day - offset
            if let limit = notBeforeDay, current < limit { return nil }
            if matchesDay(current), let minute = lastMinute(atOrBefore: offset == 0 ? from : 1439) {
                return Self.join(current, minute)
            }
        }
        return nil
    }

    /// The window of length `duration` that started at a matching minute and holds `unixSeconds`
    /// (start inclusive, end exclusive, unix seconds). When windows overlap this is the one that started last,
    /// which is also the one that ends last; a window starting inside it may extend the freeze further.
    public func window(containing unixSeconds: Int64, duration: Duration) -> (start: Int64, end: Int64)? {
        guard duration > .zero else { return nil }
        let (seconds, attoseconds) = duration.components
        // t - start < duration, for whole seconds t - start, is t - start < length.
        let length = attoseconds > 0 ? (seconds == .max ? seconds : seconds + 1) : seconds
        let (earliest, overflow) = unixSeconds.subtractingReportingOverflow(length - 1)
        let limitDay = overflow ? nil : Self.floorDiv(earliest, 86_400)
        guard let start = previous(atOrBefore: unixSeconds, notBeforeDay: limitDay) else { return nil }
        guard unixSeconds - start < length else { return nil }
        let (end, endOverflow) = start.addingReportingOverflow(length)
        return (start, endOverflow ? .max : end)
    }

    // MARK: Days and minutes

    private func has(_ mask: UInt64, _ bit: Int) -> Bool { mask & (1 << UInt64(bit)) != 0 }

    /// `day` counts days since 1970-01-01 (a Thursday).
    private func matchesDay(_ day: Int64) -> Bool {
        let (month, dayOfMonth) = Self.monthAndDay(day)
        guard has(months, month) else { return false }
        let domMatches = has(daysOfMonth, dayOfMonth)
        let dowMatches = has(daysOfWeek, Int(Self.floorMod(day + 4, 7)))
        return dayOfMonthIsStar || dayOfWeekIsStar ? domMatches && dowMatches : domMatches || dowMatches
    }

    /// The first allowed minute of the day (0-1439) at or after `minuteOfDay`.
    private func firstMinute(atOrAfter minuteOfDay: Int) -> Int? {
        let hour = minuteOfDay / 60
        if has(hours, hour), let minute = Self.lowestBit(minutes, from: minuteOfDay % 60) { return hour * 60 + minute }
        guard let nextHour = Self.lowestBit(hours, from: hour + 1), let minute = Self.lowestBit(minutes, from: 0) else { return nil }
        return nextHour * 60 + minute
    }

    /// The last allowed minute of the day (0-1439) at or before `minuteOfDay`.
    private func lastMinute(atOrBefore minuteOfDay: Int) -> Int? {
        let hour = minuteOfDay / 60
        if has(hours, hour), let minute = Self.highestBit(minutes, upTo: minuteOfDay % 60) { return hour * 60 + minute }
        guard let previousHour = Self.highestBit(hours, upTo: hour - 1), let minute = Self.highestBit(minutes, upTo: 63) else { return nil }
        return previousHour * 60 + minute
    }

    private static func lowestBit(_ mask: UInt64, from bit: Int) -> Int? {
        guard bit < 64 else { return nil }
        let shifted = mask >> UInt64(bit)
        return shifted == 0 ? nil : bit + shifted.trailingZeroBitCount
    }

    private static func highestBit(_ mask: UInt64, upTo bit: Int) -> Int? {
        guard bit >= 0 else { return nil }
        let masked = bit >= 63 ? mask : mask & ((1 << UInt64(bit + 1)) - 1)
        return masked == 0 ? nil : 63 - masked.leadingZeroBitCount
    }

    private static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 {
        let q = a / b
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q
    }

    private static func floorMod(_ a: Int64, _ b: Int64) -> Int64 { a - floorDiv(a, b) * b }

    /// Unix seconds → (days since 1970-01-01, minute of the day 0-1439).
    private static func split(_ unixSeconds: Int64) -> (day: Int64, minute: Int) {
        (floorDiv(unixSeconds, 86_400), Int(floorMod(unixSeconds, 86_400) / 60))
    }

    private static func join(_ day: Int64, _ minuteOfDay: Int) -> Int64? {
        let (base, o1) = day.multipliedReportingOverflow(by: 86_400)
        let (result, o2) = base.addingReportingOverflow(Int64(minuteOfDay) * 60)
        return o1 || o2 ? nil : result
    }

    /// Month (1-12) and day of the month (1-31) of a day since 1970-01-01, proleptic Gregorian
    /// (Howard Hinnant's `civil_from_days`).
    private static func monthAndDay(_ day: Int64) -> (month: Int, day: Int) {
        let z = day + 719_468
        let era = floorDiv(z, 146_097)
        let dayOfEra = z - era * 146_097                                                   // 0...146096
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365  // 0...399
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)    // 0...365, from March 1
        let mp = (5 * dayOfYear + 2) / 153                                                 // 0...11, March = 0
        let dayOfMonth = dayOfYear - (153 * mp + 2) / 5 + 1
        return (Int(mp < 10 ? mp + 3 : mp - 9), Int(dayOfMonth))
    }
}

/// The five fields of a cron expression.
public enum CronField: String, Sendable, CaseIterable {
    case minute
    case hour
    case dayOfMonth = "day-of-month"
    case month
    case dayOfWeek = "day-of-week"

    var bounds: ClosedRange<Int> {
        switch self {
        case .minute: 0...59
        case .hour: 0...23
        case .dayOfMonth: 1...31
        case .month: 1...12
        case .dayOfWeek: 0...7
        }
    }

    /// The largest step: the number of distinct values.
    var stepLimit: Int {
        switch self {
        case .minute: 60
        case .hour: 24
        case .dayOfMonth: 31
        case .month: 12
        case .dayOfWeek: 7
        }
    }

    /// Names for the values from `bounds.lowerBound` on.
    var names: [String] {
        switch self {
        case .month: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
        case .dayOfWeek: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
        default: []
        }
    }

    /// What the field accepts, for messages.
    var allowedValues: String {
        switch self {
        case .minute: "0-59"
        case .hour: "0-23"
        case .dayOfMonth: "1-31"
        case .month: "1-12 or JAN-DEC"
        case .dayOfWeek: "0-7 (0 and 7 are Sunday) or SUN-SAT"
        }
    }
}

public enum CronError: Error, Equatable, Sendable, CustomStringConvertible {
    /// Nothing but whitespace.
    case empty
    /// Not five fields (and not a macro).
    case fieldCount(expression: String, count: Int)
    /// `@something` that is not one of the macros.
    case unknownMacro(String)
    /// One field is wrong; `text` is the whole field.
    case invalidField(CronField, text: String, problem: Problem)

    public enum Problem: Equatable, Sendable {
        /// `1,,2`, `1-`, `*/`.
        case missingValue
        /// `x`, or a name in a field that has none.
        case notAValue(String)
        /// `25` in the hour field.
        case outOfRange(String)
        /// `5-1`.
        case backwardsRange(String)
        /// `*/0`, `*/x`, `*/61` in the minute field.
        case badStep(String)
    }

    static let fieldList = "minute hour day-of-month month day-of-week"

    public var description: String {
        switch self {
        case .empty:
            return "cron expression is empty; it needs 5 fields: \(Self.fieldList)"
        case .fieldCount(let expression, let count):
            return "cron expression '\(expression)' must have 5 fields (\(Self.fieldList)); it has \(count)"
        case .unknownMacro(let text):
            return "unknown cron macro '\(text)'; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"
        case .invalidField(let field, let text, let problem):
            let allowed = "values are \(field.allowedValues)"
            let detail: String
            switch problem {
            case .missingValue:
                detail = "a value is missing; \(allowed), written as a value, a list a,b, a range a-b or a step */n or a-b/n"
            case .notAValue(let value):
                let kind = field == .month ? "a number or month name" : field == .dayOfWeek ? "a number or day name" : "a number"
                detail = "'\(value)' is not \(kind); \(allowed)"
            case .outOfRange(let value):
                detail = "\(value) is out of range; \(allowed)"
            case .backwardsRange(let range):
                detail = "range \(range) goes backwards; ranges run from low to high (to wrap around, list two ranges: a-max,min-b)"
            case .badStep(let step):
                detail = "step '\(step)' must be a whole number from 1 to \(field.stepLimit)"
            }
            return "\(field.rawValue) field '\(text)': \(detail)"
        }
    }
}

extension FreezeWindow {
    /// The freeze window holding `unixSeconds`: one that started at a minute the cron matches (UTC) less than
    /// `duration` before. Start inclusive, end exclusive, in unix seconds; nil when not frozen or when the
    /// cron expression does not parse (the loader reports that).
    public func contains(unixSeconds: Int64) -> (start: Int64, end: Int64)? {
        guard case .success(let schedule) = CronSchedule.parse(cron) else { return nil }
        return schedule.window(containing: unixSeconds, duration: duration)
    }
}

/// When a server fires `on.schedule`. Stated policy for missed ticks (the server was down, or busy):
/// they collapse into **one** run, for the latest missed minute — never a burst of catch-up runs, never
/// none. A schedule seen for the first time starts from now: no run for ticks before it was known.
public enum SchedulePolicy {
    public enum Decision: Sendable, Equatable {
        /// Fire the run for this minute (unix seconds) and remember it.
        case fire(minute: Int64)
        /// Nothing due; remember this minute as the baseline (first sighting).
        case baseline(minute: Int64)
        case wait
    }

    public static func decide(_ schedule: CronSchedule, lastFired: Int64?, now unixSeconds: Int64) -> Decision {
        let currentMinute = unixSeconds - ((unixSeconds % 60) + 60) % 60
        let latest = schedule.previous(atOrBefore: unixSeconds)
        guard let lastFired else {
            if let latest, latest == currentMinute { return .fire(minute: latest) }
            return .baseline(minute: currentMinute)
        }
        if let latest, latest > lastFired { return .fire(minute: latest) }
        return .wait
    }
}
