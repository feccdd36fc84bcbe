// The logits of an evaluated split, gathered in sample order on every rank (written by
// Formats' ArrayFile as .npy or .safetensors, so another runtime can be compared sample by sample).
import Collectives
import Formats
import Foundation
import TensorCore

extension Trainer {
    /// Evaluates the test split and returns every sample's logits (divided by the temperature),
    /// (count, classes) row-major in sample order, identical on every rank, with the labels.
    public func testLogits() throws -> (logits: [Float], labels: [Int32], result: EvaluationResult) {
        let classes = config.data.classes, count = testLoader.dataset.count
        var own = [Float]()
        let result = try evaluate(testLoader) { batch, labels in
            own += UnsafeBufferPointer(start: batch.data, count: labels.count * classes)
        }
        let share = testLoader.evaluationShare(rank: rank, worldSize: worldSize, batch: config.data.evalBatch)
        precondition(own.count == share.range.count * classes, "evaluation covered this rank's share")
        let all = try gatherRows(own, rows: share.range, totalRows: count, width: classes, communicator: communicator)
        return (all, testLoader.dataset.labels, result)
    }
}

/// Joins each rank's rows `rows` (of `width` floats) into the whole (totalRows × width) matrix
/// on every rank, in row order: each rank writes its rows into zeros and a sum gathers them
/// (x + 0 is x; a −0 would come back as +0, the same value).
public func gatherRows(_ own: [Float], rows: Range<Int>, totalRows: Int, width: Int, communicator: Communicator) throws -> [Float] {
    precondition(own.count == rows.count * width)
    var all = [Float](repeating: 0, count: totalRows * width)
    all.replaceSubrange((rows.lowerBound * width)..<(rows.upperBound * width), with: own)
    if communicator.size > 1 { try communicator.allReduce(&all, op: .sum) }
    return all
}
