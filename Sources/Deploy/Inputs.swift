// Reading what `lockstep predict` classifies: PNG and JPEG (libpng, TurboJPEG), binary PGM, IDX
// image files and CSV rows, each checked against the model's input shape, with one-line errors
// naming the file. An image of another size is scaled and centre-cropped as evaluation images
// were. Pixels come out as bytes; CSV rows as raw features.
import Datasets
import Foundation

public struct PredictInput {
    public enum Values { case bytes([UInt8]), features([Double]) }
    public var name: String
    public var values: Values
}

public enum InputReader {
    /// Every input in `path` (one for an image, several for an IDX file or a CSV file), shaped
    /// for a model whose per-sample input shape is `shape`. A PNG or JPEG of another size than
    /// the model's gets its shorter side scaled to `resize` and its centre square cut, as image
    /// folders give evaluation samples (nil: only the model's own size is accepted).
    public static func read(_ path: String, shape: [Int], csv: CSVFormat, resize: Int? = nil) throws -> [PredictInput] {
        let lower = path.lowercased()
        if lower.hasSuffix(".png") || lower.hasSuffix(".jpg") || lower.hasSuffix(".jpeg") {
            return [PredictInput(name: path, values: .bytes(try image(path, shape: shape, resize: resize)))]
        }
        if lower.hasSuffix(".pgm") { return [PredictInput(name: path, values: .bytes(try pgm(path, shape: shape)))] }
        if lower.hasSuffix(".csv") { return try csvRows(path, shape: shape, format: csv) }
        if lower.contains("idx3-ubyte") { return try idx(path, shape: shape) }
        throw DataError("\(path): unknown input type (expected .png, .jpg, .pgm, .csv or an IDX '*-idx3-ubyte[.gz]' file)")
    }

    static func imageShape(_ path: String, _ shape: [Int]) throws -> (c: Int, h: Int, w: Int) {
        guard shape.count == 3, shape[0] == 1 || shape[0] == 3 else {
            throw DataError("\(path): an image, but the model's input is \(shape), not 1 or 3 channels of pixels (give CSV rows)")
        }
        return (shape[0], shape[1], shape[2])
    }

    /// A PNG or JPEG as the model's planes (C, H, W), grey or RGB as the model expects: as it is
    /// when it has the model's size, else scaled (shorter side to `resize`) and centre-cropped.
    public static func image(_ path: String, shape: [Int], resize: Int?) throws -> [UInt8] {
        let (c, h, w) = try imageShape(path, shape)
        let image = try ImageDecoding.decode(path, channels: c)
        guard image.width == w, image.height == h else {
            guard let resize, h == w, resize >= w else {
                throw DataError("\(path): the image is \(image.width)×\(image.height), the model expects \(w)×\(h)")
            }
            return ImageDecoding.resizeAndCenterCrop(image, resize: resize, size: w)
        }
        // The decoders give RGBRGB...; the model wants planes (C, H, W).
        guard c == 3 else { return image.pixels }
        var planes = [UInt8](repeating: 0, count: 3 * h * w)
        for p in 0..<(h * w) { for ch in 0..<3 { planes[ch * h * w + p] = image.pixels[3 * p + ch] } }
        return planes
    }

    public static func pgm(_ path: String, shape: [Int]) throws -> [UInt8] {
        let (c, h, w) = try imageShape(path, shape)
        guard c == 1 else { throw DataError("\(path): a PGM is grey, the model expects \(c) channels") }
        let image = try parsePGM(try readPossiblyCompressed(path), path: path)
        guard image.width == w, image.height == h else {
            throw DataError("\(path): the image is \(image.width)×\(image.height), the model expects \(w)×\(h)")
        }
        return image.pixels
    }

    /// Every image of an IDX file (rank 3, bytes) of the model's size.
    public static func idx(_ path: String, shape: [Int]) throws -> [PredictInput] {
        let (c, h, w) = try imageShape(path, shape)
        guard c == 1 else { throw DataError("\(path): IDX images are grey, the model expects \(c) channels") }
        let a = try readIDX(path, expectedRank: 3)
        guard a.dimensions[1] == h, a.dimensions[2] == w else {
            throw DataError("\(path): images are \(a.dimensions[2])×\(a.dimensions[1]), the model expects \(w)×\(h)")
        }
        return (0..<a.dimensions[0]).map { PredictInput(name: "\(path)[\($0)]", values: .bytes(Array(a.bytes[($0 * h * w)..<(($0 + 1) * h * w)]))) }
    }

    /// CSV rows: with a header, the label column(s) are dropped when present; every row must
    /// then hold exactly the model's number of features.
    public static func csvRows(_ path: String, shape: [Int], format: CSVFormat) throws -> [PredictInput] {
        guard shape.count == 1 else { throw DataError("\(path): CSV rows, but the model's input is \(shape), not a vector of features") }
        let text = String(decoding: try readPossiblyCompressed(path), as: UTF8.self)
        var lines = CSVReader.lines(text)
        var drop = Set<Int>()
        if format.header, let first = lines.first {
            let names = CSVReader.cells(first.cells, format)
            let labels: [String]
            switch format.labels { case .column(let k): labels = [k]; case .oneHot(let ks): labels = ks }
            drop = Set(names.indices.filter { labels.contains(names[$0]) })
            lines.removeFirst()
        }
        return try lines.map { number, line in
            let cells = CSVReader.cells(line, format).enumerated().filter { !drop.contains($0.offset) }.map { $0.element }
            guard cells.count == shape[0] else {
                throw DataError("\(path):\(number): \(cells.count) features, the model expects \(shape[0])")
            }
            let values = try cells.map { cell -> Double in
                guard let v = Double(cell), v.isFinite else { throw DataError("\(path):\(number): '\(cell)' is not a finite number") }
                return v
            }
            return PredictInput(name: "\(path):\(number)", values: .features(values))
        }
    }
}
