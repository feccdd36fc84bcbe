// The loader's prefetch: a batch read ahead on the background thread is the batch a plain load
// gives (augmented, with its labels); a prefetch for other samples is dropped, not returned.
import Datasets
import Foundation
import TensorCore
import XCTest

final class PrefetchTests: XCTestCase {
    func testAPrefetchedBatchIsTheBatchALoadGives() throws {
        let count = 40, side = 6
        let bytes = (0..<(count * side * side)).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let data = ImageDataset(name: "t", sampleShape: [1, side, side], classes: 3, bytes: bytes,
                                labels: (0..<count).map { Int32($0 % 3) }, mean: 0.4, std: 0.2)
        var augment = Augmentation()
        augment.horizontalFlip = true
        augment.cropPadding = 1
        let plain = BatchLoader(dataset: data, augmentation: augment, seed: 9, padValue: -2, chunk: nil)
        let ahead = BatchLoader(dataset: data, augmentation: augment, seed: 9, padValue: -2, chunk: nil, prefetch: true)
        let batches = [[3, 17, 5, 0], [39, 1, 2, 8], [8, 9]]
        for (k, indices) in batches.enumerated() {
            if k == 0 { ahead.prefetch(indices, epoch: 1) }
            let want = try plain.load(indices, epoch: 1)
            let wantValues = Array(UnsafeBufferPointer(start: want.x.data, count: want.x.count))
            let got = try ahead.load(indices, epoch: 1)
            if k + 1 < batches.count { ahead.prefetch(batches[k + 1], epoch: 1) }
            XCTAssertEqual(Array(UnsafeBufferPointer(start: got.x.data, count: got.x.count)), wantValues, "batch \(k)")
            XCTAssertEqual(got.labels, want.labels)
            XCTAssertEqual(got.labels, indices.map { Int32($0 % 3) })
        }
        // A prefetch for other samples (or another epoch) is not what load returns.
        ahead.prefetch([4, 5], epoch: 1)
        let other = try ahead.load([6, 7], epoch: 1)
        XCTAssertEqual(other.labels, [0, 1])
        ahead.prefetch([6, 7], epoch: 2)
        let want = try plain.load([6, 7], epoch: 3)
        let got = try ahead.load([6, 7], epoch: 3)
        XCTAssertEqual(Array(UnsafeBufferPointer(start: got.x.data, count: got.x.count)),
                       Array(UnsafeBufferPointer(start: want.x.data, count: want.x.count)))
    }
}
