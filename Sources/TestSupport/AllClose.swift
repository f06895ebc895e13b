import XCTest

/// Elementwise `|a − e| ≤ atol + rtol·|e|`; on failure reports the largest absolute and relative
/// errors and the first mismatching indices.
public func assertAllClose<A: BinaryFloatingPoint, E: BinaryFloatingPoint>(
    _ actual: [A], _ expected: [E], atol: Double = 1e-5, rtol: Double = 1e-5,
    _ message: @autoclosure () -> String = "", file: StaticString = #filePath, line: UInt = #line
) {
    guard actual.count == expected.count else {
        XCTFail("count \(actual.count) != expected \(expected.count) \(message())",
                file: file, line: line)
        return
    }
    var maxAbs = 0.0, maxRel = 0.0, bad: [Int] = [], badCount = 0
    for i in 0..<actual.count {
        let a = Double(actual[i]), e = Double(expected[i])
        let d = abs(a - e)
        if d.isNaN || d > atol + rtol * abs(e) {
            badCount += 1
            if bad.count < 8 { bad.append(i) }
        }
        if !d.isNaN {
            maxAbs = max(maxAbs, d)
            if e != 0 { maxRel = max(maxRel, d / abs(e)) }
        } else {
            maxAbs = .nan
        }
    }
    if badCount > 0 {
        let shown = bad.map { "[\($0)] \(actual[$0]) vs \(expected[$0])" }.joined(separator: ", ")
        XCTFail("""
            \(badCount) of \(actual.count) elements differ (atol \(atol), rtol \(rtol)); \
            max abs error \(maxAbs), max rel error \(maxRel); first: \(shown) \(message())
            """, file: file, line: line)
    }
}
