import Foundation
import SlipwayTestSupport
import Testing

@testable import SlipwayCore

// Every literal timestamp below is UTC unix seconds computed independently with Python, e.g.
// `int(datetime(2024, 5, 17, 18, 0, tzinfo=timezone.utc).timestamp())`; the comment gives the date and weekday.

private func cron(_ text: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> CronSchedule {
    switch CronSchedule.parse(text) {
    case .success(let schedule): return schedule
    case .failure(let error):
        Issue.record("'\(text)' should parse: \(error)", sourceLocation: sourceLocation)
        throw error
    }
}

private func parseError(_ text: String) -> CronError? {
    if case .failure(let error) = CronSchedule.parse(text) { return error }
    return nil
}

@Suite struct CronParsingTests {
    @Test(arguments: [
        "* * * * *", "0 3 * * *", "*/15 * * * 1-5", "0 18 * * 5", "0,30 9-17 * * MON-FRI", "5 4 1-31/2 */3 sun",
        "0 0 1 jan,Jul *", "59 23 31 12 7", "0-59/59 0-23/23 1-31/31 1-12/12 0-7/7", "  0   3\t* *  *  ",
        "0 0 * * 5-7", "0 12 29 2 *", "30 5/10 * * *", "00 03 01 01 *", "@yearly", "@annually", "@monthly",
        "@weekly", "@daily", "@midnight", "@hourly", "@DAILY", " @hourly ",
    ])
    func parsesValidExpressions(text: String) {
        #expect(throws: Never.self, "\(text.debugDescription)") { try CronSchedule.parse(text).get() }
    }

    @Test(arguments: [
        ("", "cron expression is empty; it needs 5 fields: minute hour day-of-month month day-of-week"),
        ("   ", "cron expression is empty; it needs 5 fields: minute hour day-of-month month day-of-week"),
        ("0 3 * *", "cron expression '0 3 * *' must have 5 fields (minute hour day-of-month month day-of-week); it has 4"),
        ("0 0 3 * * *", "cron expression '0 0 3 * * *' must have 5 fields (minute hour day-of-month month day-of-week); it has 6"),
        ("@reboot", "unknown cron macro '@reboot'; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"),
        ("@daily 5", "unknown cron macro '@daily 5'; use @yearly, @annually, @monthly, @weekly, @daily, @midnight or @hourly"),
        ("0 25 * * *", "hour field '25': 25 is out of range; values are 0-23"),
        ("60 * * * *", "minute field '60': 60 is out of range; values are 0-59"),
        ("0,15,99 * * * *", "minute field '0,15,99': 99 is out of range; values are 0-59"),
        ("0 0 0 * *", "day-of-month field '0': 0 is out of range; values are 1-31"),
        ("0 0 32 * *", "day-of-month field '32': 32 is out of range; values are 1-31"),
        ("0 0 * 13 *", "month field '13': 13 is out of range; values are 1-12 or JAN-DEC"),
        ("0 0 * 0 *", "month field '0': 0 is out of range; values are 1-12 or JAN-DEC"),
        ("0 0 * * 8", "day-of-week field '8': 8 is out of range; values are 0-7 (0 and 7 are Sunday) or SUN-SAT"),
        ("99999999999999999999 * * * *", "minute field '99999999999999999999': 99999999999999999999 is out of range; values are 0-59"),
        ("x * * * *", "minute field 'x': 'x' is not a number; values are 0-59"),
        ("0 0 * * FRIDAY", "day-of-week field 'FRIDAY': 'FRIDAY' is not a number or day name; values are 0-7 (0 and 7 are Sunday) or SUN-SAT"),
        ("0 0 * MON *", "month field 'MON': 'MON' is not a number or month name; values are 1-12 or JAN-DEC"),
        ("0 0 * * JAN", "day-of-week field 'JAN': 'JAN' is not a number or day name; values are 0-7 (0 and 7 are Sunday) or SUN-SAT"),
        ("0 0 MON * *", "day-of-month field 'MON': 'MON' is not a number; values are 1-31"),
        ("-5 * * * *", "minute field '-5': a value is missing; values are 0-59"),
        ("1,,2 * * * *", "minute field '1,,2': a value is missing; values are 0-59"),
        ("0 1- * * *", "hour field '1-': a value is missing; values are 0-23"),
        ("*/ * * * *", "minute field '*/': a value is missing; values are 0-59"),
        ("1-2-3 * * * *", "minute field '1-2-3': '2-3' is not a number; values are 0-59"),
        ("*-5 * * * *", "minute field '*-5': '*' is not a number; values are 0-59"),
        ("0 0 * * 5-1", "day-of-week field '5-1': range 5-1 goes backwards"),
        ("0 0 * * FRI-MON", "day-of-week field 'FRI-MON': range FRI-MON goes backwards"),
        ("0 22-2 * * *", "hour field '22-2': range 22-2 goes backwards; ranges run from low to high"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be a whole number from 1 to 60"),
        ("*/61 * * * *", "minute field '*/61': step '61' must be a whole number from 1 to 60"),
        ("0 */x * * *", "hour field '*/x': step 'x' must be a whole number from 1 to 24"),
        ("0 0 * 1-12/2/3 *", "month field '1-12/2/3': step '2/3' must be a whole number from 1 to 12"),
        ("0 0 * * */8", "day-of-week field '*/8': step '8' must be a whole number from 1 to 7"),
    ])
    func rejectsInvalidExpressionsWithMessages(text: String, message: String) {
        let error = parseError(text)
        #expect(error != nil, "\(text.debugDescription) should not parse")
        #expect(error?.description.hasPrefix(message) == true, "\(text.debugDescription): \(error?.description ?? "parsed")")
    }

    @Test func errorsNameTheFieldAndTheProblem() {
        #expect(parseError("0 25 * * *") == .invalidField(.hour, text: "25", problem: .outOfRange("25")))
        #expect(parseError("0 0 * * 5-1") == .invalidField(.dayOfWeek, text: "5-1", problem: .backwardsRange("5-1")))
        #expect(parseError("*/0 * * * *") == .invalidField(.minute, text: "*/0", problem: .badStep("0")))
        #expect(parseError("0 0 * JANUARY *") == .invalidField(.month, text: "JANUARY", problem: .notAValue("JANUARY")))
        #expect(parseError("0 3 * *") == .fieldCount(expression: "0 3 * *", count: 4))
        #expect(parseError("") == .empty)
        #expect(parseError("@often") == .unknownMacro("@often"))
        // The first bad field is the one reported.
        #expect(parseError("61 25 * * *") == .invalidField(.minute, text: "61", problem: .outOfRange("61")))
    }

    @Test func macrosEqualTheirExpansions() throws {
        #expect(try cron("@yearly") == cron("0 0 1 1 *"))
        #expect(try cron("@annually") == cron("0 0 1 1 *"))
        #expect(try cron("@monthly") == cron("0 0 1 * *"))
        #expect(try cron("@weekly") == cron("0 0 * * 0"))
        #expect(try cron("@daily") == cron("0 0 * * *"))
        #expect(try cron("@midnight") == cron("0 0 * * *"))
        #expect(try cron("@hourly") == cron("0 * * * *"))
        #expect(try cron("@Hourly") == cron("@hourly"))
    }

    @Test func namesNumbersAndSevenAreTheSame() throws {
        #expect(try cron("0 0 * * 0") == cron("0 0 * * 7"))
        #expect(try cron("0 0 * * 0") == cron("0 0 * * SUN"))
        #expect(try cron("0 0 * * sun") == cron("0 0 * * Sun"))
        #expect(try cron("0 0 * * 1-5") == cron("0 0 * * MON-FRI"))
        #expect(try cron("0 0 * * 0-6") == cron("0 0 * * 1-7"))
        #expect(try cron("0 0 * * 5-7") == cron("0 0 * * 0,5,6"))
        #expect(try cron("0 0 * 1,7 *") == cron("0 0 * jan,JUL *"))
        #expect(try cron("0 0 * 3-5 *") == cron("0 0 * MAR-MAY *"))
        #expect(try cron("0 9-17/4 * * *") == cron("0 9,13,17 * * *"))
        #expect(try cron("30 5/10 * * *") == cron("30 5,15 * * *"))
        #expect(try cron("*/20 * * * *") == cron("0,20,40 * * * *"))
        #expect(try cron("0 0 * * *") != cron("0 0 * * 1"))
    }
}

@Suite struct CronMatchingTests {
    @Test func matchesAtMinuteResolution() throws {
        let friday = try cron("0 18 * * 5")
        #expect(friday.matches(unixSeconds: 1_715_968_800))   // 2024-05-17 18:00:00 Fri
        #expect(friday.matches(unixSeconds: 1_715_968_859))   // 2024-05-17 18:00:59 Fri
        #expect(!friday.matches(unixSeconds: 1_715_968_860))  // 2024-05-17 18:01:00 Fri
        #expect(!friday.matches(unixSeconds: 1_715_968_799))  // 2024-05-17 17:59:59 Fri
        #expect(!friday.matches(unixSeconds: 1_715_796_000))  // 2024-05-15 18:00 Wed
        #expect(try cron("* * * * *").matches(unixSeconds: 0))
        #expect(try cron("0 0 1 1 *").matches(unixSeconds: 0))  // 1970-01-01 00:00 Thu
        #expect(try cron("0 0 * * THU").matches(unixSeconds: 0))
        #expect(try cron("0 0 1 1 *").matches(unixSeconds: -31_536_000))  // 1969-01-01 00:00 Wed
        #expect(try cron("0 0 * * WED").matches(unixSeconds: -31_536_000))
        #expect(try cron("59 23 31 12 *").matches(unixSeconds: -1))  // 1969-12-31 23:59:59
    }

    @Test func nextIsStrictlyAfter() throws {
        let quarter = try cron("*/15 * * * *")
        #expect(quarter.next(after: 1_715_767_650) == 1_715_768_100)  // 2024-05-15 10:07:30 → 10:15:00
        #expect(quarter.next(after: 1_715_768_100) == 1_715_769_000)  // 10:15:00 (a match) → 10:30:00
        #expect(quarter.next(after: 1_715_768_099) == 1_715_768_100)  // 10:14:59 → 10:15:00
        #expect(quarter.next(after: 1_715_768_130) == 1_715_769_000)  // 10:15:30 → 10:30:00

        let friday = try cron("0 18 * * 5")
        #expect(friday.next(after: 1_715_774_400) == 1_715_968_800)  // Wed 2024-05-15 12:00 → Fri 2024-05-17 18:00
        #expect(friday.next(after: 1_715_968_800) == 1_716_573_600)  // → Fri 2024-05-24 18:00

        #expect(try cron("@hourly").next(after: 1_715_767_650) == 1_715_770_800)  // 10:07:30 → 11:00
        #expect(try cron("@weekly").next(after: 1_715_774_400) == 1_716_076_800)  // Wed 2024-05-15 12:00 → Sun 2024-05-19
        #expect(try cron("@monthly").next(after: 1_715_774_400) == 1_717_200_000)  // → 2024-06-01 00:00
        #expect(try cron("@yearly").next(after: 1_715_774_400) == 1_735_689_600)  // → 2025-01-01 00:00
        #expect(try cron("@daily").next(after: -1) == 0)  // 1969-12-31 23:59:59 → 1970-01-01 00:00
    }

    @Test func previousIsAtOrBefore() throws {
        let quarter = try cron("*/15 * * * *")
        #expect(quarter.previous(atOrBefore: 1_715_768_100) == 1_715_768_100)  // 2024-05-15 10:15:00 itself
        #expect(quarter.previous(atOrBefore: 1_715_768_159) == 1_715_768_100)  // 10:15:59 is in the 10:15 minute
        #expect(quarter.previous(atOrBefore: 1_715_768_099) == 1_715_767_200)  // 10:14:59 → 10:00:00

        let friday = try cron("0 18 * * 5")
        #expect(friday.previous(atOrBefore: 1_716_199_200) == 1_715_968_800)  // Mon 2024-05-20 10:00 → Fri 05-17 18:00
        #expect(friday.previous(atOrBefore: 1_715_968_799) == 1_715_364_000)  // Fri 17:59:59 → Fri 2024-05-10 18:00

        #expect(try cron("0 0 1 1 *").previous(atOrBefore: 0) == 0)  // 1970-01-01 00:00 itself
        #expect(try cron("0 0 1 1 *").previous(atOrBefore: -1) == -31_536_000)  // → 1969-01-01 00:00
    }

    @Test func monthEndsAndYearEnds() throws {
        #expect(try cron("0 0 31 * *").next(after: 1_713_139_200) == 1_717_113_600)  // 2024-04-15 → 2024-05-31 (April has 30)
        let newYearsEve = try cron("59 23 31 12 *")
        #expect(newYearsEve.next(after: 1_735_689_540) == 1_767_225_540)  // 2024-12-31 23:59 → 2025-12-31 23:59
        #expect(newYearsEve.previous(atOrBefore: 1_767_225_539) == 1_735_689_540)
        #expect(newYearsEve.next(after: 1_735_689_539) == 1_735_689_540)
    }

    @Test func leapYears() throws {
        let leapDay = try cron("0 12 29 2 *")
        #expect(leapDay.next(after: 1_709_251_200) == 1_835_438_400)  // 2024-03-01 → 2028-02-29 12:00 Tue
        #expect(leapDay.previous(atOrBefore: 1_798_761_600) == 1_709_208_000)  // 2027-01-01 → 2024-02-29 12:00 Thu
        #expect(leapDay.next(after: 1_709_207_940) == 1_709_208_000)  // 2024-02-29 11:59 → 12:00
        // 2100 is not a leap year: from 2101-01-01 the last Feb 29 is 2096-02-29 (Wed).
        #expect(try cron("0 0 29 2 *").previous(atOrBefore: 4_133_980_800) == 3_981_312_000)
        // The 29th of every month matches 2024-02-29 00:00 but not 2023-02-28 → next is 2023-03-29.
        #expect(try cron("0 0 29 * *").matches(unixSeconds: 1_709_164_800))
        #expect(try cron("0 0 29 * *").next(after: 1_677_542_400) == 1_680_048_000)
    }

    @Test func impossibleSchedulesGiveNil() throws {
        for text in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 FEB *"] {
            let schedule = try cron(text)
            #expect(schedule.next(after: 1_715_774_400) == nil, "\(text)")
            #expect(schedule.previous(atOrBefore: 1_715_774_400) == nil, "\(text)")
            #expect(!schedule.matches(unixSeconds: 1_715_774_400), "\(text)")
        }
        // Bounded: an impossible schedule answers quickly.
        let impossible = try cron("0 0 30 2 *")
        let elapsed = ContinuousClock().measure {
            for i in 0..<20 { _ = impossible.next(after: 1_715_774_400 + Int64(i) * 86_400) }
        }
        #expect(elapsed < .seconds(1), "20 searches took \(elapsed)")
    }

    @Test func dayOfMonthOrDayOfWeekWhenBothAreRestricted() throws {
        // Vixie cron: "the 1st, and every Monday".
        let firstOrMonday = try cron("0 0 1 * MON")
        #expect(firstOrMonday.next(after: 1_724_544_000) == 1_724_630_400)  // Sun 2024-08-25 → Mon 2024-08-26
        #expect(firstOrMonday.next(after: 1_724_630_400) == 1_725_148_800)  // → Sun 2024-09-01 (the 1st)
        #expect(firstOrMonday.next(after: 1_725_148_800) == 1_725_235_200)  // → Mon 2024-09-02
        #expect(firstOrMonday.matches(unixSeconds: 1_725_148_800))
        #expect(!firstOrMonday.matches(unixSeconds: 1_724_716_800))  // Tue 2024-08-27

        // A day-of-week only: every Monday; a day-of-month only: every 1st.
        #expect(try cron("0 0 * * MON").next(after: 1_724_630_400) == 1_725_235_200)  // Mon 08-26 → Mon 09-02
        #expect(try cron("0 0 1 * *").next(after: 1_724_544_000) == 1_725_148_800)  // → Sun 2024-09-01

        // Restricted by a range: odd days OR Mondays.
        let oddOrMonday = try cron("0 0 1-31/2 * MON")
        #expect(oddOrMonday.next(after: 1_724_544_000) == 1_724_630_400)  // Sun 08-25 → Mon 08-26 (even, but Monday)
        #expect(oddOrMonday.next(after: 1_724_630_400) == 1_724_716_800)  // → Tue 08-27 (odd)

        // A field starting with `*` counts as unrestricted (as in Vixie cron), so both must match:
        // odd days that are Mondays. Mon 08-26 and Mon 09-02 are even; Mon 2024-09-09 is the first.
        let oddAndMonday = try cron("0 0 */2 * MON")
        #expect(oddAndMonday.next(after: 1_724_544_000) == 1_725_840_000)
        #expect(!oddAndMonday.matches(unixSeconds: 1_724_716_800))  // Tue 08-27: odd but not a Monday
    }

    @Test func stepsRangesAndListsTogether() throws {
        // Minutes 0, 5, 10, 15, 20, 25, 50 of every hour.
        let minutes = try cron("5,10-20/5,*/25 * * * *")
        let tenOClock: Int64 = 1_715_767_200  // 2024-05-15 10:00 Wed
        var t = tenOClock - 1
        var seen: [Int64] = []
        for _ in 0..<8 {
            guard let n = minutes.next(after: t) else { break }
            seen.append((n - tenOClock) / 60)
            t = n
        }
        #expect(seen == [0, 5, 10, 15, 20, 25, 50, 60])

        // 09:30, 13:30 and 17:30 on weekdays in January-March and December.
        let office = try cron("30 9-17/4 * JAN-MAR,DEC 1-5")
        #expect(office.next(after: 1_711_719_000) == 1_711_733_400)  // Fri 2024-03-29 13:30 → 17:30
        #expect(office.next(after: 1_711_733_400) == 1_733_131_800)  // → Mon 2024-12-02 09:30 (Dec 1 is a Sunday)
        #expect(office.previous(atOrBefore: 1_733_131_799) == 1_711_733_400)

        // Friday through Sunday, 7 being Sunday.
        #expect(try cron("0 0 * * 5-7").next(after: 1_716_076_800) == 1_716_508_800)  // Sun 2024-05-19 → Fri 2024-05-24
    }

    /// `matches` against Foundation's calendar on random minutes between 1900 and 2200, and `next`/`previous`
    /// against a minute-by-minute scan.
    @Test func agreesWithFoundationCalendar() throws {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        typealias Fields = (minute: Int, hour: Int, day: Int, month: Int, weekday: Int)
        let cases: [(String, (Fields) -> Bool)] = [
            ("*/7 3-5 * * *", { $0.minute % 7 == 0 && (3...5).contains($0.hour) }),
            ("0 12 1,15 * WED", { $0.minute == 0 && $0.hour == 12 && ([1, 15].contains($0.day) || $0.weekday == 3) }),
            ("15 */6 * FEB 0", { $0.minute == 15 && $0.hour % 6 == 0 && $0.month == 2 && $0.weekday == 0 }),
            ("0 0 29 2 *", { $0.minute == 0 && $0.hour == 0 && $0.day == 29 && $0.month == 2 }),
            ("10-20/3 0,23 * * *", { [10, 13, 16, 19].contains($0.minute) && [0, 23].contains($0.hour) }),
        ]
        var rng = SplitMix64(seed: 42)
        for (text, expected) in cases {
            let schedule = try cron(text)
            func fields(_ t: Int64) -> Fields {
                let c = calendar.dateComponents([.minute, .hour, .day, .month, .weekday], from: Date(timeIntervalSince1970: TimeInterval(t)))
                return (c.minute!, c.hour!, c.day!, c.month!, c.weekday! - 1)
            }
            for _ in 0..<300 {
                let t = Int64.random(in: -2_208_988_800...7_258_118_400, using: &rng)
                #expect(schedule.matches(unixSeconds: t) == expected(fields(t)), "\(text) at \(t)")
                // Random minutes rarely match: check the matches `next` and `previous` find, too.
                if let next = schedule.next(after: t) {
                    #expect(next > t && expected(fields(next)), "\(text): next after \(t) is \(next)")
                }
                if let previous = schedule.previous(atOrBefore: t) {
                    #expect(previous <= t && expected(fields(previous)), "\(text): previous at or before \(t) is \(previous)")
                }
            }
        }
        // Scans: only for the dense schedules.
        for text in ["*/7 3-5 * * *", "0 12 1,15 * WED", "10-20/3 0,23 * * *"] {
            let schedule = try cron(text)
            for _ in 0..<30 {
                let t = Int64.random(in: -2_208_988_800...7_258_118_400, using: &rng)
                let next = try #require(schedule.next(after: t))
                let previous = try #require(schedule.previous(atOrBefore: t))
                #expect(next > t && next % 60 == 0 && schedule.matches(unixSeconds: next))
                #expect(previous <= t && t - previous < 16 * 86_400 && previous % 60 == 0 && schedule.matches(unixSeconds: previous))
                var m = t - (t % 60 + 60) % 60 + 60  // the first minute after t (t may be negative)
                while m < next { #expect(!schedule.matches(unixSeconds: m)); m += 60 }
                m = previous + 60
                while m <= t { #expect(!schedule.matches(unixSeconds: m)); m += 60 }
            }
        }
    }
}

@Suite struct FreezeWindowTests {
    // "No deploys from Friday 18:00 for 64 hours": Fri 2024-05-17 18:00 (1715968800) to Mon 2024-05-20 10:00 (1716199200).
    let weekend = FreezeWindow(cron: "0 18 * * 5", duration: .seconds(64 * 3600))

    @Test func insideTheWindow() {
        let window = (start: Int64(1_715_968_800), end: Int64(1_716_199_200))
        for t: Int64 in [1_715_968_800, 1_715_990_340, 1_716_076_800, 1_716_120_000, 1_716_199_199] {
            // Fri 18:00:00, Fri 23:59, Sun 00:00, Sun 12:00, Mon 09:59:59
            let found = weekend.contains(unixSeconds: t)
            #expect(found?.start == window.start && found?.end == window.end, "\(t): \(String(describing: found))")
        }
    }

    @Test func atTheBoundaries() {
        #expect(weekend.contains(unixSeconds: 1_715_968_799) == nil)   // Fri 2024-05-17 17:59:59: not yet
        #expect(weekend.contains(unixSeconds: 1_715_968_800) != nil)   // Fri 18:00:00: the start is inside
        #expect(weekend.contains(unixSeconds: 1_716_199_199) != nil)   // Mon 2024-05-20 09:59:59
        #expect(weekend.contains(unixSeconds: 1_716_199_200) == nil)   // Mon 10:00:00: the end is outside
    }

    @Test func outsideTheWindow() {
        #expect(weekend.contains(unixSeconds: 1_716_379_200) == nil)  // Wed 2024-05-22 12:00
        #expect(weekend.contains(unixSeconds: 1_715_774_400) == nil)  // Wed 2024-05-15 12:00
        #expect(weekend.contains(unixSeconds: 1_716_458_400) == nil)  // Thu 2024-05-23 10:00
        // The next week's window: Fri 2024-05-24 18:00.
        #expect(weekend.contains(unixSeconds: 1_716_573_600)?.start == 1_716_573_600)
    }

    @Test func windowsCrossingMidnightWeeksAndYears() {
        // 22:30 for 3 hours: Fri 2024-05-17 22:30 (1715985000) to Sat 01:30 (1715995800).
        let night = FreezeWindow(cron: "30 22 * * *", duration: .seconds(3 * 3600))
        #expect(night.contains(unixSeconds: 1_715_990_340)?.start == 1_715_985_000)  // Fri 23:59
        #expect(night.contains(unixSeconds: 1_715_995_799)?.end == 1_715_995_800)    // Sat 01:29:59
        #expect(night.contains(unixSeconds: 1_715_995_800) == nil)                   // Sat 01:30:00
        #expect(night.contains(unixSeconds: 1_715_984_999) == nil)                   // Fri 22:29:59

        // Saturday 22:00 for 26 hours, across the Saturday/Sunday week boundary, to Mon 2024-05-20 00:00.
        let overWeek = FreezeWindow(cron: "0 22 * * SAT", duration: .seconds(26 * 3600))
        #expect(overWeek.contains(unixSeconds: 1_716_076_800)?.start == 1_716_069_600)  // Sun 2024-05-19 00:00
        #expect(overWeek.contains(unixSeconds: 1_716_163_199)?.end == 1_716_163_200)    // Sun 23:59:59
        #expect(overWeek.contains(unixSeconds: 1_716_163_200) == nil)                   // Mon 00:00

        // New Year's Eve 20:00 for 12 hours: 2024-12-31 20:00 (1735675200) to 2025-01-01 08:00 (1735718400).
        let newYear = FreezeWindow(cron: "0 20 31 DEC *", duration: .seconds(12 * 3600))
        #expect(newYear.contains(unixSeconds: 1_735_718_399)?.start == 1_735_675_200)  // 2025-01-01 07:59:59
        #expect(newYear.contains(unixSeconds: 1_735_718_400) == nil)                   // 2025-01-01 08:00
    }

    @Test func longAndOverlappingWindows() {
        // Two weeks from New Year: 2025-01-01 00:00 (1735689600) to 2025-01-15 00:00.
        let january = FreezeWindow(cron: "@yearly", duration: .seconds(14 * 86_400))
        #expect(january.contains(unixSeconds: 1_736_899_199)?.start == 1_735_689_600)  // 2025-01-14 23:59:59
        #expect(january.contains(unixSeconds: 1_736_899_200) == nil)                   // 2025-01-15 00:00

        // Every 10 minutes for 30 minutes: always frozen, in the window that started last.
        let rolling = FreezeWindow(cron: "*/10 * * * *", duration: .seconds(30 * 60))
        let found = rolling.contains(unixSeconds: 1_715_767_650)  // 2024-05-15 10:07:30
        #expect(found?.start == 1_715_767_200)  // 10:00
        #expect(found?.end == 1_715_769_000)    // 10:30
    }

    @Test func oddDurationsAndBadCron() {
        // 90.5 seconds: the seconds 0...90 after the start are inside.
        let short = FreezeWindow(cron: "0 18 * * 5", duration: .milliseconds(90_500))
        #expect(short.contains(unixSeconds: 1_715_968_890)?.end == 1_715_968_891)  // Fri 2024-05-17 18:01:30 → 18:01:31
        #expect(short.contains(unixSeconds: 1_715_968_891) == nil)
        #expect(FreezeWindow(cron: "0 18 * * 5", duration: .zero).contains(unixSeconds: 1_715_968_800) == nil)
        #expect(FreezeWindow(cron: "0 18 * * 5", duration: .seconds(-60)).contains(unixSeconds: 1_715_968_800) == nil)
        #expect(FreezeWindow(cron: "0 18 * *", duration: .seconds(3600)).contains(unixSeconds: 1_715_968_800) == nil)
        #expect(FreezeWindow(cron: "0 0 30 2 *", duration: .seconds(86_400)).contains(unixSeconds: 1_715_968_800) == nil)
    }

    @Test func isFast() {
        let clock = ContinuousClock()
        let calls = 2_000
        var frozen = 0
        let elapsed = clock.measure {
            for i in 0..<calls where weekend.contains(unixSeconds: 1_715_774_400 + Int64(i) * 397) != nil { frozen += 1 }
        }
        #expect(frozen > 0 && frozen < calls)
        #expect(elapsed < .milliseconds(calls), "\(calls) checks took \(elapsed)")  // under 1 ms each
    }
}

@Suite struct CronLoaderTests {
    @Test func loaderReportsCronProblemsAtTheCron() {
        let text = """
            on:
              schedule: [ { cron: "0 3 * * 8" } ]
            jobs:
              build:
                steps: [ { run: make } ]
            """
        let result = PipelineLoader.load(text: text, file: "slipway.yml")
        #expect(result.pipeline == nil)
        #expect(result.errors.count == 1)
        #expect(result.errors.first?.message == "day-of-week field '8': 8 is out of range; values are 0-7 (0 and 7 are Sunday) or SUN-SAT")
        #expect(result.errors.first?.location.line == 2)
        #expect(result.errors.first?.location.column == 23)
    }

    @Test func loaderAcceptsMacrosAndNames() {
        let text = """
            on:
              schedule: [ { cron: "@daily" }, { cron: "*/15 9-17 * JAN-MAR mon-fri" } ]
            jobs:
              build:
                steps: [ { run: make } ]
            """
        let result = PipelineLoader.load(text: text, file: "slipway.yml")
        #expect(result.errors == [])
        #expect(result.pipeline?.triggers.schedules == ["@daily", "*/15 9-17 * JAN-MAR mon-fri"])
    }
}

@Suite struct SchedulePolicyTests {
    let everyFive = try! CronSchedule.parse("*/5 * * * *").get()
    // 2026-11-23 06:00:00 UTC
    let six: Int64 = 1_795_413_600

    @Test func firstSightingStartsFromNowWithoutCatchingUp() {
        #expect(SchedulePolicy.decide(everyFive, lastFired: nil, now: six + 7 * 60 + 12) == .baseline(minute: six + 7 * 60))
        #expect(SchedulePolicy.decide(everyFive, lastFired: nil, now: six + 5 * 60 + 59) == .fire(minute: six + 5 * 60))
    }

    @Test func firesOncePerTickAndNeverTwice() {
        #expect(SchedulePolicy.decide(everyFive, lastFired: six, now: six + 4 * 60 + 59) == .wait)
        #expect(SchedulePolicy.decide(everyFive, lastFired: six, now: six + 5 * 60) == .fire(minute: six + 5 * 60))
        // After firing (e.g. the server restarted within the same minute): nothing again.
        #expect(SchedulePolicy.decide(everyFive, lastFired: six + 5 * 60, now: six + 5 * 60 + 30) == .wait)
    }

    @Test func missedTicksCollapseIntoOneRunForTheLatest() {
        // Down from 06:00 to 06:23: ticks 06:05 … 06:20 were missed; one run, for 06:20.
        #expect(SchedulePolicy.decide(everyFive, lastFired: six, now: six + 23 * 60) == .fire(minute: six + 20 * 60))
        #expect(SchedulePolicy.decide(everyFive, lastFired: six + 20 * 60, now: six + 23 * 60) == .wait)
    }
}
