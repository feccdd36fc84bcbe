// Reports: well-formed SVG/HTML, series and point counts, table numbers equal to metrics.jsonl,
// and bad or partial metrics files.
import Foundation
import FoundationXML
@testable import Reports
@testable import Training
import TrainingTestSupport
import XCTest

final class ReportTests: XCTestCase {
    func writeRun(_ records: [[String: Any]], trailing: String = "") throws -> String {
        let dir = NSTemporaryDirectory() + "lockstep-report-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        var text = ""
        for r in records { text += String(decoding: try JSONSerialization.data(withJSONObject: r, options: [.sortedKeys]), as: UTF8.self) + "\n" }
        try (text + trailing).write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
        return dir
    }

    func epochs(_ n: Int, mode: String, trainLoss: (Int) -> Double, testLoss: (Int) -> Double, acc: (Int) -> Double) -> [[String: Any]] {
        (1...n).map { e in
            ["kind": "epoch", "epoch": e, "step": e * 10, "train_loss": trainLoss(e), "test_loss": testLoss(e),
             "train_accuracy": acc(e) + 0.02, "test_accuracy": acc(e), "seconds_per_step": 0.05,
             "communication_seconds_per_step": 0.01, "bn_mode": mode, "world_size": 4, "ece": 0.02,
             "lr": 0.1, "test_samples": 100, "overconfidence": 0.01, "samples_per_second": 1000.0,
             "gradient_allreduce_seconds_per_step": 0.005, "elapsed_seconds": Double(e),
             "running_mean_spread": mode == "local" ? 0.125 : NSNull()] as [String: Any]
        }.map { $0.filter { !($0.value is NSNull) } }
    }

    final class Collector: NSObject, XMLParserDelegate {
        var polylines: [(name: String, points: Int)] = []
        var elements = 0
        func parser(_ parser: XMLParser, didStartElement name: String, namespaceURI: String?, qualifiedName: String?, attributes: [String: String] = [:]) {
            elements += 1
            if name == "polyline" {
                let pts = attributes["points"]!.split(separator: " ").count
                XCTAssertEqual(pts, Int(attributes["data-points"]!))
                polylines.append((attributes["data-name"]!, pts))
            }
        }
    }

    func parseXML(_ text: String) -> Collector? {
        let parser = XMLParser(data: Data(text.utf8))
        let c = Collector()
        parser.delegate = c
        return parser.parse() ? c : nil
    }

    func testReportFilesAreWellFormedWithExpectedSeries() throws {
        let sync = try writeRun(epochs(6, mode: "sync", trainLoss: { 1.0 / Double($0) }, testLoss: { 1.1 / Double($0) }, acc: { 0.8 + 0.01 * Double($0) }))
        let local = try writeRun(epochs(6, mode: "local", trainLoss: { 1.2 / Double($0) }, testLoss: { 1.3 / Double($0) }, acc: { 0.7 + 0.01 * Double($0) }))
        let report = Report(title: "t <&> test", runs: [try RunMetrics.load(sync), try RunMetrics.load(local)])
        let out = NSTemporaryDirectory() + "lockstep-report-out-\(UUID().uuidString)"
        try report.write(to: out)
        for (file, series) in [("test-accuracy.svg", 2), ("loss.svg", 4), ("step-time.svg", 2)] {
            let svg = try String(contentsOfFile: out + "/" + file, encoding: .utf8)
            let parsed = try XCTUnwrap(parseXML(svg), "\(file) is not well-formed XML")
            XCTAssertEqual(parsed.polylines.count, series, file)
            XCTAssertTrue(parsed.polylines.allSatisfy { $0.points == 6 }, "\(file): \(parsed.polylines)")
        }
        // The HTML is XHTML-clean enough for an XML parser once the doctype is dropped.
        let html = try String(contentsOfFile: out + "/report.html", encoding: .utf8)
        let body = html.replacingOccurrences(of: "<!DOCTYPE html>", with: "").replacingOccurrences(of: "<meta charset=\"utf-8\">", with: "<meta charset=\"utf-8\"/>")
        let parsed = try XCTUnwrap(parseXML(body), "report.html is not well-formed")
        XCTAssertEqual(parsed.polylines.count, 8)
        XCTAssertTrue(html.contains("t &lt;&amp;&gt; test"))
        // Table numbers equal the metrics.
        let md = try String(contentsOfFile: out + "/report.md", encoding: .utf8)
        XCTAssertTrue(md.contains("| 86.00% | 86.00% | 0.1667 | 0.1833 | 0.0167 | 50.00 | 20.00% | – |"), md)
        XCTAssertTrue(md.contains("| 76.00% | 76.00% | 0.2000 | 0.2167 | 0.0167 | 50.00 | 20.00% | 0.125 |"), md)
    }

    func testDiagnosesOverAndUnderfitting() throws {
        let over = try RunMetrics.load(try writeRun(epochs(8, mode: "sync", trainLoss: { 1.0 / Double($0) },
                                                          testLoss: { $0 <= 4 ? 1.0 / Double($0) : 0.25 + 0.05 * Double($0 - 4) },
                                                          acc: { _ in 0.9 })))
        XCTAssertTrue(over.diagnosis?.contains("overfitted") ?? false, "\(String(describing: over.diagnosis))")
        let under = try RunMetrics.load(try writeRun(epochs(6, mode: "sync", trainLoss: { _ in 1.8 }, testLoss: { _ in 1.9 }, acc: { _ in 0.3 })))
        XCTAssertTrue(under.diagnosis?.contains("underfitted") ?? false)
        let fine = try RunMetrics.load(try writeRun(epochs(6, mode: "sync", trainLoss: { 1.0 / Double($0) }, testLoss: { 1.1 / Double($0) }, acc: { _ in 0.9 })))
        XCTAssertNil(fine.diagnosis)
        // A wobbling rise (as in the early-stopped configs/fmnist-overfit.yaml: minimum at epoch 4,
        // then 0.3688, 0.3533, 0.3567, 0.3853) is still overfitting.
        let wobble = [0.3877, 0.3654, 0.3649, 0.3387, 0.3688, 0.3533, 0.3567, 0.3853]
        let noisy = try RunMetrics.load(try writeRun(epochs(8, mode: "sync", trainLoss: { 1.0 / Double($0) },
                                                           testLoss: { wobble[$0 - 1] }, acc: { _ in 0.9 })))
        XCTAssertTrue(noisy.diagnosis?.contains("bottomed out at epoch 4") ?? false, "\(String(describing: noisy.diagnosis))")
        // A minimum only 2 epochs back, or a rise of under 2%, is not called overfitting.
        let recent = try RunMetrics.load(try writeRun(epochs(8, mode: "sync", trainLoss: { 1.0 / Double($0) },
                                                            testLoss: { $0 == 6 ? 0.30 : 0.40 - 0.01 * Double($0 > 6 ? 0 : $0) }, acc: { _ in 0.9 })))
        XCTAssertNil(recent.diagnosis, "\(String(describing: recent.diagnosis))")
        let slight = try RunMetrics.load(try writeRun(epochs(8, mode: "sync", trainLoss: { 1.0 / Double($0) },
                                                            testLoss: { $0 == 3 ? 0.300 : 0.305 }, acc: { _ in 0.9 })))
        XCTAssertNil(slight.diagnosis, "\(String(describing: slight.diagnosis))")
    }

    func testMissingAndPartialMetrics() throws {
        let empty = NSTemporaryDirectory() + "lockstep-empty-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
        XCTAssertThrowsError(try RunMetrics.load(empty)) { XCTAssertTrue("\($0)".contains("no metrics file"), "\($0)") }
        let partial = try writeRun(epochs(3, mode: "sync", trainLoss: { 1.0 / Double($0) }, testLoss: { 1.0 / Double($0) }, acc: { _ in 0.9 }),
                                   trailing: "{\"kind\": \"epoch\", \"epo")
        let m = try RunMetrics.load(partial)
        XCTAssertEqual(m.epochs.count, 3)
        XCTAssertEqual(m.warnings.count, 1)
        XCTAssertTrue(m.warnings[0].contains("truncated last line"))
        let corrupt = try writeRun([], trailing: "not json\n{\"kind\":\"epoch\",\"epoch\":1}\n")
        XCTAssertThrowsError(try RunMetrics.load(corrupt)) { XCTAssertTrue("\($0)".contains("metrics.jsonl:1: not a JSON object"), "\($0)") }
    }

    func testTicksAreNiceAndCoverTheRange() {
        let unit = LineChart.ticks(0, 1)
        XCTAssertEqual(unit.count, 6)
        for (a, b) in zip(unit, [0, 0.2, 0.4, 0.6, 0.8, 1.0]) { XCTAssertEqual(a, b, accuracy: 1e-9) }
        XCTAssertEqual(LineChart.label(0.6000000000000001), "0.6")
        let t = LineChart.ticks(0.83, 0.94)
        XCTAssertTrue(t.first! >= 0.83 - 1e-9 && t.last! <= 0.94 + 1e-9 && t.count >= 3, "\(t)")
    }

    func testChartWrapsALongTitleAndMarksValuesBelowItsFloor() {
        var chart = LineChart(title: String(repeating: "word ", count: 40), xLabel: "x", yLabel: "y",
                              series: [Series(name: "a", points: [(1, 91), (2, 62.94), (3, 90)])])
        chart.yFloor = 85
        let svg = chart.svg
        // 40 words of 5 characters do not fit one line at 640-odd pixels: at least three lines.
        XCTAssertGreaterThanOrEqual(svg.components(separatedBy: "font-weight=\"bold\">word").count - 1, 3, svg)
        // The point at 62.94 is drawn at the floor, hollow, with its value; the others are not.
        XCTAssertTrue(svg.contains(">62.9 ↓</text>"), svg)
        XCTAssertEqual(svg.components(separatedBy: "fill=\"white\" stroke=").count - 1, 1, svg)
    }
}
