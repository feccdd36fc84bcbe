// The file formats on their own: safetensors written and read back bit for bit (and refused by
// name when cut short), the hand-written header against Foundation's JSON parser, checkpoint
// metadata checks, metrics.jsonl records through the one schema, CRC-32C against its published
// check value, and atomic writes (whole images with O_DIRECT, and the page-cache fallback).
import Formats
import Foundation
import XCTest

final class FormatsTests: XCTestCase {
    func testSafeTensorsRoundTripKeepsEveryBitAndTheMetadata() throws {
        // Values chosen to catch byte-order and rounding mistakes: a subnormal, -0, a NaN payload.
        let a: [Float] = [1, -0.0, .leastNonzeroMagnitude, Float(bitPattern: 0x7FC0_1234), 3.25, -1e30]
        let b: [Float] = [0.5, 2]
        let bytes = try a.withUnsafeBufferPointer { pa in
            try b.withUnsafeBufferPointer { pb in
                try SafeTensorsFile.encode(tensors: [("w", [2, 3], pa), ("b", [2], pb)], metadata: ["step": "7", "note": "ü"])
            }
        }
        XCTAssertEqual(bytes.count % 8, 0, "the header is padded so the data starts 8-byte aligned, and the data is whole floats")
        let file = try SafeTensorsFile(bytes: bytes, path: "t.safetensors")
        XCTAssertEqual(file.metadata, ["step": "7", "note": "ü"])
        let w = try XCTUnwrap(file.entry("w"))
        XCTAssertEqual(w.shape, [2, 3])
        XCTAssertEqual(file.values(w).map(\.bitPattern), a.map(\.bitPattern))
        XCTAssertEqual(file.values(try XCTUnwrap(file.entry("b"))), b)
        let updated = try SafeTensorsFile(bytes: try file.encoded(updatingMetadata: ["step": "8"]), path: "u")
        XCTAssertEqual(updated.metadata["step"], "8")
        XCTAssertEqual(updated.values(try XCTUnwrap(updated.entry("w"))).map(\.bitPattern), a.map(\.bitPattern))

        // Every cut of the file is refused with a line naming it, never a crash or a wrong read.
        for cut in [0, 4, 8, 20, bytes.count - 4] {
            XCTAssertThrowsError(try SafeTensorsFile(bytes: Array(bytes.prefix(cut)), path: "cut.safetensors"), "cut at \(cut)") {
                XCTAssertTrue("\($0)".contains("cut.safetensors"), "\($0)")
            }
        }
    }

    func testHeaderIsJSONThatFoundationParsesBackExactly() throws {
        // Every character JSON must escape (quotes, backslash, each control character), a
        // multi-byte one, and keys whose UTF-8 order differs from their length order.
        let tricky = "q\"b\\s/n\nt\tr\r" + String((0..<32).map { Character(Unicode.Scalar(UInt8($0))) }) + "ü€𝄞"
        let metadata = ["config": tricky, "a": "", "Z": "1", "step": "12"]
        let tensors = [(name: "w\"1", shape: [2, 3], count: 6), (name: "b", shape: [3], count: 3), (name: "e", shape: [0], count: 0)]
        let head = try SafeTensorsFile.header(tensors: tensors, metadata: metadata)
        XCTAssertEqual(head.count % 8, 0)
        var n = 0
        for i in 0..<8 { n |= Int(head[i]) << (8 * i) }
        XCTAssertEqual(n, head.count - 8)
        let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(head[8...])) as? [String: Any])
        XCTAssertEqual(object["__metadata__"] as? [String: String], metadata)
        XCTAssertEqual(Set(object.keys), ["__metadata__", "w\"1", "b", "e"])
        var offset = 0
        for t in tensors {
            let entry = try XCTUnwrap(object[t.name] as? [String: Any], t.name)
            XCTAssertEqual(entry["dtype"] as? String, "F32")
            XCTAssertEqual(entry["shape"] as? [Int], t.shape)
            XCTAssertEqual(entry["data_offsets"] as? [Int], [offset, offset + 4 * t.count], t.name)
            offset += 4 * t.count
        }
        XCTAssertThrowsError(try SafeTensorsFile.header(tensors: [("x", [1], 1), ("x", [1], 1)], metadata: [:])) {
            XCTAssertTrue("\($0)".contains("x"), "\($0)")
        }
    }

    func testStoredTemperatureIsValidatedByName() throws {
        XCTAssertEqual(try CheckpointMetadata.temperature([:], path: "c"), 1, "absent: no calibration")
        XCTAssertEqual(try CheckpointMetadata.temperature([CheckpointMetadata.temperatureKey: "0.75"], path: "c"), 0.75)
        for bad in ["0", "-1", "nan", "inf", ""] {
            XCTAssertThrowsError(try CheckpointMetadata.temperature(["temperature": bad], path: "m.safetensors")) {
                XCTAssertTrue("\($0)".contains("m.safetensors") && "\($0)".contains("'temperature'"), "\($0)")
            }
        }
    }

    func testMetricsRecordsEncodeAndDecodeThroughOneSchema() throws {
        let record = TrainProgress(step: 12, epoch: 0.5, learningRate: 0.05, trainLoss: 1.25, trainAccuracy: 0.5)
        let line = MetricsCoding.line(record)
        let text = String(decoding: line, as: UTF8.self)
        XCTAssertTrue(text.contains("\"kind\":\"train\"") && text.contains("\"lr\":0.05"), text)
        XCTAssertEqual(try JSONDecoder().decode(TrainProgress.self, from: line), record)
        let numbers = MetricsCoding.numbers(line)
        XCTAssertEqual(numbers.map(\.0), ["lr", "train_accuracy", "train_loss"], "step, epoch and strings are not scalars")
    }

    func testCRC32CMatchesItsCheckValue() {
        // The CRC-32C (Castagnoli) check value of "123456789" is 0xE3069283 (RFC 3720, B.4).
        XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
        XCTAssertEqual(CRC32C.checksum([]), 0)
    }

    func testAtomicWriteReplacesWholeFilesAndLeavesNoTemporary() throws {
        let dir = NSTemporaryDirectory() + "lockstep-formats-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/f.bin"
        try writeAtomically([1, 2, 3], to: path)
        try writeAtomically([9], to: path)
        XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), [9])
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["f.bin"])
        XCTAssertThrowsError(try writeAtomically([1], to: dir + "/missing/f.bin")) {
            XCTAssertTrue("\($0)".contains("missing/f.bin"), "\($0)")
        }
    }

    func testImageWritesGiveTheImageBytesDirectOrNot() throws {
        // A page-aligned image is written with O_DIRECT in whole pages and cut to its length; an
        // unaligned one, or one without room for whole pages, through the page cache. The file
        // must hold exactly the image's bytes either way, in a directory on disk and in /dev/shm
        // (tmpfs, which may refuse O_DIRECT: the fallback).
        let count = 3 * directWriteAlignment + 1234
        let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 * directWriteAlignment + 8, alignment: directWriteAlignment)
        defer { storage.deallocate() }
        for i in 0..<storage.count { storage[i] = UInt8(truncatingIfNeeded: (i &* 2654435761) >> 13) }
        var dirs = [NSTemporaryDirectory() + "lockstep-direct-\(UUID().uuidString)"]
        if FileManager.default.fileExists(atPath: "/dev/shm") { dirs.append("/dev/shm/lockstep-direct-\(UUID().uuidString)") }
        for dir in dirs {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(atPath: dir) }
            let cases: [(String, UnsafeRawBufferPointer, Int)] = [
                ("aligned", UnsafeRawBufferPointer(start: storage.baseAddress, count: count), storage.count),
                ("no room for whole pages", UnsafeRawBufferPointer(start: storage.baseAddress, count: count), count),
                ("unaligned", UnsafeRawBufferPointer(start: storage.baseAddress! + 8, count: count), storage.count - 8),
                ("whole pages", UnsafeRawBufferPointer(start: storage.baseAddress, count: 2 * directWriteAlignment), storage.count),
            ]
            for (what, image, capacity) in cases {
                let path = dir + "/f.bin"
                try writeAtomically(image: image, capacity: capacity, to: path)
                XCTAssertEqual([UInt8](try Data(contentsOf: URL(fileURLWithPath: path))), Array(image), "\(dir): \(what)")
                XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["f.bin"], "no temporary left")
            }
            XCTAssertThrowsError(try writeAtomically(image: UnsafeRawBufferPointer(storage), capacity: storage.count, to: dir + "/missing/f.bin")) {
                XCTAssertTrue("\($0)".contains("missing/f.bin"), "\($0)")
            }
        }
    }
}
