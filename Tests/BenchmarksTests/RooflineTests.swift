// The roofline's work counts against hand-computed values, and its measured roofs are sane.
@testable import Benchmarks
import Collectives
import Foundation
import NN
@testable import Training
import TrainingTestSupport
import XCTest

final class RooflineTests: XCTestCase {
    func testWorkPerSampleByHand() throws {
        let model = try ModelBuilder(communicator: SingleProcessCommunicator()).build(
            [.conv(out: 8, kernel: 3, stride: 1, padding: 1, bias: false, initializer: nil), .relu, .flatten,
             .dense(out: 10, bias: true, initializer: nil)], inputShape: [2, 5, 5])
        // conv: 2 FLOPs × (8·2·3·3 weights) × 5·5 outputs = 7,200; dense: 2 × 200·10 = 4,000.
        XCTAssertEqual(Roofline.work(model.layers[0]).flops, 7200)
        XCTAssertEqual(Roofline.work(model.layers[3]).flops, 4000)
        // relu: 200 floats in and 200 out, 4 bytes each.
        XCTAssertEqual(Roofline.work(model.layers[1]).bytes, 1600)
        XCTAssertEqual(Roofline.work(model.layers[2]).bytes, 0, "flatten is a view")
    }

    func testMeasuredRoofsAreSaneAndTheTableNamesEveryLayer() throws {
        let r = Roofline.measure(repeats: 1)
        // Any CPU this runs on does between 1 and 10,000 GFLOP/s on one sgemm and copies between
        // 0.5 and 2,000 GB/s: the bounds only catch unit mistakes (10^3 or 10^9 off).
        XCTAssertTrue((1...10_000).contains(r.peakGFLOPs), "\(r.peakGFLOPs)")
        XCTAssertTrue((0.5...2_000).contains(r.bandwidthGBs), "\(r.bandwidthGBs)")
        let model = try ModelBuilder(communicator: SingleProcessCommunicator()).build(
            [.flatten, .dense(out: 4, bias: true, initializer: nil), .relu], inputShape: [1, 4, 4])
        let lines = r.table(layers: model.layers, forward: [0, 1e-3, 1e-4], backward: [0, 2e-3, 1e-4], samplesPerStep: 32, stepSeconds: 1e-2)
        XCTAssertEqual(lines.count, 2 + 3)
        XCTAssertTrue(lines[2].contains("view"))
        // dense: 2·16·4 FLOPs × 32 samples = 4,096 FLOPs in 1 ms = 0.004 GFLOP/s.
        XCTAssertTrue(lines[3].contains("gemm") && lines[3].contains("0.0 GF/s"), lines[3])
        XCTAssertTrue(lines[4].contains("memory") && lines[4].contains("GB/s"), lines[4])
    }
}
