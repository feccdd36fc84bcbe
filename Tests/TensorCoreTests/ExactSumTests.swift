// ExactSum: sums whose bits do not depend on the order or grouping of terms.
import TensorCore
import CKernels
import XCTest

final class ExactSumTests: XCTestCase {
    /// Adds `values` into a fresh accumulator of `count` sums (all into sum 0 here).
    func words(_ values: [Double]) -> [Int64] {
        var acc = [Int64](repeating: 0, count: ExactSum.width)
        acc.withUnsafeMutableBufferPointer { a in for v in values { ExactSum.add(v, into: a.baseAddress!) } }
        return acc
    }

    func value(_ words: [Int64]) -> Double { words.withUnsafeBufferPointer { ExactSum.value($0.baseAddress!) } }

    /// Terms spanning 20 decades with both signs, so float sums of them depend on the order.
    func wideTerms(_ n: Int, seed: UInt64) -> [Double] {
        let s = Philox(seed: seed).stream(.test, 1, 0)
        return (0..<n).map { i in
            let magnitude = pow(10, Double(s.uniform(2 * i)) * 20 - 10)
            return (s.uniform(2 * i + 1) < 0.5 ? -1 : 1) * magnitude
        }
    }

    func testAnyOrderAndAnyGroupingGiveTheSameWords() {
        let terms = wideTerms(2000, seed: 1)
        let reference = words(terms)
        XCTAssertEqual(words(terms.reversed()), reference)
        XCTAssertEqual(words(terms.sorted { abs($0) < abs($1) }), reference)
        // Split into uneven groups ("ranks"), summed separately, then combined word by word as an
        // integer all-reduce does.
        for cuts in [[1, 7, 1500], [999], [3, 4, 5, 6, 1999]] {
            var combined = [Int64](repeating: 0, count: ExactSum.width)
            var start = 0
            for end in cuts + [terms.count] {
                let part = words(Array(terms[start..<end]))
                for i in combined.indices { combined[i] += part[i] }
                start = end
            }
            XCTAssertEqual(value(combined).bitPattern, value(reference).bitPattern, "grouping \(cuts)")
        }
        // The float sum itself does depend on the order here (so the test means something).
        XCTAssertNotEqual(terms.reduce(0, +), terms.reversed().reduce(0, +))
    }

    func testTheSumIsExactForTermsOnItsGrid() {
        // Multiples of 2^-40 below 2^40 are represented exactly (the grid is 2^-64), so the result
        // must be the exact sum, computed here in integers, rounded once to Double.
        let s = Philox(seed: 5).stream(.test, 2, 0)
        var exact: Int64 = 0   // in units of 2^-40
        var terms: [Double] = []
        for i in 0..<500 {
            let units = (Int64(s.word(i)) << 7) - (1 << 39)   // |units| < 2^39
            exact += units
            terms.append(Double(units) * 0x1p-40)
        }
        terms += [1e-30, -1e-30, 0x1p60, -0x1p60]   // cancelling pairs far apart in magnitude
        XCTAssertEqual(value(words(terms)), Double(exact) * 0x1p-40)
    }

    func testRoundingErrorIsWithinTheStatedBound() {
        // Each term is rounded once to a multiple of 2^-64: |error| ≤ n·2^-65 before reading back,
        // plus half an ulp of the result when read back as a Double.
        let terms = (0..<100).map { Double($0) * 1.000_000_000_1e-19 + 3e-21 }
        let got = value(words(terms))
        var reference = 0.0   // terms and partial sums are small and positive: Double is ample
        for t in terms { reference += t }
        XCTAssertLessThanOrEqual(abs(got - reference), Double(terms.count) * 0x1p-65 + reference.ulp)
    }

    func testNonFiniteOrHugeTermsMakeTheSumNaN() {
        XCTAssertTrue(value(words([1, .infinity])).isNaN)
        XCTAssertTrue(value(words([.nan, 2])).isNaN)
        XCTAssertTrue(value(words([0x1p95])).isNaN, "beyond the representable range")
        XCTAssertEqual(value(words([0x1p93, -0x1p93, 1])), 1)
    }

    /// The digit-major batch (batch norm's) gives every value the words `add` gives it, in its
    /// column, and reads the same sums back: across the vector body and the tail, with values
    /// over the whole range, ties at the last digit, zeros of both signs, and the non-finite.
    func testColumnsHoldTheWordsOfAddAndTheSameSums() {
        var values = wideTerms(37, seed: 5).map { $0 * 1e8 }
        values += [0, -0.0, 0x1p-65, 3 * 0x1p-65, -0x1p-66, 0x1p93, -0x1.fffffp93, 0x1p94, .nan, -.infinity, 1e-300, 0x1p-64 * 5]
        let n = values.count
        var columns = [Int64](repeating: 0, count: n * ExactSum.width)
        for _ in 0..<3 {   // three rounds, so sums of several values are compared too
            columns.withUnsafeMutableBufferPointer { ExactSum.addColumns(values, count: n, into: $0.baseAddress!) }
        }
        for (i, v) in values.enumerated() {
            let want = words([v, v, v])
            XCTAssertEqual((0..<ExactSum.width).map { columns[$0 * n + i] }, want, "value \(i): \(v)")
            let got = columns.withUnsafeBufferPointer { ExactSum.columnValue($0.baseAddress!, count: n, index: i) }
            XCTAssertEqual(got.bitPattern, value(want).bitPattern, "value \(i)")
        }
        // Every instruction-set level of the C kernel gives these words, for every length
        // (vector bodies and tails).
        for level in (0...2).map(Int32.init) where lockstep_kernel_level_supported(level) != 0 {
            for m in [0, 1, 3, 7, 8, 9, 17, n] {
                var c = [Int64](repeating: 0, count: m * ExactSum.width)
                c.withUnsafeMutableBufferPointer { lockstep_exact_add_columns(level, values, m, $0.baseAddress!) }
                for i in 0..<m {
                    XCTAssertEqual((0..<ExactSum.width).map { c[$0 * m + i] }, words([values[i]]), "level \(level), length \(m), value \(i)")
                }
            }
        }
    }
}
