import Testing
@testable import SlipwayCore

@Suite struct DurationParserTests {
    @Test(arguments: [
        ("500ms", Duration.milliseconds(500)),
        ("30s", .seconds(30)),
        ("10m", .seconds(600)),
        ("1h", .seconds(3600)),
        ("1h30m", .seconds(5400)),
        ("1m30s", .seconds(90)),
        ("2h3m4s5ms", .seconds(7384) + .milliseconds(5)),
        ("  45s\n", .seconds(45)),
        ("\t1h ", .seconds(3600)),
        ("0s", .zero),
        ("1.5s", .milliseconds(1500)),
        ("0.5h", .seconds(1800)),
        ("1.25ms", .microseconds(1250)),
        ("007m", .seconds(420)),
        ("2562047h", .seconds(2_562_047 * 3600)),
    ])
    func parsesValidDurations(text: String, expected: Duration) {
        #expect(DurationParser.parse(text) == expected, "\(text.debugDescription)")
    }

    @Test(arguments: [
        "", "   ", "10", "1x", "-5s", "ms", "s", "h", "99999999999999999999h", "2562048h", "9223372036854775807ms",
        "1h30", "1m1m", "30s1m", "1ms1s", "1 h", "1h 30m", "1.s", "1..5s", ".s", "+5s", "5S", "1H", "5 s",
        "1d", "5sec", "1e3s", "5s,", "--1s", "1µs",
    ])
    func rejectsInvalidDurations(text: String) {
        #expect(DurationParser.parse(text) == nil, "\(text.debugDescription)")
    }

    @Test(arguments: [
        (Duration.zero, "0ms"),
        (.milliseconds(450), "450ms"),
        (.microseconds(999_400), "999ms"),
        (.microseconds(999_600), "1s"),
        (.milliseconds(1200), "1.2s"),
        (.milliseconds(1249), "1.2s"),
        (.milliseconds(1250), "1.3s"),
        (.seconds(5), "5s"),
        (.milliseconds(59_940), "59.9s"),
        (.milliseconds(59_960), "1m00s"),
        (.seconds(185), "3m05s"),
        (.seconds(3599), "59m59s"),
        (.milliseconds(3_599_600), "1h00m"),
        (.seconds(3720), "1h02m"),
        (.seconds(3749), "1h02m"),
        (.seconds(3750), "1h03m"),
        (.seconds(100 * 3600 + 60), "100h01m"),
        (.milliseconds(-1500), "-1.5s"),
    ])
    func formats(duration: Duration, expected: String) {
        #expect(DurationParser.format(duration) == expected)
    }

    @Test func formatHandlesExtremes() {
        let huge = Duration.seconds(Int64.max)
        #expect(DurationParser.format(huge).hasSuffix("h"))
        #expect(!DurationParser.format(.nanoseconds(1)).isEmpty)
    }

    @Test func formatOfParsedValuesReadsBack() {
        for text in ["450ms", "30s", "10m", "1h", "1h30m", "3m5s"] {
            let d = DurationParser.parse(text)!
            let formatted = DurationParser.format(d)
            // "3m05s" and "1h30m" are themselves valid inputs.
            if let again = DurationParser.parse(formatted) {
                #expect(again == d, "\(text) → \(formatted)")
            }
        }
        #expect(DurationParser.parse(DurationParser.format(.seconds(185))) == .seconds(185))
        #expect(DurationParser.parse(DurationParser.format(.seconds(5400))) == .seconds(5400))
    }
}
