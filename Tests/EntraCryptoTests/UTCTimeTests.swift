import EntraCrypto
import Foundation
import PropertyBased
import Testing

/// The allocation-free codec agrees with Foundation's formatters on every instant.
@Suite struct UTCTimeTests {
    @Test func agreesWithFoundation() async {
        let iso = ISO8601DateFormatter()
        let http = DateFormatter()
        http.locale = Locale(identifier: "en_US_POSIX")
        http.timeZone = TimeZone(identifier: "GMT")
        http.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        await propertyCheck(count: 300, input: Gen.int(in: 0...4_102_444_800)) { seconds in
            let d = Date(timeIntervalSince1970: TimeInterval(seconds))
            #expect(UTCTime.iso(d) == iso.string(from: d))
            #expect(UTCTime.httpDate(d) == http.string(from: d))
            #expect(UTCTime.parseISO(UTCTime.iso(d)) == d)
            #expect(UTCTime.parseHTTPDate(UTCTime.httpDate(d)) == d)
            #expect(UTCTime.parseISO(UTCTime.isoNoOffset(d)) == d, "no offset reads as UTC")
            #expect(UTCTime.spaced(d).replacingOccurrences(of: " ", with: "T") == UTCTime.iso(d))
        }
    }

    @Test func fractionsAndOffsets() {
        #expect(UTCTime.isoFraction(Date(timeIntervalSince1970: 1.25)) == "1970-01-01T00:00:01.2500000Z")
        #expect(UTCTime.parseISO("2019-09-17T19:10:35.2742618Z")!.timeIntervalSince1970 == 1_568_747_435.2742618)
        #expect(UTCTime.parseISO("2024-01-11T17:31:26+02:00") == UTCTime.parseISO("2024-01-11T15:31:26Z"))
        #expect(UTCTime.parseISO("2024-01-11T15:31:26-00:30") == UTCTime.parseISO("2024-01-11T16:01:26Z"))
        for bad in ["", "2024-01-11", "2024-13-11T15:31:26Z", "2024-01-11T15:31:26Q", "2024-01-11T15:31:26.Z", "2024-01-11T15:31:26+0200", "x024-01-11T15:31:26Z"] {
            #expect(UTCTime.parseISO(bad) == nil, "\(bad)")
        }
        #expect(UTCTime.parseHTTPDate("Sun, 29 Nov 2026 03:14:49 GMT") == UTCTime.parseISO("2026-11-29T03:14:49Z"))
        #expect(UTCTime.parseHTTPDate("garbage") == nil)
    }
}
