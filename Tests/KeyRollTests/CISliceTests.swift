import Foundation
import Testing
import TestSupport

/// CI's slices of the long enumerations must, over `parts` days, take every case exactly once,
/// and the full run must take all of them.
@Suite struct CISliceTests {
    /// Noon (UTC) of the `n`-th day since 1970.
    func day(_ n: Int) -> Date { Date(timeIntervalSince1970: Double(n) * 86_400 + 43_200) }

    @Test(arguments: [2, 3, 4])
    func consecutiveDaysTakeEveryCaseExactlyOnce(parts: Int) {
        let cases = 0..<97
        var taken: [Int: Int] = [:]
        // 31 December 2025 is day 20,453: the days run across New Year
        for d in 0..<parts {
            let slice = CISlice.rotating(parts, environment: [:], on: day(20_453 - 1 + d))
            #expect(slice.part != nil)
            for i in cases where slice.includes(i) { taken[i, default: 0] += 1 }
            // each part reaches from the first cases to the last
            let mine = cases.filter(slice.includes)
            #expect(mine.first! < parts && mine.last! >= cases.upperBound - parts, "\(mine.first!)…\(mine.last!)")
        }
        #expect(taken.count == cases.count && taken.values.allSatisfy { $0 == 1 }, "\(taken.filter { $0.value != 1 })")
    }

    @Test func theFullRunTakesEveryCase() {
        for env in [["KEYROLL_FULL": "1"], ["KEYROLL_CRASH_POINTS": "all"]] {
            let slice = CISlice.rotating(4, fullWhen: "KEYROLL_CRASH_POINTS", environment: env, on: day(7))
            #expect(slice == .all && (0..<50).allSatisfy(slice.includes), "\(env)")
            #expect(slice.note(ran: 50, of: 50) == "")
        }
        // another enumeration's variable does not widen this one
        let other = CISlice.rotating(4, fullWhen: "KEYROLL_CRASH_POINTS", environment: ["KEYROLL_PKCS11_CRASH_POINTS": "all"], on: day(7))
        #expect(other.part == 7 % 4)
        #expect(other.note(ran: 12, of: 50, variable: "KEYROLL_CRASH_POINTS").contains("KEYROLL_CRASH_POINTS=all or KEYROLL_FULL=1"))
    }
}
