import EntraCrypto
import Foundation
import KeyRollPrimitives
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
        let us = DateFormatter()
        us.locale = Locale(identifier: "en_US_POSIX")
        us.timeZone = TimeZone(identifier: "UTC")
        us.dateFormat = "MM/dd/yyyy HH:mm:ss"
        await propertyCheck(count: 300, input: Gen.int(in: 0...4_102_444_800)) { seconds in
            let d = Date(timeIntervalSince1970: TimeInterval(seconds))
            #expect(UTCTime.iso(d) == iso.string(from: d))
            #expect(UTCTime.httpDate(d) == http.string(from: d))
            #expect(UTCTime.usDateTime(d) == us.string(from: d))
            #expect(UTCTime.parseISO(UTCTime.iso(d)) == d)
            #expect(UTCTime.parseHTTPDate(UTCTime.httpDate(d)) == d)
            #expect(UTCTime.parseISO(UTCTime.isoNoOffset(d)) == d, "no offset reads as UTC")
            #expect(UTCTime.spaced(d).replacingOccurrences(of: " ", with: "T") == UTCTime.iso(d))
        }
    }

    @Test func jsonDateStrategiesMatchFoundationsISO8601() throws {
        struct Stamp: Codable, Equatable { var at: Date }
        let plain = JSONEncoder(), ours = JSONEncoder()
        plain.dateEncodingStrategy = .iso8601
        ours.dateEncodingStrategy = .utcISO8601
        let reader = JSONDecoder()
        reader.dateDecodingStrategy = .utcISO8601
        for t in [0, 1.7, 1_700_000_000, 4_102_444_799.999] {
            let s = Stamp(at: Date(timeIntervalSince1970: t))
            #expect(try ours.encode(s) == plain.encode(s))
            #expect(try reader.decode(Stamp.self, from: ours.encode(s)).at == Date(timeIntervalSince1970: t.rounded(.down)))
        }
        #expect(throws: DecodingError.self) { try reader.decode(Stamp.self, from: Data(#"{"at":"yesterday"}"#.utf8)) }
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
