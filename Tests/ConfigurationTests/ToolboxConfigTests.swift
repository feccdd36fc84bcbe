// Config errors and keys of the wider toolbox: early stopping, validation split, activations and
// the augmentations (translation, erasing, noise).
import Configuration
import Foundation
import TestSupport
import Training
import TrainingTestSupport
import XCTest

final class ToolboxConfigTests: XCTestCase {
    let minimal = "model:\n  - flatten\n  - dense: {out: 10}\n"

    func configError(_ body: @autoclosure () throws -> TrainingConfig, mentions parts: [String],
                     file: StaticString = #filePath, line: UInt = #line) {
        assertThrows(try body(), ConfigError.self, message: { $0.message }, mentions: parts, file: file, line: line)
    }

    func testBadToolboxValuesNameTheirKey() {
        let split = minimal + "\ndata:\n  validation_split: 0.4\n"
        let cases: [(String, [String])] = [
            (split + "train:\n  early_stopping: {patience: -1}\n", ["train.early_stopping.patience", "-1"]),
            (minimal + "\ndata:\n  validation_split: 1.5\n", ["data.validation_split", "1.5"]),
            (minimal + "\ndata:\n  validation_split: -0.1\n", ["data.validation_split", "-0.1"]),
            ("model:\n  - flatten\n  - mish\n  - dense: {out: 10}\n", ["model[1]", "mish", "gelu"]),
            (minimal + "\ndata:\n  augment: {translate: 0.9}\n", ["data.augment.translate", "0.9"]),
            (minimal + "\ndata:\n  augment: {erasing: {min_area: 0.5, max_area: 0.1}}\n", ["data.augment.erasing.min_area", "max_area"]),
            (minimal + "\ndata:\n  augment: {noise: -1}\n", ["data.augment.noise"]),
        ]
        for (yaml, parts) in cases {
            configError(try TrainingConfig.parse(yaml: yaml, file: "bad.yaml"), mentions: parts + ["bad.yaml"])
        }
    }

    func testAugmentationKeys() throws {
        let yaml = minimal + "\ndata:\n  augment: {translate: 0.1, noise: 0.05, erasing: {}}\n"
        let a = try TrainingConfig.parse(yaml: yaml, file: "aug.yaml").data.augment
        XCTAssertEqual(a.translate, 0.1)
        XCTAssertEqual(a.noise, 0.05)
        XCTAssertEqual(a.erasingProbability, 0.5, "naming the erasing section turns it on with p = 0.5")
        XCTAssertEqual(a.erasingArea, 0.02...0.33)
        let off = try TrainingConfig.parse(yaml: minimal, file: "aug.yaml").data.augment
        XCTAssertTrue(off.isIdentity)
        let p = try TrainingConfig.parse(yaml: yaml, file: "aug.yaml", overrides: ["data.augment.erasing.p=0.25"]).data.augment
        XCTAssertEqual(p.erasingProbability, 0.25)
    }
}
