// The preprocessing between a raw input and the model (none, one pixel mean/std, per-feature
// mean/std), and its form in checkpoint metadata: what training applied and a deployed model
// must repeat.
import Foundation

/// The preprocessing between a raw input and the model: what a deployed model must repeat.
public enum InputNormalization: Sendable, Equatable {
    /// Inputs are used as given.
    case none
    /// Bytes b become (b/255 − mean)/std (IDX and CIFAR-10 images; one mean/std for all channels).
    case pixels(mean: Float, std: Float)
    /// Feature j becomes (x_j − mean_j)/std_j (CSV columns).
    case features(mean: [Double], std: [Double])

    /// Checkpoint metadata: `normalization` (none, pixels or features) with `normalize_mean` and
    /// `normalize_std` (numbers, or JSON arrays per feature).
    public var metadata: [String: String] {
        func json(_ v: [Double]) -> String { "[" + v.map { "\($0)" }.joined(separator: ",") + "]" }
        switch self {
        case .none: return ["normalization": "none"]
        case let .pixels(mean, std): return ["normalization": "pixels", "normalize_mean": "\(mean)", "normalize_std": "\(std)"]
        case let .features(mean, std): return ["normalization": "features", "normalize_mean": json(mean), "normalize_std": json(std)]
        }
    }

    /// Reads `metadata` back; nil for a checkpoint written before it was stored.
    public init?(metadata m: [String: String]) {
        switch m["normalization"] {
        case "none": self = .none
        case "pixels":
            guard let mean = m["normalize_mean"].flatMap(Float.init), let std = m["normalize_std"].flatMap(Float.init) else { return nil }
            self = .pixels(mean: mean, std: std)
        case "features":
            func array(_ key: String) -> [Double]? {
                guard let data = m[key]?.data(using: .utf8), let a = try? JSONSerialization.jsonObject(with: data) as? [NSNumber] else { return nil }
                return a.map { $0.doubleValue }
            }
            guard let mean = array("normalize_mean"), let std = array("normalize_std"), mean.count == std.count else { return nil }
            self = .features(mean: mean, std: std)
        default: return nil
        }
    }
}
