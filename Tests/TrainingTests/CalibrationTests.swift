// Calibration: the metrics' arithmetic against hand-computed values, temperature scaling's fit
// against an independent NLL, its world-size invariance, and `lockstep calibrate` end to end.
import Collectives
import Configuration
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class CalibrationTests: XCTestCase {
    func testMetricsOfTwoSamplesByHand() throws {
        // Sample 1: logits (ln 3, 0), label 0: p = (0.75, 0.25), correct, confidence 0.75.
        // Sample 2: logits (0, 0), label 1: p = (0.5, 0.5), arg-max 0 (first of ties), wrong, confidence 0.5.
        var sums = CalibrationSums(classes: 2)
        for (z, label) in [([Float(log(3.0)), 0], 1 - 1), ([Float(0), 0], 1)] {
            var m = z.max()!
            let e = z.map { exp($0 - m) }
            m = e.reduce(0, +)
            let p = e.map { $0 / m }
            z.withUnsafeBufferPointer { zb in p.withUnsafeBufferPointer { pb in
                sums.add(logits: zb.baseAddress!, probabilities: pb.baseAddress!, label: label)
            } }
        }
        sums.sums.add(2, 2)   // the sample count comes with the loss's batch sums
        let r = try sums.result(SingleProcessCommunicator())
        // NLL: (−ln 0.75 − ln 0.5)/2. Brier: ((0.25² + 0.25²) + (0.5² + 0.5²))/2 = 0.3125.
        XCTAssertEqual(r.negativeLogLikelihood, (-log(0.75) - log(0.5)) / 2, accuracy: 1e-6, "Float probabilities, Double sums: 1e-6 is ample")
        XCTAssertEqual(r.brierScore, 0.3125, accuracy: 1e-6)
        // Bins of width 1/15: 0.75 falls in bin 11, 0.5 in bin 7; each holds one sample.
        // ECE = (|0.75 − 1| + |0.5 − 0|)/2 = 0.375; MCE = 0.5.
        XCTAssertEqual(r.expectedCalibrationError, 0.375, accuracy: 1e-6)
        XCTAssertEqual(r.maximumCalibrationError, 0.5, accuracy: 1e-6)
        XCTAssertEqual(r.reliability.filter { $0.count > 0 }.map { $0.lower * 15 }, [7, 11])
        XCTAssertEqual(r.reliability.count, 15)
    }

    func trainer(ranks: Int, steps: Int = 40, split: Double = 0.25) throws -> [(fit: TemperatureFit, logits: [Float], labels: [Int32], test: EvaluationResult)] {
        let config = try TrainingConfig.parse(yaml: smallCNNConfig(), file: "cal.yaml",
                                              overrides: ["train.max_steps=\(steps)", "data.validation_split=\(split)",
                                                          "train.exact=true", "train.chunk=4"])
        let data = makeData()
        return try ThreadCommunicator.run(size: ranks) { comm in
            let t = try Trainer(config: config, communicator: comm, data: data, console: Console(isEnabled: false))
            _ = try t.run()
            let fit = try t.fitTemperature()
            var logits = [Float](), labels = [Int32]()
            _ = try t.evaluate(t.validationLoader, indices: t.validationIndices) { b, l in
                logits += UnsafeBufferPointer(start: b.data, count: l.count * 4); labels += l
            }
            t.temperature = Float(fit.temperature)
            return (fit, logits, labels, try t.evaluate())
        }
    }

    /// Mean NLL of logits/T, in Double, written independently of Calibration.swift.
    func referenceNLL(_ logits: [Float], _ labels: [Int32], temperature t: Double) -> Double {
        var total = 0.0
        for (i, y) in labels.enumerated() {
            let row = logits[(i * 4)..<(i * 4 + 4)].map { Double($0) / t }
            let m = row.max()!
            total += m + log(row.map { exp($0 - m) }.reduce(0, +)) - row[Int(y)]
        }
        return total / Double(labels.count)
    }

    func testTheFittedTemperatureMinimisesTheValidationNLL() throws {
        let r = try trainer(ranks: 1)[0]
        XCTAssertEqual(r.labels.count, 60, "a quarter of 240 samples is held out")
        let t = r.fit.temperature
        let atT = referenceNLL(r.logits, r.labels, temperature: t)
        XCTAssertEqual(atT, r.fit.nllAfter, accuracy: 1e-9 * max(1, atT), "the fit reports the NLL at its T")
        XCTAssertEqual(referenceNLL(r.logits, r.labels, temperature: 1), r.fit.nllBefore, accuracy: 1e-9 * max(1, atT))
        // A minimum: 1% either side is worse (the NLL is smooth and convex in 1/T; 1% moves it by
        // far more than the golden-section bracket of ~1e-12).
        XCTAssertLessThan(atT, referenceNLL(r.logits, r.labels, temperature: t * 1.01))
        XCTAssertLessThan(atT, referenceNLL(r.logits, r.labels, temperature: t / 1.01))
        XCTAssertLessThanOrEqual(r.fit.nllAfter, r.fit.nllBefore)
        XCTAssertEqual(r.test.temperature, Float(t).doubleValue, accuracy: 0)
    }

    func testTheFitHasTheSameBitsOnAnyNumberOfRanks() throws {
        let one = try trainer(ranks: 1)[0], three = try trainer(ranks: 3)
        for r in three {
            XCTAssertEqual(r.fit.temperature.bitPattern, one.fit.temperature.bitPattern)
            XCTAssertEqual(r.test.negativeLogLikelihood.bitPattern, one.test.negativeLogLikelihood.bitPattern)
            XCTAssertEqual(r.test.expectedCalibrationError.bitPattern, one.test.expectedCalibrationError.bitPattern)
        }
    }

    func testWithoutAValidationSplitTheFitIsRefused() throws {
        XCTAssertThrowsError(try trainer(ranks: 1, steps: 2, split: 0)) {
            XCTAssertTrue("\($0)".contains("needs a validation split"), "\($0)")
        }
    }

    func testStoredTemperatureIsValidated() throws {
        XCTAssertEqual(try CheckpointMetadata.temperature([:], path: "c"), 1)
        XCTAssertEqual(try CheckpointMetadata.temperature(["temperature": "1.5"], path: "c"), 1.5)
        for bad in ["0", "-2", "nan", "inf", "warm"] {
            XCTAssertThrowsError(try CheckpointMetadata.temperature(["temperature": bad], path: "c.safetensors")) {
                XCTAssertTrue("\($0)".contains("c.safetensors") && "\($0)".contains("temperature"), "\($0)")
            }
        }
    }
}

final class CalibrateCommandTests: XCTestCase {
    let cli = CLI()

    func testCalibrateStoresTheTemperatureAndDrawsTheDiagram() throws {
        guard FileManager.default.isExecutableFile(atPath: cli.lockstep) else { throw XCTSkip("\(cli.lockstep) not built") }
        let data = try writeIDXDirectory(), dir = makeTempDir()
        let config = try cli.writeConfig(smallCNNConfig(dataPath: data))
        let train = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)/run",
                                 "--set", "train.epochs=3", "--set", "train.max_steps=0", "--set", "data.validation_split=0.2"])
        XCTAssertEqual(train.status, 0, train.output)
        let checkpoint = "\(dir)/run/best.safetensors"
        let before = try Data(contentsOf: URL(fileURLWithPath: checkpoint))

        let dry = try cli.run([cli.lockstep, "calibrate", "--checkpoint", checkpoint, "--dry-run", "--out", "\(dir)/dry"])
        XCTAssertEqual(dry.status, 0, dry.output)
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: checkpoint)), before, "--dry-run leaves the checkpoint alone")

        let cal = try cli.run([cli.lockstep, "calibrate", "--checkpoint", checkpoint, "--simulate-ranks", "2"])
        XCTAssertEqual(cal.status, 0, cal.output)
        XCTAssertTrue(cal.output.contains("confident"), cal.output)
        for line in ["validation", "test"] { XCTAssertTrue(cal.output.contains(line), cal.output) }
        let file = try SafeTensorsFile.read(path: checkpoint)
        let t = try XCTUnwrap(file.metadata["temperature"].flatMap(Float.init), "the checkpoint stores the temperature")
        XCTAssertTrue(cal.output.contains(String(format: "temperature %.4f", Double(t))), cal.output)
        XCTAssertEqual(file.entries.count, try SafeTensorsFile(bytes: [UInt8](before), path: "before").entries.count)
        let png = try Data(contentsOf: URL(fileURLWithPath: "\(dir)/run/reliability.png"))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A])
        let svg = try String(contentsOfFile: "\(dir)/run/reliability.svg", encoding: .utf8)
        XCTAssertTrue(svg.contains("ECE") && svg.hasSuffix("</svg>\n"))

        let eval = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint])
        XCTAssertTrue(eval.output.contains("(temperature"), eval.output)
        let raw = try cli.run([cli.lockstep, "eval", "--checkpoint", checkpoint, "--uncalibrated"])
        XCTAssertFalse(raw.output.contains("(temperature"), raw.output)

        // A run without a validation split: one line naming the missing split, non-zero exit.
        let noSplit = try cli.run([cli.lockstep, "train", "--config", config, "--set", "output.dir=\(dir)/nosplit", "--set", "train.max_steps=2"])
        XCTAssertEqual(noSplit.status, 0, noSplit.output)
        let refused = try cli.run([cli.lockstep, "calibrate", "--checkpoint", "\(dir)/nosplit/best.safetensors"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.output.contains("data.validation_split"), refused.output)
    }
}

extension Float { var doubleValue: Double { Double(self) } }
