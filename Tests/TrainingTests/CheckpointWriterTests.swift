// The background checkpoint writer: files land whole and in order, one write at a time, and a
// write that fails is reported (naming the file) by the next checkpoint or the run's end.
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class CheckpointWriterTests: XCTestCase {
    func testWritesLandInOrderAndAFailureIsReportedByName() throws {
        let dir = makeTempDir("lockstep-writer"), writer = CheckpointWriter()
        let big = [UInt8](repeating: 7, count: 8 << 20)
        for step in 1...4 {
            try writer.submit([(big + [UInt8(step)], dir + "/" + Checkpointer.fileName(step: step))], prune: (dir, 2))
        }
        try writer.wait()
        let kept = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(kept, [Checkpointer.fileName(step: 3), Checkpointer.fileName(step: 4)], "pruned to the newest 2, nothing temporary left")
        XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + Checkpointer.fileName(step: 4))).last, 4)

        try writer.submit([([1], dir + "/gone/best.safetensors")], prune: nil)
        XCTAssertThrowsError(try writer.wait()) { XCTAssertTrue("\($0)".contains("gone/best.safetensors"), "\($0)") }
        XCTAssertNoThrow(try writer.wait(), "a failure is reported once")
    }
}
