// A parsed YAML document as a small tree of our own (`ConfigValue`): composed by Yams into
// nodes, with guards against alias bombs, oversized input and complex keys, patched by
// `--set key.path=value` overrides, and rendered back to YAML. ConfigSection.swift reads it.
import Foundation
import Yams

public struct ConfigError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

public indirect enum ConfigValue: Equatable {
    case scalar(String, line: Int?)
    case map([(key: String, value: ConfigValue)], line: Int?)
    case list([ConfigValue], line: Int?)

    public static func == (a: ConfigValue, b: ConfigValue) -> Bool { a.yaml == b.yaml }

    /// A config is small: these bound what a hostile file (a "billion laughs" of nested
    /// aliases, a huge document) can make the reader build before any key is checked.
    static let maximumBytes = 1 << 20
    static let maximumNodes = 100_000

    /// Converts Yams's node tree, expanding aliases, within `budget` nodes.
    init(node: Node, budget: inout Int, file: String) throws {
        budget -= 1
        guard budget >= 0 else {
            throw ConfigError("\(file): the YAML expands to more than \(Self.maximumNodes) values (through anchors and aliases?); a Lockstep config is far smaller")
        }
        let line = node.mark.map { $0.line }
        switch node {
        case .scalar(let s):
            self = .scalar(s.string, line: line)
        case .mapping(let m):
            var pairs: [(key: String, value: ConfigValue)] = []
            for (k, v) in m { pairs.append((key: k.string ?? "\(k)", value: try ConfigValue(node: v, budget: &budget, file: file))) }
            self = .map(pairs, line: line)
        case .sequence(let s):
            self = .list(try s.map { try ConfigValue(node: $0, budget: &budget, file: file) }, line: line)
        case .alias:
            self = .scalar("", line: line)
        }
    }

    public static func parse(yaml: String, file: String) throws -> ConfigValue {
        guard yaml.utf8.count <= maximumBytes else {
            throw ConfigError("\(file): \(yaml.utf8.count) bytes, more than a config can be (\(maximumBytes) bytes)")
        }
        try rejectComplexKeys(yaml, file: file)
        do {
            guard let node = try Yams.compose(yaml: yaml) else { return .map([], line: 1) }
            var budget = maximumNodes
            return try ConfigValue(node: node, budget: &budget, file: file)
        } catch let error as YamlError {
            // Yams's message can quote a long stretch of input: keep the line short.
            let text = "\(error)".replacingOccurrences(of: "\n", with: " ")
            if let range = text.range(of: "duplicated key(s): ") {
                let keys = text[range.upperBound...].prefix { $0 != "." }
                throw ConfigError("\(file): a mapping repeats the key(s) \(keys); each key may appear once")
            }
            throw ConfigError("\(file): not valid YAML: \(text.count > 300 ? String(text.prefix(300)) + "…" : text)")
        }
    }

    /// Config keys are plain words. YAML also allows lists, mappings and aliases as keys, and
    /// Yams compares such keys recursively when a mapping repeats one, which takes exponential
    /// time in their depth (found by fuzz/run: a 1.3 kB file took minutes). A scan of the text,
    /// outside quotes and comments, refuses them (and flow nesting beyond 64) before composing.
    static func rejectComplexKeys(_ yaml: String, file: String) throws {
        var depth = 0
        for (number, line) in yaml.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            func fail(_ what: String) -> ConfigError { ConfigError("\(file):\(number + 1): \(what); a config's keys are plain names") }
            var quote: Character? = nil
            var previous: Character = " "
            var afterClose = false, afterAlias = false
            for c in line {
                if let q = quote {
                    if c == q { quote = nil }
                    previous = c
                    continue
                }
                switch c {
                case "\"", "'": quote = c
                case "#" where previous == " " || previous == "\t": break
                case "[", "{":
                    depth += 1
                    if depth > 64 { throw fail("lists or mappings nested more than 64 deep") }
                case "]", "}":
                    depth = max(depth - 1, 0)
                    afterClose = true
                    afterAlias = false
                    previous = c
                    continue
                case "*" where " \t-[{,:?".contains(previous):
                    afterAlias = true
                case ":" where afterClose:
                    throw fail("a list or mapping used as a key")
                case ":" where afterAlias:
                    throw fail("an alias used as a key")
                case "?" where " \t-[{,".contains(previous):
                    throw fail("an explicit '?' key")
                default:
                    break
                }
                if c == "#" && (previous == " " || previous == "\t") { break }
                if c != " " && c != "\t" { afterClose = false }
                // An alias ends at a flow indicator; spaces may still come between it and a ':'.
                if ",]}".contains(c) || (afterAlias && c != "*" && (previous == " " || previous == "\t") && c != " " && c != "\t" && c != ":") {
                    afterAlias = false
                }
                previous = c
            }
        }
    }

    var line: Int? {
        switch self {
        case .scalar(_, let l), .map(_, let l), .list(_, let l): return l
        }
    }

    var typeName: String {
        switch self {
        case .scalar: return "a value"
        case .map: return "a mapping"
        case .list: return "a list"
        }
    }

    /// Sets the value at a dotted path, creating mappings on the way.
    public mutating func set(path: [String], to value: ConfigValue) throws {
        guard let head = path.first else { self = value; return }
        guard case .map(var pairs, let line) = self else {
            throw ConfigError("cannot set '\(path.joined(separator: "."))': its parent is \(typeName), not a mapping")
        }
        if let i = pairs.firstIndex(where: { $0.key == head }) {
            try pairs[i].value.set(path: Array(path.dropFirst()), to: value)
        } else {
            var child = ConfigValue.map([], line: nil)
            try child.set(path: Array(path.dropFirst()), to: value)
            pairs.append((key: head, value: child))
        }
        self = .map(pairs, line: line)
    }

    /// The value written back as YAML (used for the resolved config and fingerprints).
    public var yaml: String { render(indent: 0).joined(separator: "\n") + "\n" }

    func render(indent: Int) -> [String] {
        let pad = String(repeating: " ", count: indent)
        switch self {
        case .scalar(let s, _): return [pad + Self.quote(s)]
        case .map(let pairs, _):
            if pairs.isEmpty { return [pad + "{}"] }
            return pairs.flatMap { pair -> [String] in
                switch pair.value {
                case .scalar(let s, _): return ["\(pad)\(pair.key): \(Self.quote(s))"]
                default: return ["\(pad)\(pair.key):"] + pair.value.render(indent: indent + 2)
                }
            }
        case .list(let items, _):
            if items.isEmpty { return [pad + "[]"] }
            return items.flatMap { item -> [String] in
                var lines = item.render(indent: indent + 2)
                lines[0] = pad + "- " + lines[0].dropFirst(indent + 2)
                return lines
            }
        }
    }

    static func quote(_ s: String) -> String {
        if s.isEmpty { return "''" }
        let special = CharacterSet(charactersIn: ":#{}[],&*?|-<>=!%@`'\"\n")
        if s.unicodeScalars.contains(where: { special.contains($0) }) || s.hasPrefix(" ") || s.hasSuffix(" ") {
            return "'" + s.replacingOccurrences(of: "'", with: "''") + "'"
        }
        return s
    }
}
