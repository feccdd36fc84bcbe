// One history after a resume: before a resumed run writes, metrics.jsonl and the TensorBoard event
// files are cut back to the checkpoint's step (records with a larger step, which the resumed run
// will write again, are removed; truncated last records of a killed run are dropped), each file
// rewritten atomically. Also the readers this needs: TFRecord framing and a protobuf field scan.
import Formats
import Foundation

/// The records of a TFRecord file (8-byte length, masked CRC-32C of the length, data, masked
/// CRC-32C of the data). A truncated last record (a writer killed midway) ends the list.
enum TFRecordReader {
    struct Result {
        /// Each record's data, and the bytes its frame spans in the file.
        var records: [(data: ArraySlice<UInt8>, frame: Range<Int>)] = []
        /// Why the file's end was not the end of a record, if it was not.
        var damage: String?
    }

    static func read(_ bytes: [UInt8]) -> Result {
        var result = Result()
        var at = 0
        func le<T: FixedWidthInteger>(_ type: T.Type, _ offset: Int) -> T {
            var v: T = 0
            for i in 0..<MemoryLayout<T>.size { v |= T(bytes[offset + i]) << (8 * i) }
            return v
        }
        while at < bytes.count {
            guard bytes.count - at >= 12 else { result.damage = "a truncated last record at byte \(at)"; break }
            guard le(UInt32.self, at + 8) == CRC32C.masked(Array(bytes[at..<at + 8])) else {
                result.damage = "a record length with a bad checksum at byte \(at)"; break
            }
            let length = le(UInt64.self, at)
            guard length <= UInt64(bytes.count - at - 16) else { result.damage = "a truncated last record at byte \(at)"; break }
            let data = bytes[(at + 12)..<(at + 12 + Int(length))]
            guard le(UInt32.self, data.endIndex) == CRC32C.masked(Array(data)) else {
                result.damage = "a record with a bad checksum at byte \(at)"; break
            }
            result.records.append((data, at..<(data.endIndex + 4)))
            at = data.endIndex + 4
        }
        return result
    }
}

/// The top-level fields of a protocol buffer message, without a schema.
enum ProtoScan {
    enum Value { case varint(UInt64), bytes(ArraySlice<UInt8>), fixed }

    /// (field number, value) in order, or nil if the bytes are not a well-formed message.
    static func fields(_ b: ArraySlice<UInt8>) -> [(Int, Value)]? {
        var out: [(Int, Value)] = []
        var i = b.startIndex
        func varint() -> UInt64? {
            var v: UInt64 = 0
            var shift: UInt64 = 0
            while i < b.endIndex && shift < 64 {
                let byte = b[i]; i += 1
                v |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return v }
                shift += 7
            }
            return nil
        }
        while i < b.endIndex {
            guard let key = varint() else { return nil }
            let field = Int(key >> 3)
            switch key & 7 {
            case 0: guard let v = varint() else { return nil }; out.append((field, .varint(v)))
            case 1: guard b.endIndex - i >= 8 else { return nil }; i += 8; out.append((field, .fixed))
            case 5: guard b.endIndex - i >= 4 else { return nil }; i += 4; out.append((field, .fixed))
            case 2:
                guard let n = varint(), n <= UInt64(b.endIndex - i) else { return nil }
                out.append((field, .bytes(b[i..<(i + Int(n))]))); i += Int(n)
            default: return nil   // groups (wire types 3, 4) are not used by Event
            }
        }
        return out
    }

    /// An Event's step (field 2), or nil when it has none (the file_version header).
    static func eventStep(_ event: ArraySlice<UInt8>) -> Int64? {
        for case let (2, .varint(v)) in fields(event) ?? [] { return Int64(bitPattern: v) }
        return nil
    }

    /// The scalar tags of an Event's summary (Event.summary = 5, Summary.value = 1, Value.tag = 1).
    static func eventTags(_ event: ArraySlice<UInt8>) -> [String] {
        var tags: [String] = []
        for case let (5, .bytes(summary)) in fields(event) ?? [] {
            for case let (1, .bytes(value)) in fields(summary) ?? [] {
                for case let (1, .bytes(tag)) in fields(value) ?? [] { tags.append(String(decoding: tag, as: UTF8.self)) }
            }
        }
        return tags
    }
}

extension RunDirectory {
    /// The TensorBoard event files of the run in `path`, sorted (the order TensorBoard reads them).
    static func eventFiles(in path: String) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: path)) ?? [])
            .filter { $0.hasPrefix("events.out.tfevents.") }.sorted()
            .map { (path as NSString).appendingPathComponent($0) }
    }

    /// Cuts the logs of the run in `path` back to `resume.step` and appends `resume` to
    /// metrics.jsonl. Returns notes for the user (what was dropped from a damaged file).
    static func cutBack(_ path: String, to resume: ResumeRecord) throws -> [String] {
        var notes: [String] = []
        for file in eventFiles(in: path) {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw RunDirectoryError("\(file): cannot read the TensorBoard event file to cut it back to step \(resume.step)")
            }
            let bytes = [UInt8](data)
            let read = TFRecordReader.read(bytes)
            if let damage = read.damage { notes.append("\(file): dropped \(damage) (a writer killed midway)") }
            var kept: [UInt8] = []
            for r in read.records where (ProtoScan.eventStep(r.data) ?? Int64.min) <= Int64(resume.step) {
                kept += bytes[r.frame]
            }
            if kept != bytes { try writeAtomically(kept, to: file) }
        }
        let metricsPath = (path as NSString).appendingPathComponent("metrics.jsonl")
        let text = FileManager.default.contents(atPath: metricsPath).map { String(decoding: $0, as: UTF8.self) } ?? ""
        let (kept, note) = cutMetrics(text, toStep: resume.step)
        if let note { notes.append("\(metricsPath): \(note)") }
        try writeAtomically(Array((kept + String(decoding: MetricsCoding.line(resume), as: UTF8.self) + "\n").utf8), to: metricsPath)
        return notes
    }

    /// The lines of a metrics.jsonl text whose step is at most `step` (lines without a readable
    /// step are kept: only a record known to come later is removed), each ending in a newline;
    /// and a note if a truncated last line (no newline) was dropped.
    static func cutMetrics(_ text: String, toStep step: Int) -> (String, String?) {
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        var note: String?
        if let last = lines.last, !last.isEmpty {
            note = "dropped a truncated last line (\(last.prefix(40))...)"
        }
        lines.removeLast()   // "" after the final newline, or the truncated line
        struct Step: Decodable { var step: Int }
        var kept = ""
        for line in lines where !line.allSatisfy(\.isWhitespace) {
            if let s = try? JSONDecoder().decode(Step.self, from: Data(line.utf8)), s.step > step { continue }
            kept += line + "\n"
        }
        return (kept, note)
    }
}
