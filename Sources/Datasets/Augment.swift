// Augmentations keyed by (seed, epoch, global sample index): a sample is augmented the same
// way whichever rank processes it.
import TensorCore

public struct Augmentation: Sendable, Equatable {
    public var horizontalFlip: Bool
    /// Random crop after zero-padding by this many pixels on each side (0 disables).
    public var cropPadding: Int

    public init(horizontalFlip: Bool = false, cropPadding: Int = 0) {
        self.horizontalFlip = horizontalFlip
        self.cropPadding = cropPadding
    }

    public var isIdentity: Bool { !horizontalFlip && cropPadding == 0 }

    /// Copies sample `index` of `dataset` into `out` (C·H·W floats), augmented for `epoch`.
    /// Padding uses the value that a zero pixel has after normalisation when `padValue` is given.
    public func apply(dataset: ImageDataset, index: Int, epoch: Int, seed: UInt64,
                      padValue: Float, into out: UnsafeMutablePointer<Float>) {
        let c = dataset.sampleShape[0], h = dataset.sampleShape[1], w = dataset.sampleShape[2]
        let rng = Philox(seed: seed)
        let flip = horizontalFlip && rng.stream(.flip, epoch, index).uniform(0) < 0.5
        var dy = 0, dx = 0
        if cropPadding > 0 {
            let s = rng.stream(.crop, epoch, index)
            dy = s.below(2 * cropPadding + 1, 0) - cropPadding
            dx = s.below(2 * cropPadding + 1, 1) - cropPadding
        }
        dataset.copySample(index, into: out)
        if !flip && dy == 0 && dx == 0 { return }
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: dataset.sampleSize)
        defer { scratch.deallocate() }
        scratch.update(from: out, count: dataset.sampleSize)
        let src = UnsafePointer(scratch)
        for ch in 0..<c {
            let plane = src + ch * h * w, dst = out + ch * h * w
            for y in 0..<h {
                let sy = y + dy
                for x in 0..<w {
                    let tx = flip ? w - 1 - x : x
                    let sx = tx + dx
                    dst[y * w + x] = (sy >= 0 && sy < h && sx >= 0 && sx < w) ? plane[sy * w + sx] : padValue
                }
            }
        }
    }
}
