// Decoding image files: PNG through libpng's simplified API, JPEG through TurboJPEG, into grey or
// RGB bytes (interleaved, row by row), with the declared size checked before any pixel memory is
// allocated; and the deterministic resize and center crop that image folders use.
import CPNG
import CTurboJPEG
import Foundation

public struct DecodedImage {
    public let width: Int, height: Int, channels: Int
    /// Interleaved: pixel (y, x) channel c at (y·width + x)·channels + c.
    public let pixels: [UInt8]
    public init(width: Int, height: Int, channels: Int, pixels: [UInt8]) {
        precondition(pixels.count == width * height * channels, "DecodedImage: \(pixels.count) bytes for \(width)×\(height)×\(channels)")
        (self.width, self.height, self.channels, self.pixels) = (width, height, channels, pixels)
    }
}

public enum ImageDecoding {
    /// The most pixels an image may declare (2²⁸ ≈ 268 M, a 16k × 16k image).
    public static let maximumPixels = 1 << 28
    public static let extensions: Set<String> = ["png", "jpg", "jpeg"]

    /// Decodes `path` (by its extension: .png, .jpg, .jpeg) into `channels` (1: grey, 3: RGB).
    public static func decode(_ path: String, channels: Int) throws -> DecodedImage {
        switch (path as NSString).pathExtension.lowercased() {
        case "png": return try png(path, channels: channels)
        case "jpg", "jpeg": return try jpeg(path, channels: channels)
        case let other: throw DataError("\(path): unknown image extension '.\(other)' (expected .png, .jpg or .jpeg)")
        }
    }

    static func checkSize(_ path: String, _ width: Int, _ height: Int) throws {
        guard width > 0, height > 0, width.multipliedReportingOverflow(by: height).partialValue <= maximumPixels else {
            throw DataError("\(path): the image declares \(width)×\(height) pixels, more than the \(maximumPixels) allowed (corrupt?)")
        }
    }

    /// With `expected` (width, height), an image of another size is refused before decoding.
    public static func png(_ path: String, channels: Int, expected: (width: Int, height: Int)? = nil) throws -> DecodedImage {
        var image = png_image()
        lockstep_png_image_init(&image)
        defer { png_image_free(&image) }
        guard png_image_begin_read_from_file(&image, path) != 0 else {
            throw DataError("\(path): not a readable PNG (\(pngMessage(&image)))")
        }
        if let expected, Int(image.height) != expected.height || Int(image.width) != expected.width {
            throw DataError("\(path): the image is \(image.width)×\(image.height), the model expects \(expected.width)×\(expected.height)")
        }
        try checkSize(path, Int(image.width), Int(image.height))
        image.format = channels == 1 ? UInt32(PNG_FORMAT_GRAY) : UInt32(PNG_FORMAT_RGB)
        var pixels = [UInt8](repeating: 0, count: lockstep_png_image_size(&image))
        guard png_image_finish_read(&image, nil, &pixels, 0, nil) != 0 else {
            throw DataError("\(path): corrupt PNG, damaged or truncated (\(pngMessage(&image)))")
        }
        return DecodedImage(width: Int(image.width), height: Int(image.height), channels: channels, pixels: pixels)
    }

    static func pngMessage(_ image: inout png_image) -> String {
        withUnsafeBytes(of: &image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    }

    public static func jpeg(_ path: String, channels: Int) throws -> DecodedImage {
        guard let data = FileManager.default.contents(atPath: path) else { throw DataError("\(path): cannot read the file") }
        guard let handle = tjInitDecompress() else { throw DataError("\(path): cannot start the JPEG decoder") }
        defer { tjDestroy(handle) }
        let bytes = [UInt8](data)
        var width: Int32 = 0, height: Int32 = 0, subsampling: Int32 = 0, colorspace: Int32 = 0
        guard bytes.count >= 2, bytes[0] == 0xFF, bytes[1] == 0xD8,
              tjDecompressHeader3(handle, bytes, UInt(bytes.count), &width, &height, &subsampling, &colorspace) == 0 else {
            throw DataError("\(path): not a readable JPEG (\(String(cString: tjGetErrorStr2(handle))))")
        }
        try checkSize(path, Int(width), Int(height))
        var pixels = [UInt8](repeating: 0, count: Int(width) * Int(height) * channels)
        let format = channels == 1 ? TJPF_GRAY : TJPF_RGB
        // A truncated file decodes with a warning (grey rows at the end): refuse it like an error.
        let status = tjDecompress2(handle, bytes, UInt(bytes.count), &pixels, width, 0, height, Int32(format.rawValue), 0)
        guard status == 0 else {
            throw DataError("\(path): corrupt JPEG, damaged or truncated (\(String(cString: tjGetErrorStr2(handle))))")
        }
        return DecodedImage(width: Int(width), height: Int(height), channels: channels, pixels: pixels)
    }

    /// Scales the shorter side to `resize` (bilinear, pixel centres aligned as in PIL and
    /// torchvision without antialiasing) and takes the centred `size` × `size` square, as planes
    /// (C, size, size). Plain float arithmetic in one fixed order: the same bytes everywhere.
    public static func resizeAndCenterCrop(_ image: DecodedImage, resize: Int, size: Int) -> [UInt8] {
        let (w, h, c) = (image.width, image.height, image.channels)
        let scale = Double(resize) / Double(min(w, h))
        let outW = max(size, Int((Double(w) * scale).rounded())), outH = max(size, Int((Double(h) * scale).rounded()))
        let left = (outW - size) / 2, top = (outH - size) / 2
        var out = [UInt8](repeating: 0, count: c * size * size)
        let rows = BilinearTap.taps(count: size, from: top, scale: Double(h) / Double(outH), limit: h)
        let columns = BilinearTap.taps(count: size, from: left, scale: Double(w) / Double(outW), limit: w)
        for (y, r) in rows.enumerated() {
            for (x, col) in columns.enumerated() {
                for ch in 0..<c {
                    func p(_ yy: Int, _ xx: Int) -> Float { Float(image.pixels[(yy * w + xx) * c + ch]) }
                    let v = BilinearTap.blend(p(r.i0, col.i0), p(r.i0, col.i1), p(r.i1, col.i0), p(r.i1, col.i1), r, col)
                    out[(ch * size + y) * size + x] = UInt8(max(0, min(255, v.rounded())))
                }
            }
        }
        return out
    }
}

/// Where output position i of a bilinear resize reads along one axis: source positions i0 and
/// i1 (clamped to the image) and the weight of i1. Pixel centres are aligned (PIL, torchvision
/// without antialiasing): output i of a window starting at `from` reads (i + from + ½)·scale − ½.
/// The resize and centre crop of decoding and the crops of training both read through this.
struct BilinearTap {
    let i0: Int, i1: Int, weight: Float

    static func taps(count: Int, from start: Int, scale: Double, limit: Int) -> [BilinearTap] {
        (0..<count).map { i in
            let f = max(0, min(Double(limit - 1), (Double(i + start) + 0.5) * scale - 0.5))
            let i0 = Int(f)
            return BilinearTap(i0: i0, i1: min(i0 + 1, limit - 1), weight: Float(f - Double(i0)))
        }
    }

    /// The four neighbours (row i0/i1 × column i0/i1) blended: along the row, then down.
    @inline(__always)
    static func blend(_ a00: Float, _ a01: Float, _ a10: Float, _ a11: Float, _ row: BilinearTap, _ column: BilinearTap) -> Float {
        let upper = a00 + (a01 - a00) * column.weight
        let lower = a10 + (a11 - a10) * column.weight
        return upper + (lower - upper) * row.weight
    }
}
