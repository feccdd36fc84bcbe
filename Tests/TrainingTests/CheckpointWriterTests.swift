// The background checkpoint writer: snapshots taken into its reused storage are encoded and
// written whole and in order, one write at a time; a write that fails is reported (naming the
// file) by the next checkpoint or the run's end.
import Collectives
import Formats
import Foundation
@testable import Training
import TrainingTestSupport
import XCTest

final class CheckpointWriterTests: XCTestCase {
    func testSnapshotsLandInOrderFromReusedStorageAndAFailureIsReportedByName() throws {
        let dir = makeTempDir("lockstep-writer"), writer = CheckpointWriter()
        let n = 2 << 20   // 8 MB of floats: each write takes a while
        var source = [Float](repeating: 0, count: n)
        for step in 1...4 {
            for i in stride(from: 0, to: n, by: 4096) { source[i] = Float(step) }
            source[n - 1] = Float(step)
            // The snapshot copies `source` now; the next loop iteration changes it while the
            // write may still be running, so a write that read the state late would show it.
            let snapshot = try source.withUnsafeBufferPointer { s in
                try CheckpointSnapshot(metadata: ["step": "\(step)"], sources: [("w", [n], s)]) { try writer.storage(bytes: $0) }
            }
            XCTAssertEqual(Int(bitPattern: snapshot.image.baseAddress) % directWriteAlignment, 0, "page-aligned, for a direct write")
            XCTAssertEqual(Array(snapshot.image), try snapshot.encode(), "the image is the file's bytes")
            try writer.submit(snapshot, to: [dir + "/" + Checkpointer.fileName(step: step)], prune: (dir, 2))
        }
        try writer.wait()
        XCTAssertFalse(BackgroundWork.isPending, "each write ends the background work it began: nothing to yield to")
        let kept = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        XCTAssertEqual(kept, [Checkpointer.fileName(step: 3), Checkpointer.fileName(step: 4)], "pruned to the newest 2, nothing temporary left")
        for step in 3...4 {
            let path = dir + "/" + Checkpointer.fileName(step: step)
            let file = try SafeTensorsFile.read(path: path)
            XCTAssertEqual(file.metadata["step"], "\(step)")
            let w = file.values(try XCTUnwrap(file.entry("w")))
            XCTAssertEqual(w.count, n)
            XCTAssertEqual(Set(stride(from: 0, to: n, by: 4096).map { w[$0] }), [Float(step)], "step \(step): the state as it was when taken")
            XCTAssertEqual(w[n - 1], Float(step))
        }
        let one = try CheckpointSnapshot(metadata: [:], sources: []) { try writer.storage(bytes: $0) }
        try writer.submit(one, to: [dir + "/gone/best.safetensors"], prune: nil)
        XCTAssertThrowsError(try writer.wait()) { XCTAssertTrue("\($0)".contains("gone/best.safetensors"), "\($0)") }
        XCTAssertFalse(BackgroundWork.isPending, "a failed write ends its work too")
        XCTAssertNoThrow(try writer.wait(), "a failure is reported once")
    }
}
