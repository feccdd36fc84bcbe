// Reading a config strictly, section by section: every read marks its key as used, and
// `finish()` rejects any key that nothing read, naming it with its dotted path, the file and
// the line, and listing the keys that are allowed there. Typed getters name the key and what
// was expected when a value has the wrong type or range.
import Foundation

/// Reads one mapping of a config strictly.
public final class ConfigSection {
    let file: String
    let path: String
    let pairs: [(key: String, value: ConfigValue)]
    let line: Int?
    private var used = Set<String>()

    init(file: String, path: String, value: ConfigValue?) throws {
        self.file = file
        self.path = path
        switch value {
        case nil: pairs = []; line = nil
        case .map(let p, let l)?: pairs = p; line = l
        case .scalar(let s, let l)? where s.isEmpty || s == "null" || s == "~": pairs = []; line = l
        case let other?:
            throw ConfigError("\(Self.location(file, other.line)): \(path.isEmpty ? "the document" : "'\(path)'") must be a mapping, got \(other.typeName)")
        }
    }

    static func location(_ file: String, _ line: Int?) -> String { line.map { "\(file):\($0)" } ?? file }

    func keyPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func raw(_ key: String) -> ConfigValue? {
        used.insert(key)
        return pairs.last(where: { $0.key == key })?.value
    }

    func fail(_ key: String, _ value: ConfigValue?, _ expected: String) -> ConfigError {
        var got = ""
        if case .scalar(let s, _)? = value { got = ", got '\(s)'" } else if let value { got = ", got \(value.typeName)" }
        return ConfigError("\(Self.location(file, value?.line ?? line)): '\(keyPath(key))': expected \(expected)\(got)")
    }

    func scalar(_ key: String) throws -> String? {
        guard let v = raw(key) else { return nil }
        guard case .scalar(let s, _) = v else { throw fail(key, v, "a single value") }
        return s
    }

    public func int(_ key: String, default d: Int, min lower: Int? = nil) throws -> Int {
        guard let s = try scalar(key) else { return d }
        guard let v = Int(s.replacingOccurrences(of: "_", with: "")) else { throw fail(key, raw(key), "an integer") }
        if let lower, v < lower { throw fail(key, raw(key), "an integer >= \(lower)") }
        return v
    }

    public func double(_ key: String, default d: Double, range: ClosedRange<Double>? = nil) throws -> Double {
        guard let s = try scalar(key) else { return d }
        guard let v = Double(s), v.isFinite else { throw fail(key, raw(key), "a number") }
        if let range, !range.contains(v) { throw fail(key, raw(key), "a number in \(range.lowerBound)...\(range.upperBound)") }
        return v
    }

    public func optionalDouble(_ key: String) throws -> Double? {
        guard try scalar(key) != nil else { return nil }
        return try double(key, default: 0)
    }

    public func bool(_ key: String, default d: Bool) throws -> Bool {
        guard let s = try scalar(key) else { return d }
        switch s.lowercased() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        default: throw fail(key, raw(key), "true or false")
        }
    }

    public func string(_ key: String, default d: String) throws -> String {
        try scalar(key) ?? d
    }

    public func choice<E: RawRepresentable & CaseIterable>(_ key: String, default d: E) throws -> E where E.RawValue == String {
        try choice(key, default: d, among: Array(E.allCases))
    }

    /// A value that must be one of `allowed` (a subset of the type's cases).
    public func choice<E: RawRepresentable>(_ key: String, default d: E, among allowed: [E]) throws -> E where E.RawValue == String {
        guard let s = try scalar(key) else { return d }
        guard let v = allowed.first(where: { $0.rawValue == s }) else {
            throw fail(key, raw(key), "one of " + allowed.map { $0.rawValue }.joined(separator: ", "))
        }
        return v
    }

    public func section(_ key: String) throws -> ConfigSection {
        try ConfigSection(file: file, path: keyPath(key), value: raw(key))
    }

    public func list(_ key: String) throws -> [ConfigValue]? {
        guard let v = raw(key) else { return nil }
        guard case .list(let items, _) = v else { throw fail(key, v, "a list") }
        return items
    }

    /// A list of single values (names); anything else in it, or an empty name when `allowEmpty`
    /// is false, is an error saying `expected`.
    public func strings(_ key: String, expected: String, allowEmpty: Bool = true) throws -> [String]? {
        try list(key)?.map { v in
            guard case .scalar(let s, _) = v, allowEmpty || !s.isEmpty else { throw fail(key, v, expected) }
            return s
        }
    }

    /// A list of numbers, each in `range`; `d` when the key is absent.
    public func doubles(_ key: String, default d: [Double], range: ClosedRange<Double>) throws -> [Double] {
        guard let names = try strings(key, expected: "a list of numbers") else { return d }
        return try names.map { s in
            guard let v = Double(s), v.isFinite, range.contains(v) else {
                throw fail(key, raw(key), "a list of numbers in \(range.lowerBound)...\(range.upperBound)")
            }
            return v
        }
    }

    /// Rejects keys that no read asked for.
    public func finish() throws {
        for pair in pairs where !used.contains(pair.key) {
            let allowed = used.sorted().joined(separator: ", ")
            throw ConfigError("\(Self.location(file, pair.value.line)): unknown key '\(keyPath(pair.key))' (allowed here: \(allowed))")
        }
    }
}
