// Tabular data from CSV files: numeric feature columns and a label column (an integer class, by
// name or index) or one-hot label columns. Features are standardised with the training split's
// per-column mean and standard deviation, so no test statistic leaks into training.
import Foundation

public struct CSVFormat: Sendable, Equatable {
    public enum Labels: Sendable, Equatable {
        /// One column of integer classes, by header name or 0-based index.
        case column(String)
        /// One-hot columns (by name or index), one per class: exactly one 1 per row.
        case oneHot([String])
    }
    public var labels: Labels = .column("label")
    public var header = true
    public var delimiter: Character = ","
    public init() {}
}

public struct CSVTable: Sendable {
    public var featureNames: [String]
    public var features: [[Double]]   // one row per sample
    public var labels: [Int32]
}

public enum CSVReader {
    /// Parses a file; errors name the file, the line and the column.
    public static func read(path: String, format: CSVFormat, classes: Int) throws -> CSVTable {
        try parse(try readPossiblyCompressed(path), path: path, format: format, classes: classes)
    }

    /// Parses a file's bytes; `path` names it in errors.
    public static func parse(_ bytes: [UInt8], path: String, format: CSVFormat, classes: Int) throws -> CSVTable {
        guard let text = String(bytes: bytes, encoding: .utf8) else { throw DataError("\(path): not UTF-8 text") }
        var lines = Self.lines(text)
        guard !lines.isEmpty else { throw DataError("\(path): empty CSV file") }
        func split(_ s: Substring) -> [String] { cells(s, format) }
        let width = split(lines[0].cells).count
        let names: [String]
        if format.header {
            names = split(lines.removeFirst().cells)
            guard !lines.isEmpty else { throw DataError("\(path): a header but no rows") }
        } else {
            names = (0..<width).map { "column\($0)" }
        }
        func column(_ key: String) throws -> Int {
            if let i = names.firstIndex(of: key) { return i }
            if let i = Int(key), i >= 0, i < width { return i }
            throw DataError("\(path): no label column '\(key)' (columns: \(names.joined(separator: ", ")))")
        }
        let labelColumns: [Int]
        switch format.labels {
        case .column(let key): labelColumns = [try column(key)]
        case .oneHot(let keys):
            guard keys.count == classes else {
                throw DataError("\(path): \(keys.count) one-hot label columns for \(classes) classes (data.classes)")
            }
            labelColumns = try keys.map(column)
        }
        let featureColumns = (0..<width).filter { !labelColumns.contains($0) }
        guard !featureColumns.isEmpty else { throw DataError("\(path): no feature columns besides the label") }
        var table = CSVTable(featureNames: featureColumns.map { names[$0] }, features: [], labels: [])
        table.features.reserveCapacity(lines.count)
        for line in lines {
            let cells = split(line.cells)
            guard cells.count == width else {
                throw DataError("\(path):\(line.number): \(cells.count) cells, expected \(width) (ragged row)")
            }
            var row = [Double]()
            row.reserveCapacity(featureColumns.count)
            for c in featureColumns {
                guard let v = Double(cells[c]), v.isFinite else {
                    throw DataError("\(path):\(line.number): column '\(names[c])' holds '\(cells[c])', expected a finite number")
                }
                row.append(v)
            }
            table.features.append(row)
            table.labels.append(try label(cells, labelColumns, names: names, format: format, classes: classes, at: "\(path):\(line.number)"))
        }
        return table
    }

    /// The lines that hold something besides white space, with their 1-based numbers in the file.
    public static func lines(_ text: String) -> [(number: Int, cells: Substring)] {
        text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" })
            .enumerated().map { (number: $0.offset + 1, cells: $0.element) }
            .filter { !$0.cells.trimmingCharacters(in: .whitespaces).isEmpty }
    }

    /// A line's cells, trimmed of white space (empty cells kept).
    public static func cells(_ line: Substring, _ format: CSVFormat) -> [String] {
        line.split(separator: format.delimiter, omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
    }

    static func label(_ cells: [String], _ columns: [Int], names: [String], format: CSVFormat, classes: Int, at place: String) throws -> Int32 {
        if case .column = format.labels {
            let cell = cells[columns[0]]
            guard !cell.isEmpty else { throw DataError("\(place): missing label in column '\(names[columns[0]])'") }
            guard let v = Int(cell), v >= 0, v < classes else {
                throw DataError("\(place): label '\(cell)' in column '\(names[columns[0]])' is not a class in 0..<\(classes)")
            }
            return Int32(v)
        }
        var hot: Int?
        for (k, c) in columns.enumerated() {
            switch cells[c] {
            case "1", "1.0": guard hot == nil else { throw DataError("\(place): more than one 1 in the one-hot label columns") }; hot = k
            case "0", "0.0": break
            case "": throw DataError("\(place): missing label in column '\(names[c])'")
            default: throw DataError("\(place): one-hot label column '\(names[c])' holds '\(cells[c])', expected 0 or 1")
            }
        }
        guard let hot else { throw DataError("\(place): no 1 in the one-hot label columns") }
        return Int32(hot)
    }

    /// Per-column mean and standard deviation (population; 1 for a constant column).
    public static func statistics(_ rows: [[Double]]) -> (mean: [Double], std: [Double]) {
        let n = Double(rows.count), width = rows.first?.count ?? 0
        var mean = [Double](repeating: 0, count: width), variance = mean
        for row in rows { for j in 0..<width { mean[j] += row[j] / n } }
        for row in rows { for j in 0..<width { variance[j] += (row[j] - mean[j]) * (row[j] - mean[j]) / n } }
        return (mean, variance.map { $0 > 1e-24 ? $0.squareRoot() : 1 })
    }

    /// A dataset of standardised features, shape (F), with the given statistics.
    public static func dataset(_ table: CSVTable, name: String, classes: Int, mean: [Double], std: [Double]) -> ImageDataset {
        var values = [Float]()
        values.reserveCapacity(table.features.count * mean.count)
        for row in table.features { for j in 0..<row.count { values.append(Float((row[j] - mean[j]) / std[j])) } }
        return ImageDataset(name: name, sampleShape: [mean.count], classes: classes, pixels: values, labels: table.labels)
    }
}
