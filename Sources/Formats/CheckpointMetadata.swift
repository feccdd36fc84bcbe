// Checkpoint metadata that readers outside training share: the keys a deployed model reads
// (temperature) and their checks. The trainer writes the rest (Training/Checkpoint.swift).
import Foundation

public enum CheckpointMetadata {
    /// The key a checkpoint stores its fitted softmax temperature under (`lockstep calibrate`).
    public static let temperatureKey = "temperature"

    /// Reads a stored temperature (absent: 1); a value that is not a finite number > 0 is an
    /// error naming the file and the key.
    public static func temperature(_ metadata: [String: String], path: String) throws -> Float {
        guard let text = metadata[temperatureKey] else { return 1 }
        guard let t = Float(text), t.isFinite, t > 0 else {
            throw SafeTensorsError("\(path): metadata '\(temperatureKey)' is '\(text)', expected a finite number > 0")
        }
        return t
    }
}
