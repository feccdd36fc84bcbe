// Samples cut from a larger stored square (image folders with data.resize > data.image_size):
// evaluation takes the centre S × S; training with `random_resized_crop` takes a box of random
// area and aspect ratio (torchvision's RandomResizedCrop, on the stored square) and scales it to
// S × S, bilinear. The box is drawn from (seed, epoch, global sample index), so a sample is cut
// the same way on whichever rank loads it.
import Foundation
import TensorCore

/// A box of the stored square: rows top ..< top + height, columns left ..< left + width.
public struct CropBox: Equatable, Sendable {
    public var top: Int, left: Int, height: Int, width: Int
    public init(top: Int, left: Int, height: Int, width: Int) { (self.top, self.left, self.height, self.width) = (top, left, height, width) }
}

extension ImageDataset {
    /// The centre `sampleShape` square of the stored one.
    func copyCentre(_ index: Int, into out: UnsafeMutablePointer<Float>) {
        let r = storedShape[1], s = sampleShape[1]
        copyRegion(index, CropBox(top: (r - s) / 2, left: (r - s) / 2, height: s, width: s), into: out)
    }

    /// Box `box` of sample `index`'s stored square, scaled to the sample's S × S (bilinear, pixel
    /// centres aligned), normalised. A box of S × S is copied exactly, pixel for pixel.
    public func copyRegion(_ index: Int, _ box: CropBox, into out: UnsafeMutablePointer<Float>) {
        switch storage {
        case let .bytes(b, scale, shift):
            let c = storedShape[0], r = storedShape[1]
            cut(b.baseAddress! + index * c * r * r, box, scale: scale, shift: shift, into: out)
        case let .streamed(f, scale, shift):
            f.withSample(index) { cut($0.assumingMemoryBound(to: UInt8.self), box, scale: scale, shift: shift, into: out) }
        case .floats, .streamedFloats:
            preconditionFailure("crops are cut from byte images")
        }
    }

    /// `copyRegion` on one sample's stored (C, R, R) bytes at `src`.
    private func cut(_ src: UnsafePointer<UInt8>, _ box: CropBox, scale: Float, shift: Float, into out: UnsafeMutablePointer<Float>) {
        let c = storedShape[0], r = storedShape[1], s = sampleShape[1]
        let rows = BilinearTap.taps(count: s, from: 0, scale: Double(box.height) / Double(s), limit: box.height)
        let columns = BilinearTap.taps(count: s, from: 0, scale: Double(box.width) / Double(s), limit: box.width)
        for ch in 0..<c {
            let plane = src + ch * r * r + box.top * r + box.left
            for (y, row) in rows.enumerated() {
                for (x, column) in columns.enumerated() {
                    func p(_ yy: Int, _ xx: Int) -> Float { Float(plane[yy * r + xx]) }
                    let v = BilinearTap.blend(p(row.i0, column.i0), p(row.i0, column.i1), p(row.i1, column.i0), p(row.i1, column.i1), row, column)
                    out[(ch * s + y) * s + x] = v * scale + shift
                }
            }
        }
    }
}

extension Augmentation {
    /// torchvision's RandomResizedCrop.get_params on an R × R square: up to 10 tries of an area
    /// uniform in `scale` (fractions of R²) and an aspect ratio log-uniform in `ratio`; the whole
    /// square when none fits.
    public static func resizedCropBox(side r: Int, scale: ClosedRange<Double>, ratio: ClosedRange<Double>,
                                      stream: PhiloxStream) -> CropBox {
        let area = Double(r * r)
        for attempt in 0..<10 {
            let k = 4 * attempt
            let target = area * (scale.lowerBound + Double(stream.uniform(k)) * (scale.upperBound - scale.lowerBound))
            let logRatio = log(ratio.lowerBound) + Double(stream.uniform(k + 1)) * (log(ratio.upperBound) - log(ratio.lowerBound))
            let aspect = exp(logRatio)
            let w = Int((target * aspect).squareRoot().rounded()), h = Int((target / aspect).squareRoot().rounded())
            if w > 0 && w <= r && h > 0 && h <= r {
                return CropBox(top: stream.below(r - h + 1, k + 2), left: stream.below(r - w + 1, k + 3), height: h, width: w)
            }
        }
        return CropBox(top: 0, left: 0, height: r, width: r)
    }
}
