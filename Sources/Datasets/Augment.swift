// Augmentations keyed by (seed, epoch, global sample index): a sample is augmented the same
// way whichever rank processes it. Geometric ones (flip, crop, translation) move pixels; random
// erasing and Gaussian noise then act on the normalised values.
import Foundation
import TensorCore

public struct Augmentation: Sendable, Equatable {
    public var horizontalFlip: Bool
    /// Random crop after zero-padding by this many pixels on each side (0 disables).
    public var cropPadding: Int
    /// Random translation by up to this fraction of the height and width (0 disables), filled
    /// like the crop's padding; torchvision's RandomAffine(translate=(t, t)) in integer pixels.
    public var translate: Double
    /// Random erasing (Zhong et al. 2020; "cutout" of DeVries & Taylor 2017 with random size):
    /// with probability `erasingProbability`, a rectangle covering a uniform fraction of the image
    /// in `erasingArea` with aspect ratio log-uniform in [`erasingAspect`, 1/`erasingAspect`] is
    /// set to 0, the normalised mean. Probability 0 disables.
    public var erasingProbability: Double
    public var erasingArea: ClosedRange<Double>
    public var erasingAspect: Double
    /// Standard deviation of Gaussian noise added to every normalised value (0 disables).
    public var noise: Double
    /// Random resized crop (image folders whose stored square is larger than the sample): the
    /// box's area as a fraction of the square, and its aspect-ratio range; nil disables.
    public var resizedCropScale: ClosedRange<Double>? = nil
    public var resizedCropRatio: ClosedRange<Double> = 0.75...(4.0 / 3.0)

    public init(horizontalFlip: Bool = false, cropPadding: Int = 0, translate: Double = 0,
                erasingProbability: Double = 0, erasingArea: ClosedRange<Double> = 0.02...0.33,
                erasingAspect: Double = 0.3, noise: Double = 0) {
        self.horizontalFlip = horizontalFlip
        self.cropPadding = cropPadding
        self.translate = translate
        self.erasingProbability = erasingProbability
        self.erasingArea = erasingArea
        self.erasingAspect = erasingAspect
        self.noise = noise
    }

    public var isIdentity: Bool {
        !horizontalFlip && cropPadding == 0 && translate == 0 && erasingProbability == 0 && noise == 0 && resizedCropScale == nil
    }

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
        if translate > 0 {
            let s = rng.stream(.translate, epoch, index)
            let my = Int((translate * Double(h)).rounded()), mx = Int((translate * Double(w)).rounded())
            dy += s.below(2 * my + 1, 0) - my
            dx += s.below(2 * mx + 1, 1) - mx
        }
        if let scale = resizedCropScale, dataset.storedShape != dataset.sampleShape {
            let box = Self.resizedCropBox(side: dataset.storedShape[1], scale: scale, ratio: resizedCropRatio,
                                          stream: rng.stream(.resizedCrop, epoch, index))
            dataset.copyRegion(index, box, into: out)
        } else {
            dataset.copySample(index, into: out)
        }
        if flip || dy != 0 || dx != 0 {
            move(out, c: c, h: h, w: w, flip: flip, dy: dy, dx: dx, padValue: padValue, count: dataset.sampleSize)
        }
        if erasingProbability > 0 { erase(out, c: c, h: h, w: w, stream: rng.stream(.erasing, epoch, index)) }
        if noise > 0 {
            let s = rng.stream(.noise, epoch, index), sigma = Float(noise)
            for i in 0..<dataset.sampleSize { out[i] += sigma * s.normal(i) }
        }
    }

    /// Shifts (and mirrors) every plane: output pixel (y, x) reads (y + dy, x' + dx) where x' is
    /// x or its mirror; reads outside the image give `padValue`.
    private func move(_ out: UnsafeMutablePointer<Float>, c: Int, h: Int, w: Int, flip: Bool,
                      dy: Int, dx: Int, padValue: Float, count: Int) {
        let scratch = UnsafeMutablePointer<Float>.allocate(capacity: count)
        defer { scratch.deallocate() }
        scratch.update(from: out, count: count)
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

    /// The rectangle random erasing picks for a stream, or nil when it leaves the sample alone:
    /// (top, left, height, width), always inside the image and at least one pixel.
    func erasingBox(h: Int, w: Int, stream s: PhiloxStream) -> (y: Int, x: Int, h: Int, w: Int)? {
        guard Double(s.uniform(0)) < erasingProbability else { return nil }
        let area = erasingArea.lowerBound + Double(s.uniform(1)) * (erasingArea.upperBound - erasingArea.lowerBound)
        let logAspect = log(erasingAspect) * (1 - 2 * Double(s.uniform(2)))
        let target = area * Double(h * w), aspect = exp(logAspect)
        let eh = min(h, max(1, Int((target * aspect).squareRoot().rounded())))
        let ew = min(w, max(1, Int((target / aspect).squareRoot().rounded())))
        return (s.below(h - eh + 1, 3), s.below(w - ew + 1, 4), eh, ew)
    }

    private func erase(_ out: UnsafeMutablePointer<Float>, c: Int, h: Int, w: Int, stream: PhiloxStream) {
        guard let box = erasingBox(h: h, w: w, stream: stream) else { return }
        for ch in 0..<c {
            for y in box.y..<(box.y + box.h) {
                (out + ch * h * w + y * w + box.x).update(repeating: 0, count: box.w)
            }
        }
    }
}
